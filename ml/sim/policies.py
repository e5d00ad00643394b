"""Baseline autoscaling policies, vectorized over envs.

A policy sees what the vector env returns - the observation batch and the info dict of arrays (raw
queue lengths, workers, utilization, arrival rates) - and returns one action index per env. Baselines
read ``info``; learned policies (PPO, later) read the observation. Every policy is a
:class:`Policy`: ``reset(num_envs)`` before an evaluation, ``act(obs, info)`` each step.

- :class:`HPAPolicy`: the Kubernetes Horizontal Pod Autoscaler rule on utilization.
- :class:`StaticPolicy`: a fixed pool size.
- :class:`QueueThresholdPolicy`: scale on the backlog's drain time.
- :class:`ErlangCPolicy`: size the pool with the Erlang-C formula from the smoothed arrival rate.
- :class:`PredictiveErlangCPolicy`: the same sizing for the load forecast (p90 or mean) one warm-up
  ahead (made by the load predictor from the past only, :mod:`ml.sim.forecasts`) when that is higher.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ml.sim.config import SimConfig

if TYPE_CHECKING:
    from ml.sim.forecasts import SeriesForecasts


@runtime_checkable
class Policy(Protocol):
    name: str

    def reset(self, num_envs: int) -> None: ...

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray: ...


class Stateless:
    """For policies that remember nothing between steps."""

    def reset(self, num_envs: int) -> None:
        pass


def _pool(info: dict[str, Any]) -> np.ndarray:
    """Workers paid for now: active plus warming."""
    return np.asarray(info["active_workers"], dtype=np.float64) + np.asarray(
        info["warming_workers"], dtype=np.float64
    )


def _toward(config: SimConfig, desired: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """The action that moves the pool toward ``desired`` workers, as far as one step allows."""
    desired = np.clip(desired, config.min_workers, config.max_workers)
    return config.action_for_delta(np.round(desired - _pool(info)))


@dataclass
class HPAPolicy:
    """Kubernetes HPA: desired = ceil(current x utilization / target), ±tolerance, stabilization.

    As in Kubernetes, utilization is measured over ready (active) workers, no change is made while
    the ratio is within ``tolerance`` of 1, and a scale-down only goes as low as the highest
    recommendation of the last ``stabilization_seconds`` (default 300 s, Kubernetes' default).
    """

    config: SimConfig
    target_utilization: float = 0.7
    tolerance: float = 0.1
    stabilization_seconds: float = 300.0
    name: str = "hpa"
    _history: np.ndarray = field(init=False, repr=False, default_factory=lambda: np.zeros((0, 0)))
    _cursor: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        if not 0 < self.target_utilization <= 1:
            raise ValueError("target_utilization must be in (0, 1]")

    def reset(self, num_envs: int) -> None:
        window = max(1, math.ceil(self.stabilization_seconds / self.config.step_seconds))
        self._history = np.full((window, num_envs), -np.inf)
        self._cursor = 0

    def recommend(self, info: dict[str, Any]) -> np.ndarray:
        active = np.asarray(info["active_workers"], dtype=np.float64)
        ratio = np.asarray(info["utilization"], dtype=np.float64) / self.target_utilization
        current = _pool(info)
        desired = np.where(np.abs(ratio - 1.0) <= self.tolerance, current, np.ceil(active * ratio))
        return np.clip(desired, self.config.min_workers, self.config.max_workers)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        if self._history.shape[1] != len(info["active_workers"]):
            self.reset(len(info["active_workers"]))
        desired = self.recommend(info)
        self._history[self._cursor % len(self._history)] = desired
        self._cursor += 1
        stabilized = self._history.max(axis=0)
        current = _pool(info)
        desired = np.where(desired < current, np.minimum(stabilized, current), desired)
        return _toward(self.config, desired, info)


@dataclass
class StaticPolicy(Stateless):
    """A fixed pool: ``workers`` (default: enough for the mean rate at 70% utilization)."""

    config: SimConfig
    workers: int | None = None
    name: str = "static"

    @property
    def size(self) -> int:
        if self.workers is not None:
            return self.workers
        cfg = self.config
        return math.ceil(cfg.mean_arrival_rate / (cfg.service_rate * 0.7))

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        return _toward(self.config, np.full(np.shape(_pool(info)), float(self.size)), info)


@dataclass
class QueueThresholdPolicy(Stateless):
    """Scale up while the backlog takes longer than ``scale_up_seconds`` to drain; scale down
    when there is no backlog and utilization is under ``scale_down_utilization``."""

    config: SimConfig
    scale_up_seconds: float = 10.0
    scale_down_utilization: float = 0.5
    name: str = "queue_threshold"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        active = np.asarray(info["active_workers"], dtype=np.float64)
        backlog = np.asarray(info["queue"], dtype=np.float64).sum(axis=1)
        drain_seconds = backlog / (active * self.config.service_rate)
        utilization = np.asarray(info["utilization"], dtype=np.float64)
        delta = np.where(drain_seconds > 4 * self.scale_up_seconds, 2,
                         np.where(drain_seconds > self.scale_up_seconds, 1, 0))
        delta = np.where((drain_seconds == 0) & (utilization < self.scale_down_utilization), -1, delta)
        return self.config.action_for_delta(delta)


@dataclass
class ErlangCPolicy(Stateless):
    """Erlang-C sizing: the smallest pool c with P(wait > ``wait_seconds``) <= ``max_wait_probability``
    for an M/M/c queue at the smoothed arrival rate (default target: the strictest class's SLA)."""

    config: SimConfig
    wait_seconds: float | None = None
    max_wait_probability: float = 0.05
    name: str = "erlang_c"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        return self.size_for(np.asarray(info["arrival_rate_smoothed"], dtype=np.float64), info)

    def size_for(self, rate: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The action toward the Erlang-C pool for arrival rate ``rate`` (tasks/s, per env)."""
        desired = erlang_c_servers(
            rate,
            self.config.service_rate,
            self.wait_seconds if self.wait_seconds is not None else min(self.config.sla_seconds),
            self.max_wait_probability,
            self.config.max_workers,
        )
        return _toward(self.config, np.maximum(desired, self.config.min_workers), info)


@dataclass
class PredictiveErlangCPolicy(ErlangCPolicy):
    """Erlang-C sizing for the higher of the smoothed arrival rate and the forecast (``forecast``:
    its p90, or its mean) of the rate one warm-up ahead (``forecasts``, looked up at each env's
    ``info["series_index"]``): the pool is sized now for the load its new workers will meet once
    warm, and shrinks only when both the current rate and the forecast allow it. Where a row has
    no forecast (too little history) it acts as :class:`ErlangCPolicy`.

    ``forecasts`` must belong to the traffic the policy runs on, and be made from the past only
    (:func:`ml.sim.forecasts.forecast_series` with a predictor trained on other data)."""

    forecasts: SeriesForecasts | None = None
    forecast: str = "p90"  # which forecast to plan for: "p90" or "mean"
    name: str = "predictive_erlang_c"

    def __post_init__(self) -> None:
        if self.forecasts is None:
            raise ValueError("predictive_erlang_c needs forecasts= (ml.sim.forecasts.forecast_series)")
        if self.forecast not in ("p90", "mean"):
            raise ValueError(f"forecast must be 'p90' or 'mean', got {self.forecast!r}")

    def planned_rate(self, info: dict[str, Any]) -> np.ndarray:
        """The rate the pool is sized for: max(smoothed rate, the forecast), per env."""
        rate = np.asarray(info["arrival_rate_smoothed"], dtype=np.float64)
        ahead = self.forecasts.at(np.asarray(info["series_index"], dtype=np.int64), self.forecast)
        return np.where(np.isnan(ahead), rate, np.maximum(rate, ahead))

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        return self.size_for(self.planned_rate(info), info)


def _erlang_c_by_servers(load: np.ndarray, max_servers: int):
    """Yield (c, C(c, load)) for c = 1..max_servers: the M/M/c probability of waiting, from the
    Erlang-B recurrence B(c) = A B(c-1) / (c + A B(c-1)); C is 1 where c <= load (unstable)."""
    blocking = np.ones_like(load)
    for c in range(1, max_servers + 1):
        blocking = load * blocking / (c + load * blocking)
        with np.errstate(divide="ignore", invalid="ignore"):
            waiting = c * blocking / (c - load * (1.0 - blocking))
        yield c, np.where(c > load, waiting, 1.0)


def erlang_c_wait_probability(
    servers: int, arrival_rate: np.ndarray, service_rate: float, wait_seconds: float
) -> np.ndarray:
    """P(wait > t) in an M/M/c queue: C(c, A) exp(-(c mu - lambda) t), and 1 when unstable."""
    rate = np.asarray(arrival_rate, dtype=np.float64)
    for c, waiting in _erlang_c_by_servers(rate / service_rate, servers):
        if c == servers:
            tail = waiting * np.exp(-np.maximum(c * service_rate - rate, 0.0) * wait_seconds)
            return np.minimum(tail, 1.0)
    raise ValueError("servers must be >= 1")


def erlang_c_servers(
    arrival_rate: np.ndarray,
    service_rate: float,
    wait_seconds: float,
    max_wait_probability: float,
    max_servers: int,
) -> np.ndarray:
    """Smallest c in 1..max_servers with P(wait > wait_seconds) <= target (max_servers if none)."""
    rate = np.asarray(arrival_rate, dtype=np.float64)
    servers = np.full(rate.shape, float(max_servers))
    found = np.zeros(rate.shape, dtype=bool)
    for c, waiting in _erlang_c_by_servers(rate / service_rate, max_servers):
        tail = waiting * np.exp(-np.maximum(c * service_rate - rate, 0.0) * wait_seconds)
        hit = ~found & (tail <= max_wait_probability)
        servers[hit] = c
        found |= hit
        if found.all():
            break
    return servers


BASELINES: dict[str, Callable[..., Policy]] = {
    "hpa": HPAPolicy,
    "static": StaticPolicy,
    "queue_threshold": QueueThresholdPolicy,
    "erlang_c": ErlangCPolicy,
}
#: Baselines that also need load forecasts of the traffic they run on (``forecasts=``), so they
#: cannot be made from a name alone: kept apart from :data:`BASELINES`.
FORECAST_BASELINES: dict[str, Callable[..., Policy]] = {
    "predictive_erlang_c": PredictiveErlangCPolicy,
}


def make_baseline(name: str, config: SimConfig, **params: Any) -> Policy:
    """A baseline policy by name (see :data:`BASELINES` and :data:`FORECAST_BASELINES`)."""
    factory = BASELINES.get(name) or FORECAST_BASELINES.get(name)
    if factory is None:
        known = sorted([*BASELINES, *FORECAST_BASELINES])
        raise ValueError(f"unknown policy {name!r}; choose one of {known}")
    return factory(config, **params)
