"""The RL page's data: which PPO policy to show, which traces to run it on, and one seeded episode
of that policy and of the HPA rule side by side, recorded step by step.

The policy is the registry's ``rl_agent`` champion (or its challenger, on request) when there is
a registry, else the trainer's default checkpoint ``<home>/models/rl_agent.pt``. An episode is
recorded step by step by :func:`ml.sim.evaluate.record_episode` (both policies side by side, from
the same seed, so they face the very same arrivals; 720 steps take about half a second). A trace
is replayed on its held-out latest part (what ``eval_rl`` scores a policy on); the synthetic
profile is replayed whole. The per-policy summary is one DuckDB query over the recorded frame.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import streamlit as st

from dashboard.data.models import ModelChoice, model_choices
from dashboard.data.services import settings

MODEL_NAME = "rl_agent"
CHECKPOINT = "rl_agent.pt"
#: Policy names in the frames and charts.
PPO, HPA = "PPO", "HPA"
BEST = "Best tuned rule"
HOW_TO_TRAIN = ("Train one with `pmx train_rl` (`--mlflow` registers it; `pmx canary_rl` and "
                "`pmx models promote` make it the champion), or run the pipeline: `pmx up`.")


class EpisodeError(ValueError):
    """An episode that cannot be run: an unreadable checkpoint or trace, an episode too long for
    the trace, a registry version without a checkpoint. The message says which."""



@dataclass(frozen=True)
class Trace:
    """A traffic source: ``"synthetic"`` or a trace CSV's path."""

    label: str
    source: str


# ------------------------------------------------------------------------------- the policies
@st.cache_data(ttl=10, show_spinner=False)
def policies() -> tuple[list[ModelChoice], str | None]:
    """The policies to choose from, the registry champion first, then its challenger, then
    ``<home>/models/rl_agent.pt`` when it exists; and a note when the registry was unreadable.
    An empty list: there is no policy yet (:data:`HOW_TO_TRAIN`)."""
    return model_choices(MODEL_NAME, CHECKPOINT)


@st.cache_resource(max_entries=4, show_spinner=False)
def _payload(version: str | None, path: str | None, modified: float | None) -> dict[str, Any]:
    """A checkpoint read once (registered versions never change; a file is keyed by its mtime)."""
    from ml import registry
    from ml.rl.ppo import CheckpointError, load_checkpoint

    try:
        if version is not None:
            with tempfile.TemporaryDirectory(prefix="pmx-dashboard-rl-") as folder:
                return load_checkpoint(registry.version_checkpoint(MODEL_NAME, version, "*.pt",
                                                                   Path(folder)))
        return load_checkpoint(path)
    except (CheckpointError, registry.RegistryError) as error:
        raise EpisodeError(str(error)) from None


def checkpoint(choice: ModelChoice) -> dict[str, Any]:
    modified = Path(choice.path).stat().st_mtime if choice.path and Path(choice.path).exists() else None
    return _payload(choice.version, choice.path, modified)


def policy_details(choice: ModelChoice) -> dict[str, Any]:
    """What the page says about a policy: its training traffic, episode length, network size."""
    payload = checkpoint(choice)
    return {"traffic": payload.get("traffic"),
            "episode_steps": int(payload["sim_config"]["episode_steps"]),
            "trainer": payload.get("trainer", "ppo"), "hidden_dim": payload["args"].get("hidden_dim"),
            "trained_steps": payload.get("global_step")}


# --------------------------------------------------------------------------------- the traces
@st.cache_data(ttl=30, show_spinner=False)
def traces() -> list[Trace]:
    """The default trace (PRIORITYMAX_TRACE, else the NASA HTTP trace), the synthetic profile,
    then every trace in the data home: ``data/<source>/trace.csv`` (the pipeline's) and the
    landed files of ``data/traces/``."""
    current = settings()
    found: list[Trace] = []
    seen: set[Path] = set()

    def add(label: str, path: Path) -> None:
        resolved = path.resolve()
        if path.is_file() and resolved not in seen:
            seen.add(resolved)
            found.append(Trace(label, str(path)))

    default = current.trace_path
    add(f"{default.name.split('.')[0]} (default trace)", default)
    found.append(Trace("synthetic profile", "synthetic"))
    data = current.data_dir
    for path in sorted(data.glob("*/trace.csv")):
        add(str(path.relative_to(current.home)), path)
    for pattern in ("*.csv", "*.csv.gz"):
        for path in sorted((data / "traces").glob(pattern)):
            if not path.name.startswith("."):
                add(str(path.relative_to(current.home)), path)
    return found


