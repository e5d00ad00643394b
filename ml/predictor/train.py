"""Train, evaluate and backtest predictors; the functions behind the trainer's commands.

Splits are time-ordered. The holdout is the latest ``holdout_fraction`` of the usable rows (rows
whose label exists); LightGBM early-stops on the latest 10% of the rest. Every score comes with
the two baselines computed on exactly the same rows - persistence (the last known value) and
seasonal-naive (the same time one day earlier) - and the model's skill against each.
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
from ml.predictor.features import FeatureSpec, build_features
from ml.predictor.metrics import regression_metrics, skill
from ml.predictor.model import PredictorModel, library_versions

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
        "num_leaves": 31,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "min_data_in_leaf": 20,
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

    def __post_init__(self) -> None:
        self._features = self.frame[self.spec.features].to_numpy(dtype=np.float64)
        # What the estimator learns: the label minus the last known value.
        self._changes = (self.frame["label"] - self.frame["persistence"]).to_numpy(np.float64)

    def matrix(self, rows: np.ndarray) -> np.ndarray:
        return self._features[rows]

    def changes(self, rows: np.ndarray) -> np.ndarray:
        return self._changes[rows]

    def window(self, rows: np.ndarray) -> dict[str, Any]:
        stamps = self.frame["ts"].iloc[rows]
        return {"start": str(stamps.min()), "end": str(stamps.max()), "rows": len(rows)}


def usable_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a label and a last known value (the model predicts the change between them)."""
    return frame[frame["label"].notna() & frame["persistence"].notna()].reset_index(drop=True)


def prepare(
    data: str | Path,
    target: str,
    *,
    horizon: int | None = None,
    holdout_fraction: float = 0.2,
    timestamp: str = "timestamp",
) -> Prepared:
    """Load, build features, keep the usable rows and split them in time."""
    if not 0.0 < holdout_fraction < 1.0:
        raise DataError(f"holdout fraction must be in (0, 1), got {holdout_fraction}")
    table = load_table(data, target=target, timestamp=timestamp)
    spec = FeatureSpec.for_table(table, horizon=horizon)
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


def scoring_rows(frame: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """The rows every score uses: label and both baselines present (a day of history in the
    segment). With fewer than 10 such rows the seasonal baseline is left out."""
    has_label = frame["label"].notna() & frame["persistence"].notna()
    rows = has_label & frame["seasonal_naive"].notna()
    if rows.sum() >= 10:
        return rows, list(BASELINES)
    if has_label.sum() == 0:
        raise DataError("no rows to score: every row lacks a label or a last known value")
    return has_label, ["persistence"]


def score(model: PredictorModel, frame: pd.DataFrame) -> dict[str, Any]:
    """Metrics of ``model`` and of the baselines on the same rows of ``frame``."""
    rows, baselines = scoring_rows(frame)
    scored = frame[rows]
    y = scored["label"].to_numpy(dtype=np.float64)
    result: dict[str, Any] = regression_metrics(y, model.predict(scored))
    result["baselines"] = {b: regression_metrics(y, scored[b].to_numpy()) for b in BASELINES
                           if b in baselines}
    result["skill"] = {b: skill(result["rmse"], result["baselines"][b]["rmse"]) for b in baselines}
    if "seasonal_naive" not in baselines:
        result["note"] = "less than a day of history: no seasonal-naive baseline"
    return result


# ---------------------------------------------------------------------------------- commands
def train_predictor(
    data: str | Path,
    target: str,
    ckpt: str | Path,
    *,
    kind: str = "lgbm",
    horizon: int | None = None,
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
    prepared = prepare(data, target, horizon=horizon, holdout_fraction=holdout_fraction)
    if len(prepared.holdout) < 10 or len(prepared.valid) < 10:
        raise DataError(f"{data}: too few rows to split into train, validation and holdout")
    x_train, y_train = prepared.matrix(prepared.train), prepared.changes(prepared.train)
    x_valid, y_valid = prepared.matrix(prepared.valid), prepared.changes(prepared.valid)
    curve: list[float] = []
    if kind == "lgbm":
        import lightgbm as lgb

        params = {**default_lgbm_params(seed), **(params or {})}
        history: dict[str, Any] = {}
        estimator = fit_lgbm(x_train, y_train, x_valid, y_valid, params, progress=progress,
                             callbacks=[lgb.record_evaluation(history)])
        best_iteration = estimator.best_iteration
        curve = [float(v) for v in history["valid"]["rmse"]]
    else:
        if params:
            raise DataError("--params applies to LightGBM only")
        params = {"n_estimators": 100, "min_samples_leaf": 5, "max_features": 0.5, "seed": seed}
        rows = np.concatenate([prepared.train, prepared.valid])
        estimator = fit_random_forest(prepared.matrix(rows), prepared.changes(rows), seed)
        best_iteration = None
    model = PredictorModel(kind=kind, spec=prepared.spec, estimator=estimator)
    holdout = score(model, prepared.frame.iloc[prepared.holdout])
    model.metadata = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": params,
        "best_iteration": best_iteration,
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
        "target": target,
        "horizon": prepared.spec.horizon,
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


def backtest_predictor(
    data: str | Path,
    target: str,
    *,
    folds: int = 4,
    kind: str = "lgbm",
    horizon: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Rolling-origin backtest: fold i trains on everything before its test slice.

    The usable rows are cut into ``folds + 1`` consecutive slices; fold i trains on slices
    0..i (early-stopping on the last 10% of them) and is scored on slice i + 1."""
    if folds < 1:
        raise DataError("folds must be >= 1")
    prepared = prepare(data, target, horizon=horizon)  # the folds replace its split
    spec, frame = prepared.spec, prepared.frame
    everything = np.arange(len(frame))
    x_all, y_all = prepared.matrix(everything), prepared.changes(everything)
    edges = np.linspace(0, len(frame), folds + 2).astype(int)
    results = []
    for i in range(folds):
        end, test_end = edges[i + 1], edges[i + 2]
        split = int(end * (1 - VALIDATION_FRACTION))
        if kind == "lgbm":
            estimator = fit_lgbm(x_all[:split], y_all[:split], x_all[split:end], y_all[split:end],
                                 default_lgbm_params(seed), progress=False)
        else:
            estimator = fit_random_forest(x_all[:end], y_all[:end], seed)
        model = PredictorModel(kind=kind, spec=spec, estimator=estimator)
        fold = score(model, frame.iloc[end:test_end])
        fold["train_rows"], fold["test_window"] = int(end), [
            str(frame["ts"].iloc[end]), str(frame["ts"].iloc[test_end - 1])
        ]
        results.append(fold)
    summary = {
        "rmse": float(np.mean([f["rmse"] for f in results])),
        **{f"rmse_{b}": float(np.mean([f["baselines"][b]["rmse"] for f in results
                                       if f["baselines"].get(b)])) for b in BASELINES},
    }
    return {"target": target, "model": kind, "folds": results, "mean": summary}
