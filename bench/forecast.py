"""Forecast benchmark: the predictor's rolling-origin backtest against persistence, seasonal-naive
and statsforecast's AutoETS and MSTL, per horizon; and ``train_predictor``'s overhead over
LightGBM called directly on the same matrices, on the whole trace and on a 20,000-row slice.

All measured in one run on the same data (default: the NASA trace, requests per minute); any
``timestamp,<count>`` table works. Timings alternate ours and raw LightGBM so both see the same
machine, and are medians of ``--repeats`` runs. The last line printed is one JSON object.

    .venv/bin/python bench/forecast.py [--data CSV] [--target COL] [--folds 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from ml.predictor.backtest import backtest_predictor
from ml.predictor.train import (
    EARLY_STOPPING_ROUNDS,
    NUM_BOOST_ROUND,
    default_lgbm_params,
    prepare,
    train_predictor,
)
from prioritymax.settings import get_settings

SLICE_ROWS = 20_000


def raw_lightgbm_seconds(data: Path, target: str | None) -> float:
    """``lightgbm.train`` alone, on the matrices train_predictor builds, once per horizon."""
    import lightgbm as lgb

    prepared = prepare(data, target)
    started = time.perf_counter()
    for k in prepared.spec.forecast_horizons:
        train, valid = prepared.labelled(prepared.train, k), prepared.labelled(prepared.valid, k)
        train_set = lgb.Dataset(prepared.matrix(train), prepared.changes(train, k))
        valid_set = lgb.Dataset(prepared.matrix(valid), prepared.changes(valid, k), reference=train_set)
        lgb.train(default_lgbm_params(), train_set, num_boost_round=NUM_BOOST_ROUND,
                  valid_sets=[valid_set], callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS,
                                                                        verbose=False)])
    return time.perf_counter() - started


def overhead(data: Path, target: str | None, repeats: int) -> dict[str, float]:
    """train_predictor (CSV to saved checkpoint, every horizon) over raw LightGBM."""
    ours, raw = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            started = time.perf_counter()
            train_predictor(data, target, Path(folder) / "p.pkl", progress=False)
            ours.append(time.perf_counter() - started)
            raw.append(raw_lightgbm_seconds(data, target))
    return {"ours": statistics.median(ours), "raw": statistics.median(raw),
            "ratio": statistics.median(ours) / statistics.median(raw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="CSV (default: the NASA trace)")
    parser.add_argument("--target", default=None, help="column to forecast [default: the load]")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = args.data or get_settings().trace_path

    result = backtest_predictor(data, args.target, folds=args.folds)
    horizons = result["by_horizon"]
    print(f"rolling-origin backtest of {result['target']}: {result['folds']} folds, "
          f"{next(iter(horizons.values()))['origins']} origins per horizon, base {result['base']}")
    names = ["model", *next(iter(horizons.values()))["baselines"]]
    print("horizon  " + "".join(f"{n:>16}" for n in names) + "   best baseline   improvement  p90 cover")
    for k, h in horizons.items():
        rmses = [h["rmse"], *(b["rmse"] for b in h["baselines"].values())]
        print(f"{k:>7}  " + "".join(f"{r:16.3f}" for r in rmses) +
              f"   {h['best_baseline']:>13}   {h['improvement_vs_best_baseline']:+10.1%}"
              f"  {h['p90_coverage']:9.3f}")
    if result["left_out"]:
        print(f"left out (a fold could not fit them): {result['left_out']}")

    whole = overhead(data, args.target, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        sliced = Path(folder) / "slice.csv"
        pd.read_csv(data).iloc[-SLICE_ROWS:].to_csv(sliced, index=False)
        small = overhead(sliced, args.target, args.repeats)
    for name, figures in (("whole trace", whole), (f"{SLICE_ROWS:,}-row slice", small)):
        print(f"train_predictor vs raw lightgbm.train, {name}: {figures['ours']:.2f} s vs "
              f"{figures['raw']:.2f} s ({figures['ratio']:.2f}x)")
    fit = result["fit_seconds"]
    figures = {
        "rmse_by_horizon": {k: h["rmse"] for k, h in horizons.items()},
        "mase_by_horizon": {k: h["mase"] for k, h in horizons.items()},
        "best_baseline_by_horizon": {k: h["best_baseline"] for k, h in horizons.items()},
        "improvement_vs_best_baseline_by_horizon": {
            k: h["improvement_vs_best_baseline"] for k, h in horizons.items()},
        "p90_coverage_by_horizon": {k: h["p90_coverage"] for k, h in horizons.items()},
        "baseline_rmse_by_horizon": {k: {n: b["rmse"] for n, b in h["baselines"].items()}
                                     for k, h in horizons.items()},
        "overhead_vs_raw_lightgbm": whole["ratio"],
        "overhead_vs_raw_lightgbm_slice": small["ratio"],
        "fit_seconds": {"ours": fit["model"],
                        "statsforecast": sum(v for n, v in fit.items() if n != "model"),
                        **{n: v for n, v in fit.items() if n != "model"}},
        "folds": result["folds"],
        "data": str(data),
        "target": result["target"],
    }
    print(json.dumps(_rounded(figures)))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    main()
