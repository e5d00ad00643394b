"""Policy quality: PPO against baselines tuned on the same data, on a held-out part of a trace.

Train on the first part of the trace (default: the NASA trace; the latest 20% is held out),
tune each baseline on that same part - HPA's target utilization, static's worker count,
Erlang-C's wait target, each the best of a grid by mean reward - then run PPO and the tuned
baselines over the same seeded held-out episodes. PPO is trained with train_rl's defaults, once
per ``--train-seeds``; its headline figure is the median of those runs. The last line printed
is one JSON object of the figures.

    .venv/bin/python bench/policy_quality.py [--trace CSV] [--episodes 16] [--train-seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ml.rl.policy import PPOPolicy
from ml.rl.ppo import Args, train
from ml.rl.train import eval_seeds, traffic_for
from ml.sim.config import SimConfig
from ml.sim.evaluate import best_of_grid, evaluate_policy, mean_ci, paired_improvement
from prioritymax.settings import get_settings


def row(name: str, evaluation) -> str:
    s = evaluation.summary()
    return (f"{name:<28} reward {s['reward']['mean']:9.2f} ± {s['reward']['std']:6.2f}  "
            f"cost {s['cost']['mean']:7.2f}  SLA violations {s['sla_violation_rate']['all']['mean']:.5f}"
            f"  workers {s['mean_workers']['mean']:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=None, help="trace CSV (default: NASA)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--episodes", type=int, default=16, help="held-out episodes (>= 5)")
    parser.add_argument("--train-seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="PPO epochs (default: train_rl's)")
    args = parser.parse_args()
    if args.episodes < 5:
        parser.error("--episodes must be at least 5")
    config = SimConfig()
    trace = args.trace or get_settings().trace_path
    traffic = traffic_for(trace, config, args.holdout_fraction)
    tune_seeds = list(range(8))
    holdout_seeds = eval_seeds(args.episodes)

    started = time.perf_counter()
    grids = {
        "hpa": {"target_utilization": [float(round(x, 2)) for x in np.arange(0.5, 0.96, 0.05)]},
        "static": {"workers": list(range(config.min_workers, config.max_workers + 1, 2))},
        "erlang_c": {"max_wait_probability": [0.01, 0.05, 0.1, 0.2, 0.4],
                     "wait_seconds": list(config.sla_seconds[:2])},
    }
    tuned = {}
    for name, grid in grids.items():
        params, on_train = best_of_grid(name, grid, traffic.train, seeds=tune_seeds, config=config)
        tuned[name] = params
        print(f"tuned {name} on the training part: {params} (train reward {on_train.reward.mean():.2f})")
    print(f"tuning took {time.perf_counter() - started:.0f} s")

    from ml.sim.policies import make_baseline

    results = {name: evaluate_policy(make_baseline(name, config, **tuned[name]), traffic.evaluation,
                                     seeds=holdout_seeds, config=config) for name in grids}
    ppo_runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.train_seeds):
            run_args = Args(seed=seed, eval_every=0)
            if args.epochs:
                run_args.epochs = args.epochs
            began = time.perf_counter()
            state = train(run_args, traffic=traffic.train, traffic_name=traffic.name,
                          checkpoint=Path(folder) / f"ppo{seed}.pt", config=config, progress=False)
            evaluation = evaluate_policy(PPOPolicy.from_state(state), traffic.evaluation,
                                         seeds=holdout_seeds, config=config)
            ppo_runs.append(evaluation)
            print(row(f"PPO (training seed {seed}, {time.perf_counter() - began:.0f} s)", evaluation))
    median_run = sorted(ppo_runs, key=lambda e: e.reward.mean())[len(ppo_runs) // 2]

    print(f"\nheld-out part of {traffic.evaluation.name}, {args.episodes} episodes:")
    print(row("PPO (median training seed)", median_run))
    for name, evaluation in results.items():
        print(row(f"{name} {tuned[name]}", evaluation))
    hpa = results["hpa"]
    improvement = paired_improvement(median_run, hpa)
    print(f"PPO vs tuned HPA: {improvement['mean']:+.1%} reward "
          f"(95% CI {improvement['ci95'][0]:+.1%} .. {improvement['ci95'][1]:+.1%})")
    # SLA violations, paired by episode: PPO's rate minus HPA's.
    violations = mean_ci(median_run.overall_violation_rate - hpa.overall_violation_rate)
    print(f"SLA violation rate, PPO minus tuned HPA: {violations['mean']:+.5f} "
          f"(95% CI {violations['ci95'][0]:+.5f} .. {violations['ci95'][1]:+.5f})")
    figures = {
        "ppo_reward": float(median_run.reward.mean()),
        "hpa_reward": float(hpa.reward.mean()),
        "static_reward": float(results["static"].reward.mean()),
        "erlang_c_reward": float(results["erlang_c"].reward.mean()),
        "improvement_vs_hpa": (median_run.reward.mean() - hpa.reward.mean()) / abs(hpa.reward.mean()),
        "improvement_vs_hpa_paired_ci95": improvement["ci95"],
        "ppo_sla_violation_rate": float(median_run.overall_violation_rate.mean()),
        "hpa_sla_violation_rate": float(hpa.overall_violation_rate.mean()),
        "sla_violation_rate_difference_ci95": violations["ci95"],
        "static_sla_violation_rate": float(results["static"].overall_violation_rate.mean()),
        "erlang_c_sla_violation_rate": float(results["erlang_c"].overall_violation_rate.mean()),
        "ppo_rewards_by_training_seed": [float(e.reward.mean()) for e in ppo_runs],
        "tuned": tuned,
        "episodes": args.episodes,
        "trace": str(trace),
        "median": statistics.median([float(e.reward.mean()) for e in ppo_runs]),
    }
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
