"""The simulator demo: the main job that `make up` runs on embedded defaults.

For a real trace (the NASA HTTP trace unless told otherwise) and for the synthetic profile:

1. replay the whole series through the simulator under the HPA rule and write the seed's
   ``queue_metrics.csv`` into the data home (``data/<source>/queue_metrics.csv``);
2. split the series in time (the latest ``holdout_fraction`` is held out) and run every baseline
   policy over the same seeded episodes of the holdout;
3. return one JSON-ready summary (``pmx demo --json``), which :func:`summary_lines` turns into a
   table per source for people (plain ``pmx demo``).

Progress goes to a ``progress`` callable (the log by default; ``pmx demo`` prints it to stderr).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Dataset plus holdout evaluation of every baseline for one traffic series."""
    started = time.perf_counter()
    progress(f"{series.name}: replaying {len(series.timestamps):,} steps under the HPA rule")
    frame = build_queue_metrics(series, config=config, seed=seed)
    path = write_queue_metrics(frame, dataset_path(data_dir, series.name))
    progress(f"{series.name}: wrote {len(frame):,} rows to {path}")

    train, holdout = series.split(holdout_fraction)
    seeds = list(range(seed, seed + episodes))
    results = {}
    for name in BASELINES:
        evaluation = evaluate_policy(make_baseline(name, config), holdout, seeds=seeds, config=config)
        results[name] = evaluation.summary()
        progress(f"{series.name}: {name} over {episodes} holdout episodes, reward "
                 f"{results[name]['reward']['mean']:.2f}")
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
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Build both datasets and evaluate every baseline on both holdouts."""
    config = config or SimConfig()
    progress(f"loading {trace}")
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
            progress=progress,
        )
        for series in sources
    }
    return {
        "job": "simulator_demo",
        "holdout_fraction": holdout_fraction,
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


def _policy_row(name: str, result: dict[str, Any], best: str, high_class: str) -> list[str]:
    reward = result["reward"]
    low, high = reward["ci95"]
    spread = f"±{(high - low) / 2:.1f}" if low is not None and high is not None else ""
    return [
        f"{name}{' *' if name == best else ''}", f"{reward['mean']:.2f}", spread,
        f"{result['cost']['mean']:.2f}", f"{result['sla_penalty']['mean']:.2f}",
        f"{result['sla_violation_rate']['all']['mean']:.2%}",
        f"{result['sla_violation_rate'][high_class]['mean']:.2%}",
        f"{result['mean_workers']['mean']:.1f}",
    ]


def _source_lines(source: dict[str, Any], *, high_class: str, home: Path, width: int) -> list[str]:
    """One source: its traffic in a line, its baselines best first, and where its dataset went."""
    from ml.console import fit_table

    traffic, split, dataset = source["traffic"], source["split"], source["dataset"]
    policies = source["holdout_evaluation"]["policies"]
    ranked = sorted(policies, key=lambda name: policies[name]["reward"]["mean"], reverse=True)
    headers = ["policy", "reward", "±95%", "cost", "SLA penalty", "SLA misses",
               f"{high_class} misses", "workers"]
    rows = [_policy_row(name, policies[name], source["best_policy"], high_class) for name in ranked]
    path = Path(dataset["path"])
    shown = path.relative_to(home) if path.is_relative_to(home) else path
    return [
        *_wrap(f"{traffic['name']}: {traffic['steps']:,} steps of {traffic['step_seconds']} s, "
               f"{traffic['start'][:10]} .. {traffic['end'][:10]}; holdout from "
               f"{split['holdout_start'][:16].replace('T', ' ')} ({split['holdout_steps']:,} steps)",
               width),
        *("  " + line for line in fit_table(headers, rows, width=width - 2,
                                             right=range(1, len(headers)),
                                             optional=[headers.index("SLA penalty"), headers.index("±95%")])),
        *_wrap(f"  dataset: {shown} ({dataset['rows']:,} rows, mean {dataset['mean_workers']:.1f} "
               "workers under HPA)", width),
    ]


def _wrap(text: str, width: int) -> list[str]:
    """A line of prose folded to the terminal, continuation lines indented."""
    import textwrap

    return textwrap.wrap(text, width=max(width, 40), subsequent_indent="    ", break_on_hyphens=False)


def summary_lines(summary: dict[str, Any], *, home: Path, width: int = 100) -> list[str]:
    """What ``pmx demo`` prints for people: a table per traffic source instead of the JSON (about
    670 lines), with the figures a reader compares: mean episode reward (higher is better) with
    its 95% CI, worker cost, SLA penalty, the share of tasks that missed their SLA (all classes,
    and the highest class), and the mean pool size."""
    config = summary["config"]
    high_class = next(iter(config["sla_seconds"]))
    episodes = next(iter(summary["sources"].values()))["holdout_evaluation"]["episodes"]
    lines = [
        *_wrap(f"Simulator demo: every baseline over the same {episodes} seeded episodes of "
               f"{config['episode_steps']} steps, on the latest {summary['holdout_fraction']:.0%} of "
               "each traffic source (held out)", width),
        "",
    ]
    for source in summary["sources"].values():
        lines += [*_source_lines(source, high_class=high_class, home=home, width=width), ""]
    return [*lines, *_wrap("* best mean reward; reward = -(worker cost + SLA penalty + scaling churn) "
                           "per episode. Every figure with its CI: pmx demo --json", width)]
