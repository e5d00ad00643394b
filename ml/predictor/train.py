"""Train, evaluate and backtest predictors; the functions behind the trainer's commands.

Splits are time-ordered. The holdout is the latest ``holdout_fraction`` of the usable rows (rows
whose label exists); LightGBM early-stops on the latest 10% of the rest, and those validation rows
also calibrate the forecast's conformal quantiles. One model is fit per forecast horizon. Every
score comes with the two baselines computed on exactly the same rows - persistence (the last known
value) and seasonal-naive (the same time one day earlier) - and the model's skill against each;
the rolling-origin backtest against the statistical models lives in :mod:`ml.predictor.backtest`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.predictor.data import DataError, Table, load_table
from ml.predictor.features import (
    FeatureSpec,
    build_features,
    label_column,
    seasonal_naive_column,
)
from ml.predictor.metrics import regression_metrics, skill
from ml.predictor.model import QUANTILES, Interval, PredictorModel, library_versions

log = logging.getLogger(__name__)

MODEL_KINDS = ("lgbm", "rf")
NUM_BOOST_ROUND = 2000
EARLY_STOPPING_ROUNDS = 50
VALIDATION_FRACTION = 0.1
BASELINES = ("persistence", "seasonal_naive")


def default_lgbm_params(seed: int = 0) -> dict[str, Any]:
    return {
        "objective": "regression",
        "metric": "rmse",
        "learning_rate": 0.05,
        # Regularised for noisy counts: small leaves fit the noise of a busy minute.
        "num_leaves": 15,
        "feature_fraction": 0.7,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "min_data_in_leaf": 200,
        "lambda_l2": 10.0,
        "num_threads": os.cpu_count() or 1,
        "seed": seed,
        "verbose": -1,
    }


@dataclass
class Prepared:
    """Features of one table, as a frame and as the matrices the estimators take, and the
    table's time-ordered split into train / valid / holdout rows."""

    table: Table
    spec: FeatureSpec
    frame: pd.DataFrame  # usable rows only (label present), in time order
    train: np.ndarray  # positional indices into frame
    valid: np.ndarray
    holdout: np.ndarray
    base: str = ""  # the column the estimators predict the change from (chosen on train rows)

    def __post_init__(self) -> None:
        self._features = self.frame[self.spec.features].to_numpy(dtype=np.float64)
        self.base = self.base or choose_base(self.frame.iloc[self.train], self.spec)
        self._base = self.frame[self.base].to_numpy(np.float64)

    def matrix(self, rows: np.ndarray) -> np.ndarray:
        return self._features[rows]

    def labelled(self, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """The rows among ``rows`` whose target ``horizon`` steps ahead exists."""
        label = self.frame[label_column(self.spec, self.horizon_or_first(horizon))]
        return rows[label.notna().to_numpy()[rows]]

    def changes(self, rows: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """What the estimator learns: the label ``horizon`` steps ahead minus the base."""
        label = self.frame[label_column(self.spec, self.horizon_or_first(horizon))]
        return label.to_numpy(np.float64)[rows] - self._base[rows]

    def horizon_or_first(self, horizon: int | None) -> int:
        return self.spec.forecast_horizons[0] if horizon is None else horizon

    def window(self, rows: np.ndarray) -> dict[str, Any]:
        stamps = self.frame["ts"].iloc[rows]
        return {"start": str(stamps.min()), "end": str(stamps.max()), "rows": len(rows)}


def choose_base(rows: pd.DataFrame, spec: FeatureSpec) -> str:
    """The known-at-the-row column closest to the next label on ``rows`` (training rows only):
    the last value, or an exponentially weighted mean of the known target. A smooth base leaves
    the trees less noise to undo; a spiky series (a queue) keeps the last value."""
    label = rows["label"].to_numpy(np.float64)
    candidates = ["persistence", *spec.ewm_features()]
    errors = {c: float(np.nanmean((label - rows[c].to_numpy(np.float64)) ** 2)) for c in candidates}
    return min(candidates, key=lambda c: errors[c])


def usable_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a label and a last known value (the model predicts the change between them)."""
    return frame[frame["label"].notna() & frame["persistence"].notna()].reset_index(drop=True)


def prepare(
    data: str | Path,
    target: str | None,
    *,
    horizon: int | None = None,
    horizons: tuple[int, ...] | None = None,
    holdout_fraction: float = 0.2,
    timestamp: str = "timestamp",
) -> Prepared:
    """Load, build features, keep the usable rows and split them in time."""
    if not 0.0 < holdout_fraction < 1.0:
        raise DataError(f"holdout fraction must be in (0, 1), got {holdout_fraction}")
    table = load_table(data, target=target, timestamp=timestamp)
    spec = FeatureSpec.for_table(table, horizon=horizon, horizons=horizons)
    frame = usable_rows(build_features(table, spec))
    n = len(frame)
    cut = int(round(n * (1.0 - holdout_fraction)))
    valid_start = int(round(cut * (1.0 - VALIDATION_FRACTION)))
    return Prepared(
        table=table,
        spec=spec,
        frame=frame,
        train=np.arange(valid_start),
        valid=np.arange(valid_start, cut),
        holdout=np.arange(cut, n),
    )


# ---------------------------------------------------------------------------------- fitting
def fit_lgbm(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    params: dict[str, Any],
    *,
    num_boost_round: int = NUM_BOOST_ROUND,
    progress: bool | None = None,
    callbacks: list | None = None,
):
    """LightGBM with early stopping on the validation rows; a progress bar on a terminal."""
    import lightgbm as lgb
    from tqdm.auto import tqdm

    # progress None: a bar only on a terminal (tqdm's disable=None); True / False force it.
    bar = tqdm(total=num_boost_round, desc="boosting", unit="round", leave=False,
               disable=None if progress is None else not progress)

    def advance(env) -> None:
        bar.update(1)

    train_set = lgb.Dataset(x_train, y_train, free_raw_data=True)
    valid_set = lgb.Dataset(x_valid, y_valid, reference=train_set)
    try:
        return lgb.train(
            params,
            train_set,
            num_boost_round=num_boost_round,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False), advance,
                       *(callbacks or [])],
        )
    finally:
        bar.close()


def fit_random_forest(x: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(
        n_estimators=100, min_samples_leaf=5, max_features=0.5, n_jobs=-1, random_state=seed
    )
    return forest.fit(x, y)


def scoring_rows(frame: pd.DataFrame, spec: FeatureSpec | None = None,
                 horizon: int | None = None) -> tuple[pd.Series, list[str]]:
    """The rows every score of a horizon uses: its label and both baselines present (a day of
    history in the segment). With fewer than 10 such rows the seasonal baseline is left out."""
    label, seasonal = (("label", "seasonal_naive") if spec is None or horizon is None else
                       (label_column(spec, horizon), seasonal_naive_column(spec, horizon)))
    has_label = frame[label].notna() & frame["persistence"].notna()
    rows = has_label & frame[seasonal].notna()
    if rows.sum() >= 10:
        return rows, list(BASELINES)
    if has_label.sum() == 0:
        raise DataError("no rows to score: every row lacks a label or a last known value")
    return has_label, ["persistence"]


def score_horizon(model: PredictorModel, frame: pd.DataFrame, horizon: int) -> dict[str, Any]:
    """Metrics of ``model``'s forecast ``horizon`` steps ahead and of the baselines on the same
    rows, with the share of actual values at or under the p90 forecast."""
    spec = model.spec
    rows, baselines = scoring_rows(frame, spec, horizon)
    scored = frame[rows]
    y = scored[label_column(spec, horizon)].to_numpy(dtype=np.float64)
    mean = model.predict(scored, horizon)
    result: dict[str, Any] = regression_metrics(y, mean)
    columns = {"persistence": "persistence", "seasonal_naive": seasonal_naive_column(spec, horizon)}
    result["baselines"] = {b: regression_metrics(y, scored[columns[b]].to_numpy()) for b in baselines}
    result["skill"] = {b: skill(result["rmse"], result["baselines"][b]["rmse"]) for b in baselines}
    if horizon in model.intervals:
        result["p90_coverage"] = float(np.mean(y <= model.quantile(scored, horizon, 0.9, mean)))
    if "seasonal_naive" not in baselines:
        result["note"] = "less than a day of history: no seasonal-naive baseline"
    return result


def score(model: PredictorModel, frame: pd.DataFrame) -> dict[str, Any]:
    """The first horizon's metrics (the seed's single forecast) and ``by_horizon``: each
    horizon's (:func:`score_horizon`), keyed by the horizon as text."""
    by_horizon = {str(k): score_horizon(model, frame, k) for k in model.horizons}
    return {**by_horizon[str(model.horizons[0])], "by_horizon": by_horizon}


def fit_model(prepared: Prepared, train: np.ndarray, valid: np.ndarray, *, kind: str = "lgbm",
              params: dict[str, Any] | None = None, seed: int = 0, progress: bool | None = None,
              curve: list[float] | None = None) -> PredictorModel:
    """One estimator per horizon on ``train`` rows (LightGBM early-stops on ``valid``), and each
    horizon's conformal quantiles calibrated on ``valid``, which the fit never learnt from.
    ``curve``, when given, receives the first horizon's validation RMSE per boosting round."""
    import lightgbm as lgb

    estimators, intervals = {}, {}
    spec = prepared.spec
    scale_column = f"{spec.target}_std{max(spec.windows)}"
    for k in spec.forecast_horizons:
        rows, held = prepared.labelled(train, k), prepared.labelled(valid, k)
        x, y = prepared.matrix(rows), prepared.changes(rows, k)
        if kind == "lgbm":
            history: dict[str, Any] = {}
            estimator = fit_lgbm(x, y, prepared.matrix(held), prepared.changes(held, k), params or {},
                                 progress=progress, callbacks=[lgb.record_evaluation(history)])
            if curve is not None and not curve:
                curve.extend(float(v) for v in history["valid"]["rmse"])
        else:
            estimator = fit_random_forest(x, y, seed)
        estimators[k] = estimator
        model = PredictorModel(kind, spec, {k: estimator}, prepared.base)
        frame = prepared.frame.iloc[held]
        actual = frame[label_column(spec, k)].to_numpy(np.float64)
        intervals[k] = Interval.calibrate(frame, actual, model.predict(frame, k), scale_column)
    return PredictorModel(kind, spec, estimators, prepared.base, intervals)


# ---------------------------------------------------------------------------------- commands
def train_predictor(
    data: str | Path,
    target: str | None,
    ckpt: str | Path,
    *,
    kind: str = "lgbm",
    horizon: int | None = None,
    horizons: tuple[int, ...] | None = None,
    holdout_fraction: float = 0.2,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool | None = None,
    mlflow: bool = False,
    wandb: bool = False,
) -> tuple[PredictorModel, dict[str, Any]]:
    """Build features, fit, score on the holdout, save the checkpoint and its metadata; with
    ``mlflow`` / ``wandb`` also record the run (and register the model in MLflow)."""
    if kind not in MODEL_KINDS:
        raise DataError(f"unknown model {kind!r}; choose one of {MODEL_KINDS}")
    started = time.perf_counter()
    prepared = prepare(data, target, horizon=horizon, horizons=horizons,
                       holdout_fraction=holdout_fraction)
    if len(prepared.holdout) < 10 or len(prepared.valid) < 10:
        raise DataError(f"{data}: too few rows to split into train, validation and holdout")
    curve: list[float] = []
    if kind == "lgbm":
        params = {**default_lgbm_params(seed), **(params or {})}
    elif params:
        raise DataError("--params applies to LightGBM only")
    else:
        params = {"n_estimators": 100, "min_samples_leaf": 5, "max_features": 0.5, "seed": seed}
    model = fit_model(prepared, prepared.train, prepared.valid, kind=kind, params=params,
                      seed=seed, progress=progress, curve=curve)
    best_iteration = model.estimator.best_iteration if kind == "lgbm" else None
    holdout = score(model, prepared.frame.iloc[prepared.holdout])
    model.metadata = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": params,
        "best_iteration": best_iteration,
        "best_iterations": ({str(k): e.best_iteration for k, e in model.estimators.items()}
                            if kind == "lgbm" else None),
        "training_window": prepared.window(np.concatenate([prepared.train, prepared.valid])),
        "holdout_window": prepared.window(prepared.holdout),
        "metrics": {"holdout": holdout},
        "data": {
            "path": str(prepared.table.path),
            "fingerprint": prepared.table.fingerprint,
            "rows": prepared.table.rows,
            "interval_seconds": prepared.table.interval_seconds,
        },
        "libraries": library_versions(),
    }
    path = model.save(ckpt)
    result = {
        "ckpt": str(path),
        "model": kind,
        "target": prepared.spec.target,
        "horizon": prepared.spec.horizon,
        "horizons": list(model.horizons),
        "quantiles": list(QUANTILES),
        "base": model.base,
        "features": len(prepared.spec.features),
        "rows": {"train": len(prepared.train), "valid": len(prepared.valid),
                 "holdout": len(prepared.holdout)},
        "best_iteration": best_iteration,
        "holdout": holdout,
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("trained %s on %s: holdout rmse %.4f", kind, data, holdout["rmse"])
    if mlflow:
        from ml.predictor.tracking import log_to_mlflow

        example = prepared.frame.iloc[prepared.holdout[:200]]
        result["mlflow"] = log_to_mlflow(model, path, result, example, curve)
    if wandb:
        from ml.predictor.tracking import log_to_wandb

        result["wandb_dir"] = log_to_wandb(model, path, result, curve)
    return model, result


def evaluate_predictor(ckpt: str | Path, data: str | Path) -> dict[str, Any]:
    """Score a checkpoint on every usable row of ``data``."""
    model = PredictorModel.load(ckpt)
    return score(model, features_for(model, data))


def features_for(model: PredictorModel, data: str | Path) -> pd.DataFrame:
    """The model's features on another table, checked against the model's schema."""
    return build_features(load_table(data, target=model.spec.target), model.spec)
