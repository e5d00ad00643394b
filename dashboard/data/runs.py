"""MLflow runs and their metric histories, Dagster runs, and the aggregations over them (DuckDB).

MLflow is read in this process (``ml.registry.client``: the embedded store in the data home, or
MLFLOW_TRACKING_URI); Dagster through the data home's instance, so both answer while their
servers are down."""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd
import streamlit as st

from dashboard.data.services import ServiceDown, settings, utc

#: The MLflow experiments the trainers log to.
EXPERIMENTS = ("predictor", "rl_agent")
#: The experiment the Runs page opens on: the RL trainer logs its curves every epoch whatever its
#: settings, while the predictor logs a validation curve only when it is a LightGBM model.
DEFAULT_EXPERIMENT = "rl_agent"
#: The curves that say whether a training worked, in the order a reader wants them first: the
#: policy's evaluation reward per epoch, its training return, the predictor's validation error.
LEARNING_CURVES = ("charts/eval_reward", "charts/episodic_return", "valid_rmse")
#: The metrics a trainer logs once, at its end: what a run is judged on, and the run table's
#: columns at first (every metric of a run does not fit a screen's width).
SUMMARY_METRICS = ("eval_reward", "hpa_reward", "holdout_rmse", "holdout_mae", "skill_vs_persistence",
                   "skill_vs_seasonal_naive")
#: Dagster's own tags that say what started a run, and how to say it.
DAGSTER_LAUNCH_TAGS = {"dagster/schedule_name": "schedule", "dagster/sensor_name": "sensor",
                       "dagster/backfill": "backfill"}
#: The tag the admin API puts on the runs it launches (the actor's name).
LAUNCHED_BY_TAG = "prioritymax/launched_by"
#: A run without any of those tags: started from Dagster's UI or CLI (``pmx up`` uses the CLI).
UNTAGGED = "— (untagged: UI or CLI)"
LAUNCHED_BY_HELP = ("From the run's tags: the admin API's actor, a schedule, a sensor, a backfill, the "
                    "workflows API. Untagged: started from Dagster's UI or CLI, as `pmx up` does.")


def _client():
    from ml import registry

    current = settings()
    if not registry.registry_exists(current):
        raise ServiceDown("MLflow", f"no MLflow store at {current.mlflow_tracking_uri} yet: train with "
                                    "--mlflow, or run the pipeline (`pmx up`)")
    return registry.client(current)


@st.cache_data(ttl=10, show_spinner=False)
def mlflow_runs() -> pd.DataFrame:
    """One row per run of the trainers' experiments: ids, name, status, times, ``params.*`` and
    ``metrics.*`` columns (MLflow's own ``search_runs`` frame, newest first)."""
    import mlflow

    client = _client()
    experiments = [e for e in (client.get_experiment_by_name(n) for n in EXPERIMENTS) if e is not None]
    if not experiments:
        return pd.DataFrame()
    names = {e.experiment_id: e.name for e in experiments}
    frame = mlflow.search_runs([e.experiment_id for e in experiments], order_by=["start_time DESC"])
    if frame.empty:
        return frame
    frame.insert(1, "experiment", frame["experiment_id"].map(names))
    frame.insert(2, "run_name", frame.get("tags.mlflow.runName"))
    return frame


@st.cache_data(ttl=10, show_spinner=False)
def metric_history(run_ids: tuple[str, ...], key: str) -> pd.DataFrame:
    """Every logged value of ``key`` for each run: run_id, step, timestamp (s), value."""
    client = _client()
    rows = [{"run_id": run_id, "step": m.step, "timestamp": m.timestamp / 1000.0, "value": m.value}
            for run_id in run_ids for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["run_id", "step", "timestamp", "value"])


def metric_keys(runs: pd.DataFrame) -> list[str]:
    """The metrics at least one of ``runs`` logged (another experiment's metrics are left out)."""
    return sorted(c.removeprefix("metrics.") for c in runs.columns
                  if c.startswith("metrics.") and runs[c].notna().any())


