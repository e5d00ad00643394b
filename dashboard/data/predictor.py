"""The Predictor page's data: which predictor to show, the datasets to show it on, and its
forecasts of the load on a dataset's holdout, at each of its horizons, with their p50..p90 band,
next to the actual values and the two baselines, with the error metrics of each (DuckDB queries).

The predictor is the registry's ``predictor`` champion (or its challenger, on request) when there
is a registry, else the trainer's default checkpoint ``<home>/models/predictor_lgbm.pkl``. It is
shown by default on the data it was trained on: the path and fingerprint (sha256) its metadata
records (``data.path``, ``data.fingerprint``; for a registered version without them, its MLflow
run's ``data`` and ``data_fingerprint`` parameters), found by path, else by fingerprint among the
data home's datasets (a home moved or mounted elsewhere); only without either on a
``data/<source>/queue_metrics.csv`` of the data home. The holdout is what the trainer holds out
(``ml.predictor.train.prepare``): the model's features on the dataset, the rows with a label and a
last known value, the latest 20% of them; each horizon scored on the rows where its label and
every baseline exist (``scoring_rows``), as ``score`` does. On the dataset the model was trained
on, these are exactly the rows of its registered holdout metrics (``metrics.holdout.by_horizon``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import streamlit as st

from dashboard.data.models import ModelChoice, model_choices
from dashboard.data.services import settings

MODEL_NAME = "predictor"
CHECKPOINT = "predictor_lgbm.pkl"
DATASET = "queue_metrics.csv"
HOLDOUT_FRACTION = 0.2
#: The forecasts compared, the model first: its own, the last known value, the value a day before.
METHODS = ("model", "persistence", "seasonal_naive")
#: How much of the holdout's end the forecast chart shows at first.
RECENT = pd.Timedelta(days=2)
DECILES = 10
HOW_TO_TRAIN = ("Train one with `pmx train_predictor --data <home>/data/<source>/queue_metrics.csv "
                "--mlflow` (`pmx canary_predictor` and `pmx models promote` make it the champion), "
                "or run the pipeline: `pmx up`.")
HOW_TO_BUILD = ("Build one with `pmx sim dataset` (it writes `data/<source>/queue_metrics.csv`), or "
                "run the pipeline: `pmx up`.")


class HoldoutError(ValueError):
    """A holdout that cannot be scored: an unreadable checkpoint or dataset, a dataset without
    the model's columns, too few rows. The message says which."""


@dataclass(frozen=True)
class Dataset:
    label: str
    path: str
    trained_on: bool = False  # the data the model was trained on (its metadata's data.path)


@dataclass
class Holdout:
    """The holdout's forecasts as long rows, one per horizon and scored row: ``horizon``,
    ``made_at`` (the row's time), ``ts`` (the time forecast: ``horizon`` steps later),
    ``actual``, ``model`` (the mean forecast), ``p50`` and ``p90`` (NaN for a model without
    intervals) and a column per baseline (NaN for seasonal_naive with less than a day of history);
    what it covers, and whether the dataset is the one the model was trained on (None: the model
    does not say)."""

    frame: pd.DataFrame
    rows: int  # the usable rows of the whole dataset
    same_data: bool | None
    horizons: tuple[int, ...]
    methods: dict[int, tuple[str, ...]]  # per horizon: the model and the baselines it has
    interval_seconds: int
    target: str
    leads: dict[int, int]  # per horizon: how far ahead its forecasts are, in seconds

    def lead_seconds(self, horizon: int) -> int:
        return self.leads[horizon]

    def at(self, horizon: int) -> pd.DataFrame:
        """One horizon's rows, oldest first, without the ``horizon`` column."""
        rows = self.frame[self.frame["horizon"] == horizon]
        return rows.drop(columns="horizon").reset_index(drop=True)


# ---------------------------------------------------------------------------- the predictors
@st.cache_data(ttl=10, show_spinner=False)
def models() -> tuple[list[ModelChoice], str | None]:
    """The predictors to choose from, the registry champion first, then its challenger, then
    ``<home>/models/predictor_lgbm.pkl`` when it exists; and a note when the registry was
    unreadable. An empty list: there is no predictor yet (:data:`HOW_TO_TRAIN`)."""
    return model_choices(MODEL_NAME, CHECKPOINT)


@st.cache_resource(max_entries=4, show_spinner=False)
def _load(version: str | None, path: str | None, modified: float | None):
    """A predictor read once (registered versions never change; a file is keyed by its mtime)."""
    from ml import registry
    from ml.predictor.model import CheckpointError, PredictorModel

    try:
        if version is not None:
            with tempfile.TemporaryDirectory(prefix="pmx-dashboard-predictor-") as folder:
                return PredictorModel.load(registry.version_checkpoint(MODEL_NAME, version, "*.pkl",
                                                                       Path(folder)))
        return PredictorModel.load(path)
    except (CheckpointError, registry.RegistryError) as error:
        raise HoldoutError(str(error)) from None


