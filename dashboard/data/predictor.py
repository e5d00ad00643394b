"""The Predictor page's data: which predictor to show, the queue_metrics datasets of the data home,
and the predictor's forecasts on a dataset's holdout next to the actual values and the two
baselines, with the error metrics of each (one DuckDB query).

The predictor is the registry's ``predictor`` champion (or its challenger, on request) when there
is a registry, else the trainer's default checkpoint ``<home>/models/predictor_lgbm.pkl``. The
holdout is what the trainer holds out (``ml.predictor.train.prepare``): the model's features on
the dataset, the rows with a label and a last known value, the latest 20% of them; scored on the
rows where every baseline exists (``scoring_rows``), as ``score`` does. On the dataset the model
was trained on, these are exactly the rows of its registered ``holdout_rmse``.
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


@dataclass
class Holdout:
    """One row per scored holdout row: ``ts``, ``actual`` and a column per method (NaN for
    seasonal_naive with less than a day of history); what it covers, and whether the dataset is
    the one the model was trained on (None: the model does not say)."""

    frame: pd.DataFrame
    rows: int  # the usable rows of the whole dataset
    same_data: bool | None
    methods: tuple[str, ...]


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


def model_details(choice: ModelChoice) -> dict[str, Any]:
    """What the page says about a predictor: kind, target, when and on what it was trained."""
    found = model(choice)
    meta = found.metadata
    return {"kind": found.kind, "target": found.spec.target, "horizon": found.spec.horizon,
            "features": len(found.spec.features), "created_at": meta.get("created_at"),
            "data": meta.get("data", {}).get("path"),
            "holdout_window": meta.get("holdout_window"),
            "holdout_rmse": meta.get("metrics", {}).get("holdout", {}).get("rmse")}


# ------------------------------------------------------------------------------ the datasets
@st.cache_data(ttl=30, show_spinner=False)
def datasets() -> list[Dataset]:
    """Every ``data/<source>/queue_metrics.csv`` of the data home."""
    current = settings()
    return [Dataset(path.parent.name, str(path))
            for path in sorted(current.data_dir.glob(f"*/{DATASET}")) if path.is_file()]


# ------------------------------------------------------------------------------- the holdout
@st.cache_data(max_entries=16, show_spinner="Scoring the holdout…")
def holdout(choice: ModelChoice, dataset: str, modified: float | None = None) -> Holdout:
    """The chosen predictor and the baselines on ``dataset``'s holdout (``modified``: the file's
    mtime, so a rewritten dataset is read again; :func:`dataset_mtime`)."""
    from ml.predictor.data import DataError, load_table
    from ml.predictor.features import build_features
    from ml.predictor.train import scoring_rows, usable_rows

    predictor = model(choice)
    try:
        table = load_table(dataset, target=predictor.spec.target)
        usable = usable_rows(build_features(table, predictor.spec))
        cut = int(round(len(usable) * (1.0 - HOLDOUT_FRACTION)))
        rows, baselines = scoring_rows(usable.iloc[cut:])
        scored = usable.iloc[cut:][rows]
        if scored.empty:
            raise DataError(f"{dataset}: no holdout rows to score")
        forecast = predictor.predict(scored)
    except DataError as error:
        raise HoldoutError(str(error)) from None
    fingerprint = predictor.metadata.get("data", {}).get("fingerprint")
    frame = pd.DataFrame({
        "ts": pd.to_datetime(scored["ts"], utc=True).to_numpy(),
        "actual": scored["label"].to_numpy(dtype=np.float64),
        "model": forecast,
        **{b: scored[b].to_numpy(dtype=np.float64) if b in baselines else np.nan
           for b in METHODS[1:]},
    })
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return Holdout(frame=frame, rows=len(usable),
                   same_data=None if fingerprint is None else fingerprint == table.fingerprint,
                   methods=("model", *baselines))


def dataset_mtime(path: str) -> float | None:
    return Path(path).stat().st_mtime if Path(path).exists() else None


def errors(frame: pd.DataFrame) -> pd.DataFrame:
    """The holdout as long rows: ts, method, forecast, actual, error (forecast − actual); a
    method without a forecast on a row (seasonal-naive early in a segment) has no row."""
    methods = [m for m in METHODS if m in frame.columns]
    long = frame.melt(id_vars=["ts", "actual"], value_vars=methods, var_name="method",
                      value_name="forecast").dropna(subset=["forecast"])
    long["error"] = long["forecast"] - long["actual"]
    return long[["ts", "method", "forecast", "actual", "error"]].reset_index(drop=True)


def metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method (model, persistence, seasonal_naive): RMSE, MAE, bias (mean of forecast −
    actual: above zero forecasts too high), the largest miss, rows, and skill against
    persistence (1 − RMSE / persistence's RMSE); one DuckDB query over :func:`errors`."""
    columns = ["method", "rmse", "mae", "bias", "max_abs_error", "rows", "skill_vs_persistence"]
    long = errors(frame)
    if long.empty:
        return pd.DataFrame(columns=columns)
    order = "[" + ", ".join(f"'{m}'" for m in METHODS) + "]"
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
            FROM per_method ORDER BY list_position({order}, method)
        """).df()[columns]