def experiment_runs(runs: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The runs of one experiment, newest first: runs compared side by side share their trainer,
    so their curves and parameters mean the same thing."""
    return runs[runs["experiment"] == experiment]


def default_experiment(experiments: list[str]) -> str:
    return DEFAULT_EXPERIMENT if DEFAULT_EXPERIMENT in experiments else experiments[0]


def points(history: pd.DataFrame) -> int:
    """The most values one run logged in ``history`` (:func:`metric_history`): 1 is a single value,
    more is a curve."""
    return int(history.groupby("run_id").size().max()) if not history.empty else 0


def default_metric(run_ids: tuple[str, ...], keys: list[str]) -> str | None:
    """The metric the curves open on: the first of :data:`LEARNING_CURVES` that the runs logged at
    more than one step, else any metric they did, else the first (one value per run: a bar each)."""
    ordered = [k for k in LEARNING_CURVES if k in keys] + [k for k in keys if k not in LEARNING_CURVES]
    for key in ordered:
        if points(metric_history(run_ids, key)) > 1:
            return key
    return keys[0] if keys else None


def summary_columns(keys: list[str]) -> list[str]:
    """The metrics the run table shows at first: the runs' :data:`SUMMARY_METRICS`, else their
    first few metrics."""
    return [k for k in SUMMARY_METRICS if k in keys] or keys[:4]


def run_table(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The runs as the page lists them: name, short id, status, start, duration (s), then each of
    ``metrics`` under its own name (``losses/value_loss``, not ``metrics.losses/value_loss``)."""
    table = pd.DataFrame({
        "run": runs["run_name"].fillna(runs["run_id"].str[:8]),
        "id": runs["run_id"].str[:8],
        "status": runs["status"],
        "started": runs["start_time"],
        "seconds": (runs["end_time"] - runs["start_time"]).dt.total_seconds(),
    })
    for key in metrics:
        table[key] = runs[f"metrics.{key}"]
    return table.reset_index(drop=True)


def param_diff(runs: pd.DataFrame, run_ids: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The parameters of the chosen runs side by side, only those that differ between them (a
    parameter one run lacks reads "—"); and the runs that recorded no parameter at all (a
    registered file, not a training), left out rather than shown as a column of blanks."""
    chosen = runs[runs["run_id"].isin(run_ids)].set_index("run_id")
    params = chosen[[c for c in chosen.columns if c.startswith("params.")]]
    params.columns = [c.removeprefix("params.") for c in params.columns]
    bare = params.index[params.isna().all(axis=1)].tolist()
    params = params.drop(index=bare)
    differing = [c for c in params.columns if params[c].astype(str).nunique(dropna=False) > 1]
    return params[differing].T.fillna("—"), bare


def smooth(history: pd.DataFrame, weight: float) -> pd.DataFrame:
    """TensorBoard's smoothing: a debiased exponential moving average per run (0: none)."""
    if weight <= 0 or history.empty:
        return history.assign(smoothed=history.get("value"))
    parts = []
    for _, run in history.sort_values(["run_id", "step"]).groupby("run_id", sort=False):
        smoothed, last = [], 0.0
        for count, value in enumerate(run["value"].to_numpy(), start=1):
            last = last * weight + (1 - weight) * value
            smoothed.append(last / (1 - weight ** count))
        parts.append(run.assign(smoothed=smoothed))
    return pd.concat(parts, ignore_index=True)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per experiment and status, with the latest start: one DuckDB query over the frame."""
    if runs.empty:
        return pd.DataFrame(columns=["experiment", "status", "runs", "latest"])
    with duckdb.connect() as con:
        con.register("runs", runs[["experiment", "status", "start_time"]])
        return con.execute("SELECT experiment, status, count(*) AS runs, max(start_time) AS latest "
                           "FROM runs GROUP BY ALL ORDER BY experiment, status").df()


@st.cache_data(ttl=10, show_spinner=False)
def dagster_runs(limit: int = 100) -> pd.DataFrame:
    """The latest Dagster runs on the data home's instance (training jobs and workflow runs)."""
    import dagster as dg

    home = settings().dagster_home
    if not (home / "dagster.yaml").exists() and not (home / "storage").exists():
        raise ServiceDown("Dagster", f"no Dagster instance in {home} yet: `pmx up` creates it")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        rows: list[dict[str, Any]] = [{
            "run_id": r.dagster_run.run_id, "job": r.dagster_run.job_name,
            "status": r.dagster_run.status.value,
            "created": r.create_timestamp, "started": utc(r.start_time), "ended": utc(r.end_time),
            "launched_by": launcher(r.dagster_run.tags),
        } for r in instance.get_run_records(dg.RunsFilter(), limit=limit)]
    finally:
        instance.dispose()
    return pd.DataFrame(rows, columns=["run_id", "job", "status", "created", "started", "ended",
                                       "launched_by"])


def launcher(tags: dict[str, str]) -> str:
    """Who or what started a Dagster run, from its tags: the actor the admin API recorded, a
    schedule, a sensor, a backfill, the workflows API, a re-execution; else a dash that says the
    run does not record it (launched from Dagster's UI or its CLI, which ``pmx up`` uses)."""
    if tags.get(LAUNCHED_BY_TAG):
        return tags[LAUNCHED_BY_TAG]
    for tag, kind in DAGSTER_LAUNCH_TAGS.items():
        if tags.get(tag):
            return f"{kind} {tags[tag]}"
    if tags.get("workflow/source"):
        return f"workflow run via {tags['workflow/source']}"
    if tags.get("dagster/parent_run_id"):
        return f"re-execution of {tags['dagster/parent_run_id'][:8]}"
    return UNTAGGED