def model(choice: ModelChoice):
    modified = Path(choice.path).stat().st_mtime if choice.path and Path(choice.path).exists() else None
    return _load(choice.version, choice.path, modified)


@st.cache_data(ttl=300, show_spinner=False)
def run_data(version: str) -> dict[str, str | None]:
    """The data a registered version's MLflow run records it was trained on (``path`` and
    ``fingerprint``; None where not recorded). Cached for minutes: a run's parameters never change."""
    from ml import registry

    found = registry.client()
    params = found.get_run(found.get_model_version(MODEL_NAME, version).run_id).data.params
    return {"path": params.get("data"), "fingerprint": params.get("data_fingerprint")}


def training_data(choice: ModelChoice, meta: dict[str, Any]) -> dict[str, str | None]:
    """The path and fingerprint of the data the predictor was trained on: its metadata's, else
    (a registered version whose metadata lacks them) its MLflow run's."""
    recorded = meta.get("data") or {}
    if recorded.get("path") or choice.version is None:
        return {"path": recorded.get("path"), "fingerprint": recorded.get("fingerprint")}
    from mlflow.exceptions import MlflowException

    try:
        return run_data(choice.version)
    except MlflowException:
        return {"path": None, "fingerprint": None}


def model_details(choice: ModelChoice) -> dict[str, Any]:
    """What the page says about a predictor: kind, target, horizons, when and on what it was
    trained (``data``: the path, ``data_fingerprint``), its training and holdout windows and its
    holdout metrics (per horizon)."""
    found = model(choice)
    meta = found.metadata
    holdout = meta.get("metrics", {}).get("holdout", {})
    data = training_data(choice, meta)
    return {"kind": found.kind, "target": found.spec.target, "horizon": found.spec.horizon,
            "horizons": found.horizons, "intervals": bool(found.intervals),
            "interval_seconds": found.spec.interval_seconds,
            "features": len(found.spec.features), "created_at": meta.get("created_at"),
            "data": data["path"], "data_fingerprint": data["fingerprint"],
            "training_window": meta.get("training_window"),
            "holdout_window": meta.get("holdout_window"),
            "holdout_rmse": holdout.get("rmse"),
            "by_horizon": holdout.get("by_horizon") or {}}


# ------------------------------------------------------------------------------ the datasets
@st.cache_data(ttl=30, show_spinner=False)
def datasets() -> list[Dataset]:
    """Every ``data/<source>/queue_metrics.csv`` of the data home."""
    current = settings()
    return [Dataset(path.parent.name, str(path))
            for path in sorted(current.data_dir.glob(f"*/{DATASET}")) if path.is_file()]


def dataset_choices(trained_on: str | None, found: list[Dataset],
                    fingerprint: str | None = None) -> list[Dataset]:
    """The datasets to show a predictor on: first the one it was trained on, then the data home's
    others. The one it was trained on is the file at ``trained_on`` (its recorded path; a relative
    path is read from the data home) when it exists here, else the data home's dataset whose
    content has the recorded ``fingerprint``; without either, the data home's datasets only."""
    own = recorded_file(trained_on) or same_content(found, fingerprint)
    if own is None:
        return list(found)
    same = next((d for d in found if Path(d.path).resolve() == own), None)
    label = f"{same.label} (trained on)" if same else f"{own.parent.name}/{own.name} (trained on)"
    return [Dataset(label, str(own), trained_on=True), *(d for d in found if d is not same)]


def recorded_file(path: str | None) -> Path | None:
    """A recorded data path as a file here: as it is, or relative to the data home; None when it
    is not here."""
    if not path:
        return None
    for candidate in (Path(path), settings().home / path):
        if candidate.is_file():
            return candidate.resolve()
    return None


def same_content(found: list[Dataset], fingerprint: str | None) -> Path | None:
    """The dataset of ``found`` whose content has ``fingerprint``: the model's own data when its
    recorded path is gone (the home was moved, or is mounted elsewhere)."""
    if not fingerprint:
        return None
    match = next((d for d in found if file_fingerprint(d.path, dataset_mtime(d.path)) == fingerprint), None)
    return Path(match.path).resolve() if match else None


