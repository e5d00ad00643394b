"""Typed resources of the training graph: the settings, MLflow, the config control plane, Ray, and
the training budget.

Why most fields are optional: the ML code the assets call reads its configuration from the one
settings object (DESIGN.md decision 1), exactly as the CLI does. A field left unset changes nothing
and the run sees the environment. A field that is set (in the launchpad's run config or in
``definitions.py``) is exported into the run's process environment while the resource is open, and
restored afterwards, so that the library code sees the very value the resource shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from client.publish import Publication, publish
from prioritymax.settings import Settings, get_settings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def environment(values: Mapping[str, str | None], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """Set the given variables (None: leave alone) and remove ``unset`` for the block; settings
    re-read on both ends."""
    values = {name: value for name, value in values.items() if value is not None}
    if not values and not unset:
        yield
        return
    saved = {name: os.environ.get(name) for name in (*values, *unset)}
    os.environ.update(values)
    for name in unset:
        os.environ.pop(name, None)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


class SettingsResource(dg.ConfigurableResource):
    """The workbench settings (``prioritymax/settings.py``) as this run sees them."""

    home: str | None = Field(None, description="PRIORITYMAX_HOME for this run [unset: the environment's]")
    trace: str | None = Field(None, description="PRIORITYMAX_TRACE for this run: the default trace CSV")

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[SettingsResource]:
        with environment({"PRIORITYMAX_HOME": self.home, "PRIORITYMAX_TRACE": self.trace}):
            yield self

    def get(self) -> Settings:
        return get_settings()


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking and the model registry (one URI for both, as ``ml/registry.py`` uses them).

    Training logs runs and registers versions as ``challenger``; the champion assets move the
    ``champion`` alias with :meth:`promote`, the code path of ``pmx models promote``."""

    tracking_uri: str | None = Field(
        None, description="tracking and registry URI [unset: MLFLOW_TRACKING_URI, else the embedded "
                          "SQLite store in the data home]")

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[MLflowResource]:
        with environment({"MLFLOW_TRACKING_URI": self.tracking_uri}):
            yield self

    @property
    def uri(self) -> str:
        return get_settings().mlflow_tracking_uri

    def champion_version(self, name: str) -> str | None:
        from ml import registry

        found = registry.champion_version(name)
        return None if found is None else str(found.version)

    def promote(self, name: str, version: str, *, actor: str, reason: str) -> dict[str, Any]:
        """Make ``version`` the champion (operator role: only a version whose gate passed)."""
        from ml import registry

        return registry.promote(name, version, actor=actor, role="operator", reason=reason)

    def run_metrics(self, name: str, version: str) -> dict[str, float]:
        """The metrics of the run that produced a registered version."""
        from ml import registry

        client = registry.client()
        found = client.get_model_version(name, str(version))
        return dict(client.get_run(found.run_id).data.metrics) if found.run_id else {}


class ControlPlaneResource(dg.ConfigurableResource):
    """The config control plane (``pmx api``): a promotion writes the new version as a config key,
    which every connected worker receives over the WebSocket (``client/control_plane.py``), with no restart.

    No control plane listening is not an error: the registry is the truth, and the status says the
    version was not published. A control plane that answers and refuses (HTTP 4xx/5xx) is an
    error, raised: the run fails and the failure sensor tells Slack."""

    url: str | None = Field(None, description="the API's base URL [unset: PRIORITYMAX_API_URL]")
    token: str | None = Field(
        None, description="a bearer token of the operator role or above [unset: PRIORITYMAX_API_TOKEN, "
                          "else PRIORITYMAX_ADMIN_TOKEN, else <home>/secrets/admin.token]")
    timeout_s: float = Field(5.0, description="seconds to wait for the API")

    def base_url(self) -> str:
        return (self.url or get_settings().api_url).rstrip("/")

    def bearer_token(self) -> str | None:
        return self.token or get_settings().api_client_token()

    def publish(self, key: str, value: Any, *, comment: str) -> Publication:
        """``POST /config {key, value, comment}`` (``client/publish.py``)."""
        return publish(self.base_url(), self.bearer_token(), key, value, comment=comment,
                       timeout_s=self.timeout_s)


class RayResource(dg.ConfigurableResource):
    """Ray for ``rl_engine: rllib`` (``ml/rl/rllib.py``): a local instance, or a cluster to join."""

    address: str | None = Field(None, description="RAY_ADDRESS for this run [unset: the environment's; "
                                                  "neither: start Ray on this machine]")
    num_cpus: int = Field(2, ge=1, description="CPUs of a local Ray; env runners = num_cpus - 1")
    num_gpus: int = Field(0, ge=0, description="GPUs of a local Ray; 1 puts the learner on a GPU")

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[RayResource]:
        with environment({"RAY_ADDRESS": self.address}):
            yield self


class TrainingBudget(dg.ConfigurableResource):
    """How much each run spends. The defaults make a useful predictor and policy on the NASA trace
    in a few minutes on 2 cores; tests set tiny values. Unset RL fields fall back, as the CLI's
    flags do, to the preset, then to PRIORITYMAX_RL_ENVS / ``ml.rl.ppo.Args``."""

    predictor_kind: Literal["lgbm", "rf"] = Field("lgbm", description="LightGBM or RandomForest")
    predictor_max_rows: int = Field(
        0, ge=0, description="train and gate on the latest N rows of queue_metrics only (0: all)")
    rl_engine: Literal["ppo", "rllib"] = Field(
        "ppo", description="ppo: train_rl on this process; rllib: Ray RLlib (the ray resource)")
    rl_preset: str | None = Field(None, description="start from this train_rl preset (`tune` saves 'tuned')")
    rl_epochs: int | None = Field(None, ge=1, description="PPO epochs / RLlib iterations [Args: 150]")
    rl_steps: int | None = Field(None, ge=1, description="env steps per epoch [Args: 2048]")
    rl_num_envs: int | None = Field(None, ge=1, description="parallel envs [PRIORITYMAX_RL_ENVS]")
    rl_rules: list[str] | None = Field(
        None, description="the tuned rules rl_agent_evaluation and the RL gate compare with (HPA always) "
                          "[unset: all of ml.sim.tuning.TUNED_BASELINES]")
    eval_episodes: int = Field(16, ge=2, description="held-out episodes of the RL evaluations: the "
                                 "trainer's own, rl_agent_evaluation's and the gate's")
    seed: int = Field(0, description="seed of both trainers")

    def rl_args(self):
        """``ml.rl.ppo.Args`` as the CLI makes them (``ml.rl.presets.resolve_args``: defaults <
        PRIORITYMAX_RL_ENVS < preset < the fields set here), with this budget's ``eval_episodes``,
        so the candidate's own evaluation uses the episodes of the evaluation and the gate."""
        from ml.rl.presets import resolve_args

        return resolve_args(self.rl_preset, epochs=self.rl_epochs, steps=self.rl_steps,
                            num_envs=self.rl_num_envs, eval_episodes=self.eval_episodes, seed=self.seed)


def default_resources() -> dict[str, Any]:
    """The resources the definitions bind (each reads the environment; see the module doc)."""
    return {
        "settings": SettingsResource(),
        "mlflow": MLflowResource(),
        "control_plane": ControlPlaneResource(),
        "ray": RayResource(),
        "budget": TrainingBudget(),
    }