@st.cache_resource(max_entries=8, show_spinner=False)
def _traffic(source: str, modified: float | None, config_items: tuple[tuple[str, Any], ...]):
    """The series an episode replays: a trace's held-out latest part, or the synthetic profile."""
    from ml.rl.train import traffic_for
    from ml.sim.config import SimConfig
    from ml.sim.traffic import TraceError

    config = SimConfig.from_dict(dict(config_items))
    try:
        return traffic_for(None if source == "synthetic" else source, config).evaluation
    except (TraceError, OSError) as error:
        raise EpisodeError(str(error)) from None


def _hashable(config_dict: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(config_dict.items()))


# -------------------------------------------------------------------------------- the episode
def best_rule(choice: ModelChoice) -> tuple[str, dict[str, Any]]:
    """The rule (and its parameters) the policy is compared with: the best tuned rule its gate
    (``canary_rl``) compared it with, as the gate recorded it; tuned again here only for what was
    not recorded (the gate's rule without its parameters: that rule alone; no gate: every rule,
    the best on the policy's held-out episodes). Tuning every rule takes minutes on 2 cores."""
    recorded = recorded_best_rule(choice)
    if recorded is not None and recorded[1] is not None:
        return recorded[0], recorded[1]
    return tuned_best_rule(choice, recorded[0] if recorded is not None else None)


@st.cache_data(ttl=10, show_spinner=False)
def recorded_best_rule(choice: ModelChoice) -> tuple[str, dict[str, Any] | None] | None:
    """The best tuned rule the policy's gate recorded: a registered version's ``gate.*`` tags, or
    the gate result kept beside a local checkpoint (``rl_agent.json``); its parameters are None
    where only the name was recorded. None: no gate recorded one."""
    gate = recorded_gate(choice)
    params = gate.get("best_baseline_params")
    if isinstance(params, str):  # a registry tag holds JSON text
        params = json.loads(params)
    return (gate["best_baseline"], params) if gate.get("best_baseline") else None


def recorded_gate(choice: ModelChoice) -> dict[str, Any]:
    """The policy's last gate result: a registered version's ``gate.*`` tags, or what the gate
    kept beside a local checkpoint; empty when there is none or the registry does not answer."""
    if choice.version is None:
        from ml.rl.tracking import read_metadata

        return read_metadata(Path(choice.path)).get("gate") or {}
    from mlflow.exceptions import MlflowException

    from ml import registry

    try:
        tags = registry.client().get_model_version(MODEL_NAME, choice.version).tags or {}
    except MlflowException:
        return {}
    return {k.removeprefix(registry.GATE_PREFIX): v for k, v in tags.items()
            if k.startswith(registry.GATE_PREFIX)}


@st.cache_data(max_entries=16, show_spinner="Tuning the rules on the policy's training traffic…")
def tuned_best_rule(choice: ModelChoice, only: str | None = None) -> tuple[str, dict[str, Any]]:
    """The rule (``only``, else every tuned rule) tuned on the policy's training part, the best on
    its held-out episodes when there are several: what the gate compares with."""
    from ml.rl.train import eval_seeds
    from ml.sim.config import SimConfig
    from ml.sim.tuning import best_of, evaluate_tuned, tune_baselines

    config = SimConfig.from_dict(checkpoint(choice)["sim_config"])
    traffic = training_traffic(choice)
    try:
        tuned = tune_baselines(config, traffic.train, only=[only]) if only else {}
    except ValueError:  # a rule this version of the code no longer has
        tuned = {}
    if not tuned:  # no recorded rule, or one that cannot be tuned here (no forecasts)
        tuned = tune_baselines(config, traffic.train)
    if len(tuned) == 1:
        return next(iter(tuned.items()))
    evaluations = evaluate_tuned(tuned, config, traffic.evaluation, eval_seeds(8),
                                 train=traffic.train)
    best = best_of(evaluations)
    return best, tuned[best]