@st.cache_data(max_entries=64, show_spinner=False)
def file_fingerprint(path: str, modified: float | None) -> str | None:
    """The file's fingerprint as the trainer records it (``ml.predictor.data.fingerprint``),
    read once per version of the file (``modified``: its mtime)."""
    from ml.predictor.data import fingerprint

    return fingerprint(Path(path)) if modified is not None else None


def dataset_mtime(path: str) -> float | None:
    return Path(path).stat().st_mtime if Path(path).exists() else None


# ------------------------------------------------------------------------------- the holdout
@st.cache_data(max_entries=16, show_spinner="Forecasting the holdout…")
def holdout(choice: ModelChoice, dataset: str, modified: float | None = None) -> Holdout:
    """The chosen predictor's forecasts at every horizon and the baselines on ``dataset``'s
    holdout (``modified``: the file's mtime, so a rewritten dataset is read again;
    :func:`dataset_mtime`)."""
    from ml.predictor.data import DataError, load_table
    from ml.predictor.features import build_features, label_column, seasonal_naive_column
    from ml.predictor.train import scoring_rows, usable_rows

    predictor = model(choice)
    spec = predictor.spec
    try:
        table = load_table(dataset, target=spec.target)
        usable = usable_rows(build_features(table, spec))
        cut = int(round(len(usable) * (1.0 - HOLDOUT_FRACTION)))
        held = usable.iloc[cut:]
        if held.empty:
            raise DataError(f"{dataset}: no holdout rows to score")
        forecast = predictor.forecast(held)
        parts, methods, leads = [], {}, {}
        for k in predictor.horizons:
            rows, baselines = scoring_rows(held, spec, k)
            scored, predicted = held[rows], forecast[rows]
            made_at = pd.to_datetime(scored["ts"], utc=True).reset_index(drop=True)
            steps = k + spec.offset  # a look-ahead target's label is already a step ahead
            parts.append(pd.DataFrame({
                "horizon": k,
                "made_at": made_at,
                "ts": made_at + pd.Timedelta(seconds=steps * spec.interval_seconds),
                "actual": scored[label_column(spec, k)].to_numpy(dtype=np.float64),
                "model": predicted[f"h{k}"].to_numpy(dtype=np.float64),
                **{f"p{q}": (predicted[f"h{k}_p{q}"].to_numpy(dtype=np.float64)
                             if f"h{k}_p{q}" in predicted else np.nan) for q in (50, 90)},
                "persistence": scored["persistence"].to_numpy(dtype=np.float64),
                "seasonal_naive": (scored[seasonal_naive_column(spec, k)].to_numpy(dtype=np.float64)
                                   if "seasonal_naive" in baselines else np.nan),
            }))
            methods[k] = ("model", *baselines)
            leads[k] = steps * spec.interval_seconds
    except DataError as error:
        raise HoldoutError(str(error)) from None
    fingerprint = predictor.metadata.get("data", {}).get("fingerprint")
    return Holdout(frame=pd.concat(parts, ignore_index=True), rows=len(usable),
                   same_data=None if fingerprint is None else fingerprint == table.fingerprint,
                   horizons=predictor.horizons, methods=methods,
                   interval_seconds=spec.interval_seconds, target=spec.target, leads=leads)


def recent(frame: pd.DataFrame, span: pd.Timedelta = RECENT) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The last ``span`` of one horizon's rows (:meth:`Holdout.at`): (start, end) of ``ts``."""
    last = frame["ts"].max()
    return max(frame["ts"].min(), last - span), last


# ------------------------------------------------------------------------------ the metrics
# The aggregations are cached on their frame (Streamlit hashes it): a rerun that only moves the
# window slider or adds a baseline to the chart reads them instead of querying DuckDB again.
def errors(frame: pd.DataFrame) -> pd.DataFrame:
    """One horizon's rows as long rows: ts, method, forecast, actual, error (forecast − actual);
    a method without a forecast on a row (seasonal-naive early in a segment) has no row."""
    methods = [m for m in METHODS if m in frame.columns]
    long = frame.melt(id_vars=["ts", "actual"], value_vars=methods, var_name="method",
                      value_name="forecast").dropna(subset=["forecast"])
    long["error"] = long["forecast"] - long["actual"]
    long["relative_error"] = long["error"] / np.maximum(long["actual"], 1.0)
    return long[["ts", "method", "forecast", "actual", "error", "relative_error"]].reset_index(drop=True)


def _order() -> str:
    return "[" + ", ".join(f"'{m}'" for m in METHODS) + "]"


