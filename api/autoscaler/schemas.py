"""What an autoscaler worker is asked and what it answers.

A reading is the pool's state now, in the simulator's units (``ml/sim/config.py``): tasks queued
per priority class, arrivals in tasks per second, workers active (serving) and warming (started,
not yet serving), and utilization of the active ones in [0, 1]. Numbers are finite and never
negative: anything else is a 422 naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

#: JSON numbers only: ``"11.5"`` is a 422, not quietly a number.
Count = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]
Workers = Annotated[StrictInt, Field(ge=0, le=1_000_000)]

#: Decision modes: the champion policy, the HPA rule, or no change (autoscaler_loop off).
MODE_POLICY, MODE_HPA, MODE_HOLD = "policy", "hpa", "hold"


class Reading(BaseModel):
    """The queue metrics one decision is made from."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "tenant": "org:acme", "queue": {"high": 12, "normal": 140, "low": 300},
        "arrival_rate": 11.5, "active_workers": 14, "warming_workers": 0, "utilization": 0.82}]})

    tenant: str | None = Field(None, max_length=80, description="whose pool; flags and the mode are "
                                                                  "read for this tenant [global]")
    queue: dict[str, Count] = Field(..., description="tasks queued per priority class, by class name "
                                                     "(the policy's classes, e.g. high, normal, low)")
    arrival_rate: Count = Field(..., description="arrivals over the last interval, tasks/s")
    arrival_rate_smoothed: Count | None = Field(
        None, description="a smoothed arrival rate, tasks/s [the arrival rate]")
    active_workers: Workers = Field(..., description="workers serving now")
    warming_workers: Workers = Field(0, description="workers started and not serving yet")
    utilization: StrictFloat = Field(..., ge=0, le=1, allow_inf_nan=False,
                               description="busy share of the active workers")
    est_wait_seconds: dict[str, Count] | None = Field(
        None, description="projected wait per class, s [the backlog ahead over the pool's service rate]")
    timestamp: datetime | None = Field(None, description="when it was read [now]; the policy sees the "
                                                         "time of day (UTC)")
    mode: Literal["policy", "hpa"] | None = Field(
        None, description="force a mode for this decision [the tenant's autoscaler.mode, else policy]")


class Forecast(BaseModel):
    """The predictor's load forecast made with a decision, from the tenant's recent readings
    (``api/autoscaler/forecast.py``), or why there is none: the decision never waits for one."""

    available: bool
    reason: str | None = Field(None, description="why there is no forecast (no predictor loaded, "
                                                 "too little history, ...); None when available")
    model_version: str | None = Field(None, description="the predictor version that forecast")
    target: str | None = Field(None, description="the load forecast, per step: arrivals or requests")
    interval_seconds: int | None = Field(None, description="the model's step")
    history_rows: int = Field(0, description="steps of this tenant's load the worker holds")
    at: str | None = Field(None, description="the step the forecast is made at (the latest reading's)")
    horizons: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="by steps ahead (1, 5, 15): the load's mean, p50 and p90")


class Decision(BaseModel):
    """A scaling decision and everything that made it."""

    tenant: str | None
    mode: Literal["policy", "hpa", "hold"]
    action: int = Field(description="the policy's action index (the delta's place in scale_deltas)")
    delta: int = Field(description="workers to add (negative: to remove)")
    current_workers: int = Field(description="active plus warming")
    target_workers: int
    policy_version: str | None = Field(description="the rl_agent registry version that decided "
                                                   "(None in hpa or hold mode without a policy)")
    predictor_version: str | None = Field(description="the predictor version loaded alongside")
    fallback: bool = Field(description="a rule answered because the policy could not: HPA with no "
                                       "policy loaded, or a residual policy's own base rule on a "
                                       "reading outside what it was trained on (the reason says which)")
    reason: str
    action_probability: float | None = None
    forecast: Forecast | None = Field(None, description="the load forecast made with this decision")
    worker: str = Field(description="the worker that answered")


class ModelState(BaseModel):
    name: str
    version: str | None
    loaded_at: float | None
    source: str | None = Field(description="where the version came from: registry or control_plane")


class Health(BaseModel):
    ok: bool
    worker: str
    status: Literal["ok", "degraded", "starting"]
    problems: list[str]
    control_plane: dict[str, Any]
    models: list[ModelState]
    swaps: int
    last_swap: dict[str, Any] | None
    last_load_error: dict[str, Any] | None
    challenger: dict[str, Any] | None = Field(
        None, description="the rl_agent challenger held in the shadow: version, when loaded, and over "
                          "its latest shadow decisions the agreement with the served targets and "
                          "both counterfactual costs")
    uptime_seconds: float