@st.cache_resource(max_entries=16)
def training_traffic(choice: ModelChoice):
    """The policy's training traffic, split as it was trained (its ``train`` part is what the rules
    are tuned on and what predictive Erlang-C's predictor learns from)."""
    from ml.rl.train import traffic_named
    from ml.sim.config import SimConfig

    payload = checkpoint(choice)
    try:
        return traffic_named(payload["traffic"], SimConfig.from_dict(payload["sim_config"]))
    except (OSError, ValueError) as error:
        raise EpisodeError(f"the policy's training traffic cannot be read: {error}") from None


def best_policy(choice: ModelChoice, config, series):
    """The best tuned rule (:func:`best_rule`) ready to run on ``series``: predictive Erlang-C gets
    the forecasts of a predictor trained on the policy's training part."""
    from ml.sim.tuning import tuned_policy

    name, params = best_rule(choice)
    policy = tuned_policy(name, params, config, series, training_traffic(choice).train)
    if policy is None:
        raise EpisodeError(f"the best tuned rule, {name}, needs load forecasts of {series.name!r} "
                           "and none could be made")
    return policy


@st.cache_data(max_entries=32, show_spinner="Running PPO, the HPA rule and the best tuned rule…")
def episode(choice: ModelChoice, trace: str, seed: int, steps: int | None = None) -> pd.DataFrame:
    """One episode of ``steps`` steps (default: the policy's training episode length) on
    ``trace``, run by the PPO policy, by the HPA rule and by the best tuned rule
    (:func:`best_rule`) from the same seed: one row per step and policy (``step, time, policy``,
    arrivals / queue / SLA violations per class and in total, workers active / warming / both,
    utilization, cost parts, reward, cumulative reward)."""
    from ml.rl.policy import PPOPolicy
    from ml.sim.config import SimConfig
    from ml.sim.evaluate import record_episode
    from ml.sim.policies import HPAPolicy

    payload = checkpoint(choice)
    trained = SimConfig.from_dict(payload["sim_config"])
    steps = int(steps or trained.episode_steps)
    if steps < 1:
        raise EpisodeError("an episode needs at least one step")
    config = trained.replace(episode_steps=steps)
    modified = Path(trace).stat().st_mtime if trace != "synthetic" and Path(trace).exists() else None
    series = _traffic(trace, modified, _hashable(trained.to_dict()))
    if series.longest_segment < steps:
        raise EpisodeError(f"the replayed part of {series.name!r} holds at most {series.longest_segment} "
                           f"contiguous steps; choose an episode of {steps} steps or fewer")
    return record_episode({PPO: PPOPolicy.from_payload(payload), HPA: HPAPolicy(config),
                           BEST: best_policy(choice, config, series)}, series, seed, config)


def class_names(frame: pd.DataFrame) -> list[str]:
    return [c.removeprefix("queue_") for c in frame.columns if c.startswith("queue_")]


def per_class(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """``prefix``_<class> columns as long rows: step, time, policy, class, value."""
    columns = [f"{prefix}_{c}" for c in class_names(frame)]
    long = frame.melt(id_vars=["step", "time", "policy"], value_vars=columns, var_name="class",
                      value_name="value")
    long["class"] = long["class"].str.removeprefix(f"{prefix}_")
    return long


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per policy (PPO first): total reward, its cost parts, mean workers, SLA violations (tasks
    and share of arrivals), worker changes; one DuckDB query over the episode frame."""
    columns = ["policy", "total_reward", "worker_cost", "sla_penalty", "churn_cost", "mean_workers",
               "peak_workers", "sla_violations", "violation_rate", "mean_queue", "scaling_steps"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    with duckdb.connect() as con:
        con.register("episode", frame.drop(columns=["time"]))
        return con.execute(f"""
            SELECT policy, sum(reward) AS total_reward, sum(worker_cost) AS worker_cost,
                   sum(sla_penalty) AS sla_penalty, sum(churn_cost) AS churn_cost,
                   avg(workers) AS mean_workers, max(workers) AS peak_workers,
                   sum(violations) AS sla_violations,
                   sum(violations) / greatest(sum(arrivals), 1e-12) AS violation_rate,
                   avg(queue) AS mean_queue, count(*) FILTER (WHERE worker_delta <> 0) AS scaling_steps
            FROM episode GROUP BY policy ORDER BY policy = '{PPO}' DESC, policy
        """).df()[columns]