@st.cache_data(max_entries=64, show_spinner=False)
def metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method (model, persistence, seasonal_naive) over one horizon's rows: RMSE, MAE, bias
    (mean of forecast − actual: above zero forecasts too high), the largest miss, rows, and skill
    against persistence (1 − RMSE / persistence's RMSE); one DuckDB query over :func:`errors`."""
    columns = ["method", "rmse", "mae", "bias", "max_abs_error", "rows", "skill_vs_persistence"]
    long = errors(frame)
    if long.empty:
        return pd.DataFrame(columns=columns)
    with duckdb.connect() as con:
        con.register("errors", long[["method", "error"]])
        return con.execute(f"""
            WITH per_method AS (
                SELECT method, sqrt(avg(error * error)) AS rmse, avg(abs(error)) AS mae,
                       avg(error) AS bias, max(abs(error)) AS max_abs_error, count(*) AS rows
                FROM errors GROUP BY method
            )
            SELECT *, 1 - rmse / nullif(max(rmse) FILTER (WHERE method = 'persistence') OVER (), 0)
                   AS skill_vs_persistence
            FROM per_method ORDER BY list_position({_order()}, method)
        """).df()[columns]


@st.cache_data(max_entries=16, show_spinner=False)
def horizon_metrics(frame: pd.DataFrame, by_horizon: dict[str, Any] | None = None) -> pd.DataFrame:
    """Per horizon over :attr:`Holdout.frame`: rows, the model's RMSE and MAE, the share of actual
    values at or under the p90 forecast (``p90_coverage``, 0.9 when calibrated), each baseline's
    RMSE and the skill against persistence; one DuckDB query. ``by_horizon``, the model's
    ``metrics.holdout.by_horizon``, adds the RMSE and p90 coverage it recorded when trained."""
    columns = ["horizon", "rows", "rmse", "mae", "p90_coverage", "persistence_rmse",
               "seasonal_naive_rmse", "skill_vs_persistence", "trained_rmse", "trained_p90_coverage"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    with duckdb.connect() as con:
        con.register("holdout", frame[["horizon", "actual", *METHODS, "p90"]])
        table = con.execute("""
            WITH per_horizon AS (
                SELECT horizon, count(*) AS rows,
                       sqrt(avg((model - actual) ^ 2)) AS rmse, avg(abs(model - actual)) AS mae,
                       avg(CAST(actual <= p90 AS DOUBLE)) AS p90_coverage,
                       sqrt(avg((persistence - actual) ^ 2)) AS persistence_rmse,
                       sqrt(avg((seasonal_naive - actual) ^ 2)) AS seasonal_naive_rmse
                FROM holdout GROUP BY horizon
            )
            SELECT *, 1 - rmse / nullif(persistence_rmse, 0) AS skill_vs_persistence
            FROM per_horizon ORDER BY horizon
        """).df()
    recorded = by_horizon or {}
    table["trained_rmse"] = [recorded.get(str(k), {}).get("rmse") for k in table["horizon"]]
    table["trained_p90_coverage"] = [recorded.get(str(k), {}).get("p90_coverage")
                                     for k in table["horizon"]]
    return table[columns].astype({"trained_rmse": "float64", "trained_p90_coverage": "float64"})


@st.cache_data(max_entries=64, show_spinner=False)
def error_by_load(frame: pd.DataFrame) -> pd.DataFrame:
    """One horizon's errors by decile of the actual load: per decile (1: the quietest tenth of
    the rows) and method, the range of actual values (``low``..``high``), the mean absolute error,
    the mean absolute error relative to the load (``|error| / max(actual, 1)``) and rows; one
    DuckDB query over :func:`errors`. Ties in the load are split by time."""
    columns = ["decile", "load", "method", "low", "high", "mae", "relative_mae", "rows"]
    long = errors(frame)
    if long.empty:
        return pd.DataFrame(columns=columns)
    with duckdb.connect() as con:
        con.register("errors", long)
        con.register("shown", frame[["ts", "actual"]])
        table = con.execute(f"""
            WITH deciles AS (
                SELECT ts, ntile({DECILES}) OVER (ORDER BY actual, ts) AS decile FROM shown
            ), bounds AS (
                SELECT decile, min(actual) AS low, max(actual) AS high
                FROM shown JOIN deciles USING (ts) GROUP BY decile
            )
            SELECT decile, method, low, high, avg(abs(error)) AS mae,
                   avg(abs(relative_error)) AS relative_mae, count(*) AS rows
            FROM errors JOIN deciles USING (ts) JOIN bounds USING (decile)
            GROUP BY decile, method, low, high
            ORDER BY decile, list_position({_order()}, method)
        """).df()
    table["load"] = [f"D{d}: {lo:,.4g}–{hi:,.4g}" for d, lo, hi in
                     zip(table["decile"], table["low"], table["high"], strict=True)]
    return table[columns]
