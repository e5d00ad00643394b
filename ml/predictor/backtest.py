"""Rolling-origin backtest of the predictor against the forecasters people use first.

The usable rows are cut into ``folds + 1`` consecutive slices. Fold i refits everything on slices
0..i (an expanding window: the estimators early-stop on, and calibrate their intervals on, the
latest 10% of it; the base column is chosen on the rest) and forecasts slice i + 1. Features only
ever read a row's past (:mod:`ml.predictor.features`), so no fold sees its test slice.

Forecasts are scored at *origins*: every ``stride``-th row of a test slice, each forecasting every
horizon. At the same origins, on the same targets, the baselines forecast too:

- persistence (the last known value) and seasonal-naive (the same minute one day before);
- statsforecast's ``AutoETS`` (exponential smoothing, its form chosen by AICc) and ``MSTL``
  (LOESS seasonal decomposition with a daily season; AutoETS on the deseasonalised rest), both
  fitted per fold on the fold's training part. From an origin each forecasts with its fitted
  parameters over the data up to the origin: AutoETS through ``forward`` (its state recursion
  run to the origin), MSTL as its own ``predict`` does - the last fitted season carried forward
  plus its trend model run forward over the deseasonalised data. MSTL is fitted on the latest
  ``mstl_days`` days of the training part (a full-history LOESS over weeks of minutes takes
  minutes per fold and its latest season is what it forecasts with). Rows are taken in order;
  a gap in the timestamps is not filled. A model that some fold cannot fit (MSTL needs two days
  of training rows) is left out of the comparison, and the report names it (``left_out``).

Per horizon the report gives RMSE, MAE and MASE (MAE over the training part's mean absolute
one-step change: below 1 beats a naive forecast's in-sample error) for the model and every
baseline, the best baseline, the model's improvement over it, and the p90 forecast's coverage.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml.predictor.data import DataError
from ml.predictor.features import label_column, seasonal_naive_column
from ml.predictor.metrics import rmse
from ml.predictor.train import VALIDATION_FRACTION, default_lgbm_params, fit_model, prepare

STATISTICAL = ("auto_ets", "mstl")
#: Origins per fold when no stride is given: enough for stable errors, few enough that the
#: statistical models' per-origin forecasts stay seconds.
ORIGINS_PER_FOLD = 1000


def statistical_forecasts(known: np.ndarray, train_end: int, origins: np.ndarray, steps: int,
                          season: int, mstl_days: int) -> tuple[dict[str, np.ndarray], dict]:
    """(origins, steps) forecasts of each statsforecast model fitted on ``known[:train_end]``,
    from each origin (forecast j is of known[origin + 1 + j]), and each model's fit seconds."""
    from statsforecast.models import MSTL, AutoETS

    forecasts, seconds = {}, {}
    started = time.perf_counter()
    ets = AutoETS(season_length=1).fit(known[:train_end])
    forecasts["auto_ets"] = np.stack([ets.forward(y=known[:o + 1], h=steps)["mean"]
                                      for o in origins])
    seconds["auto_ets"] = time.perf_counter() - started
    if train_end >= 2 * season:
        started = time.perf_counter()
        start = max(0, train_end - mstl_days * season)
        mstl = MSTL(season_length=[season], trend_forecaster=AutoETS(model="ZZN"))
        mstl.fit(known[start:train_end])
        last_season = mstl.model_["seasonal"].to_numpy()[-season:]
        positions = np.arange(len(known))
        seasonal = last_season[(positions - train_end) % season]  # carried forward, as predict does
        seasonal[start:train_end] = mstl.model_["seasonal"].to_numpy()
        rest = known - seasonal
        forecasts["mstl"] = np.stack([
            mstl.trend_forecaster.forward(y=rest[start:o + 1], h=steps)["mean"]
            + seasonal[np.minimum(o + 1 + np.arange(steps), len(known) - 1)]
            for o in origins])
        seconds["mstl"] = time.perf_counter() - started
    return forecasts, seconds


def mase_scale(known: np.ndarray) -> float:
    """The mean absolute one-step change of the training part (MASE's denominator)."""
    changes = np.abs(np.diff(known[~np.isnan(known)]))
    return float(changes.mean()) if len(changes) and changes.mean() > 0 else float("nan")


