"""The simulator demo: the main job that `make up` runs on embedded defaults.

For a real trace (the NASA HTTP trace unless told otherwise) and for the synthetic profile:

1. replay the whole series through the simulator under the HPA rule and write the seed's
   ``queue_metrics.csv`` into the data home (``data/<source>/queue_metrics.csv``);
2. split the series in time (the latest ``holdout_fraction`` is held out) and run every baseline
   policy over the same seeded episodes of the holdout;
3. return one JSON-ready summary.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ml.sim.config import SimConfig
from ml.sim.dataset import TARGET, build_queue_metrics, dataset_path, write_queue_metrics
from ml.sim.evaluate import evaluate_policy
from ml.sim.policies import BASELINES, make_baseline
from ml.sim.traffic import RateSeries, load_trace, synthetic_series

log = logging.getLogger(__name__)


def summarize_source(
    series: RateSeries,
    *,
    data_dir: Path,
    config: SimConfig,
    episodes: int,
    holdout_fraction: float,
    seed: int,
) -> dict[str, Any]:
    """Dataset plus holdout evaluation of every baseline for one traffic series."""
    started = time.perf_counter()
    frame = build_queue_metrics(series, config=config, seed=seed)
    path = write_queue_metrics(frame, dataset_path(data_dir, series.name))
    log.info("%s: wrote %d rows to %s", series.name, len(frame), path)

    train, holdout = series.split(holdout_fraction)
    seeds = list(range(seed, seed + episodes))
    results = {}
    for name in BASELINES:
        evaluation = evaluate_policy(make_baseline(name, config), holdout, seeds=seeds, config=config)
        results[name] = evaluation.summary()
        log.info("%s: %s reward %.2f", series.name, name, results[name]["reward"]["mean"])
    best = max(results, key=lambda name: results[name]["reward"]["mean"])
    return {
        "traffic": series.describe(),
        "dataset": {
            "path": str(path),
            "rows": len(frame),
            "target": TARGET,
            "mean_queue_len": float(frame["queue_len"].mean()),
            "mean_workers": float((frame["active_workers"] + frame["warming_workers"]).mean()),
        },
        "split": {
            "train_steps": len(train),
            "holdout_steps": len(holdout),
            "holdout_start": str(holdout.timestamps[0]),
        },
        "holdout_evaluation": {"episodes": episodes, "seeds": seeds, "policies": results},
        "best_policy": best,
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_demo(
    *,
    trace: Path,
    data_dir: Path,
    config: SimConfig | None = None,
    synthetic_days: int = 28,
    episodes: int = 8,
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Build both datasets and evaluate every baseline on both holdouts."""
    config = config or SimConfig()
    sources = [
        load_trace(trace, step_seconds=config.step_seconds).scaled_to(config.mean_arrival_rate),
        synthetic_series(days=synthetic_days, step_seconds=config.step_seconds, seed=seed)
        .scaled_to(config.mean_arrival_rate),
    ]
    summary = {
        series.name: summarize_source(
            series,
            data_dir=data_dir,
            config=config,
            episodes=episodes,
            holdout_fraction=holdout_fraction,
            seed=seed,
        )
        for series in sources
    }
    return {
        "job": "simulator_demo",
        "config": {
            "episode_steps": config.episode_steps,
            "step_seconds": config.step_seconds,
            "mean_arrival_rate": config.mean_arrival_rate,
            "service_rate": config.service_rate,
            "workers": [config.min_workers, config.max_workers],
            "sla_seconds": dict(zip(config.class_names, config.sla_seconds, strict=True)),
        },
        "sources": summary,
    }
