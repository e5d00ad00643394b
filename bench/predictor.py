"""Predictor benchmark: our train_predictor against LightGBM called directly, DuckDB features
against the same features in pandas, and the model's holdout RMSE against both baselines.

All measured in one run on the same data (default: the NASA trace, forecasting next minute's
requests); any ``timestamp,<count>`` trace works. Timings are medians of ``--repeats`` runs.
The last line printed is one JSON object of the figures.

    .venv/bin/python bench/predictor.py [--data CSV] [--target requests] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ml.predictor.data import load_table
from ml.predictor.features import FeatureSpec, build_features
from ml.predictor.reference import build_features_pandas
from ml.predictor.train import default_lgbm_params, fit_lgbm, prepare, train_predictor
from prioritymax.settings import get_settings


def median_seconds(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="CSV (default: the NASA trace)")
    parser.add_argument("--target", default="requests")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = args.data or get_settings().trace_path

    prepared = prepare(data, args.target)
    x_train, y_train = prepared.matrix(prepared.train), prepared.changes(prepared.train)
    x_valid, y_valid = prepared.matrix(prepared.valid), prepared.changes(prepared.valid)
    # Alternate the two so that both see the same machine (timings drift on a shared host).
    ours_times, raw_times = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            seconds, (model, result) = median_seconds(
                lambda: train_predictor(data, args.target, Path(folder) / "p.pkl", progress=False), 1
            )
            ours_times.append(seconds)
            seconds, booster = median_seconds(
                lambda: fit_lgbm(x_train, y_train, x_valid, y_valid, default_lgbm_params(),
                                 progress=False), 1
            )
            raw_times.append(seconds)
    ours, raw = statistics.median(ours_times), statistics.median(raw_times)
    print(f"train_predictor (CSV to saved checkpoint)   {ours:8.2f} s")
    print(f"lightgbm.train on the same feature matrix    {raw:8.2f} s "
          f"({booster.best_iteration} rounds, ours {result['best_iteration']})")

    def duckdb_features():
        table = load_table(data, target=args.target)
        return build_features(table, FeatureSpec.for_table(table))

    duck, _ = median_seconds(duckdb_features, args.repeats)
    pandas, _ = median_seconds(lambda: build_features_pandas(data, prepared.spec), args.repeats)
    print(f"features, DuckDB (read, validate, query)     {duck:8.2f} s")
    print(f"features, pandas (read, compute)             {pandas:8.2f} s")

    holdout = result["holdout"]
    baselines = {name: values["rmse"] for name, values in holdout["baselines"].items()}
    best = min(baselines.values())
    improvement = 1 - holdout["rmse"] / best if best > 0 else None  # a perfect baseline: no ratio
    print(f"holdout RMSE: model {holdout['rmse']:.3f}, " +
          ", ".join(f"{k} {v:.3f}" for k, v in baselines.items()) +
          (f" ({improvement:.1%} below the better baseline)" if improvement is not None else ""))
    figures = {
        "overhead_vs_raw_lightgbm": ours / raw,
        "duckdb_vs_pandas_feature_speedup": pandas / duck,
        "rmse": holdout["rmse"],
        "rmse_persistence": baselines["persistence"],
        "rmse_seasonal_naive": baselines.get("seasonal_naive"),
        "improvement_vs_best_baseline": improvement,
        "train_predictor_seconds": ours,
        "raw_lightgbm_seconds": raw,
        "duckdb_feature_seconds": duck,
        "pandas_feature_seconds": pandas,
        "holdout_rows": holdout["rows"],
        "data": str(data),
        "target": args.target,
        "repeats": args.repeats,
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
