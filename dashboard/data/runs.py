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
    return sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))


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


def param_diff(runs: pd.DataFrame, run_ids: list[str]) -> pd.DataFrame:
    """The parameters of the chosen runs side by side, only those that differ between them."""
    chosen = runs[runs["run_id"].isin(run_ids)].set_index("run_id")
    params = chosen[[c for c in chosen.columns if c.startswith("params.")]]
    params.columns = [c.removeprefix("params.") for c in params.columns]
    differing = [c for c in params.columns if params[c].astype(str).nunique(dropna=False) > 1]
    return params[differing].T


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
            "launched_by": r.dagster_run.tags.get("prioritymax/launched_by"),
        } for r in instance.get_run_records(dg.RunsFilter(), limit=limit)]
    finally:
        instance.dispose()
    return pd.DataFrame(rows, columns=["run_id", "job", "status", "created", "started", "ended",
                                       "launched_by"])