def backtest_predictor(
    data: str | Path,
    target: str | None,
    *,
    folds: int = 4,
    kind: str = "lgbm",
    horizon: int | None = None,
    horizons: tuple[int, ...] | None = None,
    seed: int = 0,
    stride: int | None = None,
    statistical: bool = True,
    mstl_days: int = 7,
) -> dict[str, Any]:
    """The rolling-origin backtest described in the module's docstring."""
    if folds < 1:
        raise DataError("folds must be >= 1")
    prepared = prepare(data, target, horizon=horizon, horizons=horizons)  # the folds replace its split
    spec, frame = prepared.spec, prepared.frame
    steps_ahead = {k: k + spec.offset for k in spec.forecast_horizons}  # from the last known value
    longest = max(steps_ahead.values())
    known = frame["persistence"].to_numpy(np.float64)
    edges = np.linspace(0, len(frame), folds + 2).astype(int)
    collected: dict[int, dict[str, list[np.ndarray]]] = {k: {} for k in spec.forecast_horizons}
    fit_seconds: dict[str, float] = {"model": 0.0}
    fold_reports, scales = [], []
    for i in range(folds):
        end, test_end = edges[i + 1], edges[i + 2]
        split = int(end * (1 - VALIDATION_FRACTION))
        if split < 50 or test_end - end < 10:
            raise DataError(f"{data}: too few rows for {folds} folds")
        fold = dataclasses.replace(prepared, train=np.arange(split), valid=np.arange(split, end),
                                   holdout=np.arange(end, test_end), base="")
        started = time.perf_counter()
        params = default_lgbm_params(seed) if kind == "lgbm" else None
        model = fit_model(fold, fold.train, fold.valid, kind=kind, params=params, seed=seed,
                          progress=False)
        fit_seconds["model"] += time.perf_counter() - started
        every = stride or max(1, math.ceil((test_end - end) / ORIGINS_PER_FOLD))
        origins = np.arange(end, test_end, every)
        origins = origins[origins + longest < len(frame)]
        stats: dict[str, np.ndarray] = {}
        if statistical:
            stats, seconds = statistical_forecasts(known, end, origins, longest, spec.season, mstl_days)
            for name, value in seconds.items():
                fit_seconds[name] = fit_seconds.get(name, 0.0) + value
        scale = mase_scale(known[:end])
        scales.append(scale)
        at = frame.iloc[origins]
        forecast = model.forecast(at)
        fold_report: dict[str, Any] = {"train_rows": int(end), "origins": len(origins),
                                       "test_window": [str(frame["ts"].iloc[end]),
                                                       str(frame["ts"].iloc[test_end - 1])]}
        for k, ahead in steps_ahead.items():
            actual = at[label_column(spec, k)].to_numpy(np.float64)
            candidates = {"model": forecast[f"h{k}"].to_numpy(),
                          "p90": forecast[f"h{k}_p90"].to_numpy(),
                          "persistence": at["persistence"].to_numpy(np.float64),
                          "seasonal_naive": at[seasonal_naive_column(spec, k)].to_numpy(np.float64),
                          **{name: values[:, ahead - 1] for name, values in stats.items()}}
            keep = ~np.isnan(actual)
            for values in candidates.values():
                keep &= ~np.isnan(values)
            for name, values in {"actual": actual, **candidates}.items():
                collected[k].setdefault(name, []).append(values[keep])
            collected[k].setdefault("scale", []).append(np.full(int(keep.sum()), scale))
            fold_report[str(k)] = {
                "rmse": rmse(actual[keep], candidates["model"][keep]),
                "baselines": {n: rmse(actual[keep], v[keep]) for n, v in candidates.items()
                              if n not in ("model", "p90")}}
        fold_reports.append(fold_report)
    by_horizon = {str(k): _summarise(parts) for k, parts in collected.items()}
    return {"target": spec.target, "model": kind, "folds": len(fold_reports),
            "horizons": list(spec.forecast_horizons), "base": prepared.base,
            "baselines": ["persistence", "seasonal_naive", *(STATISTICAL if statistical else ())],
            "by_horizon": by_horizon, "fit_seconds": fit_seconds,
            "left_out": sorted(set(STATISTICAL if statistical else ())
                               - set(next(iter(by_horizon.values()))["baselines"])),
            "fold_results": fold_reports,
            "mase_scale": float(np.nanmean(scales))}


def _summarise(parts: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """One horizon's figures over every fold's origins."""
    joined = {name: np.concatenate(values) for name, values in parts.items()}
    actual, scale = joined.pop("actual"), joined.pop("scale")
    # A model some fold could not fit (MSTL needs two seasons of training rows) is left out.
    joined = {name: values for name, values in joined.items() if len(values) == len(actual)}
    p90 = joined.pop("p90")

    def errors(forecast: np.ndarray) -> dict[str, float]:
        absolute = np.abs(actual - forecast)
        return {"rmse": rmse(actual, forecast), "mae": float(absolute.mean()),
                "mase": float(np.mean(absolute / scale))}

    model = errors(joined.pop("model"))
    baselines = {name: errors(values) for name, values in joined.items()}
    best = min(baselines, key=lambda name: baselines[name]["rmse"])
    best_rmse = baselines[best]["rmse"]
    return {**model, "p90_coverage": float(np.mean(actual <= p90)), "origins": len(actual),
            "baselines": baselines, "best_baseline": best,
            "improvement_vs_best_baseline": 1 - model["rmse"] / best_rmse if best_rmse > 0 else None}
