"""Policy quality: PPO against baselines tuned on the same data, on a held-out part of a trace.

Train on the first part of the trace (default: the NASA trace; the latest 20% is held out),
tune each baseline on that same part - HPA's target utilization, static's worker count,
Erlang-C's wait target, queue-threshold's thresholds, each the best of a grid by mean reward
(``ml.sim.tuning``) - then run PPO and the tuned baselines over the same seeded held-out
episodes. PPO is trained with train_rl's defaults, once per ``--train-seeds``; its headline
figure is the median of those runs, compared with the best tuned baseline on the held-out part
(paired by episode, 95% CI) and with HPA. The last line printed is one JSON object of the figures.

    .venv/bin/python bench/policy_quality.py [--trace CSV] [--episodes 16] [--train-seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ml.rl.policy import PPOPolicy
from ml.rl.ppo import Args, train
from ml.rl.train import eval_seeds, traffic_for
from ml.sim.config import SimConfig
from ml.sim.evaluate import evaluate_policy, mean_ci, paired_improvement
from ml.sim.tuning import baseline_grids, best_of, evaluate_tuned, tune_baselines
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
    tuned = tune_baselines(config, traffic.train, seeds=tune_seeds)
    for name, params in tuned.items():
        print(f"tuned {name} on the training part: {params} (grid {baseline_grids(config)[name]})")
    print(f"tuning took {time.perf_counter() - started:.0f} s")
    results = evaluate_tuned(tuned, config, traffic.evaluation, holdout_seeds, train=traffic.train)
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
    best_name = best_of(results)
    best = results[best_name]
    vs_best = paired_improvement(median_run, best)
    print(f"PPO vs the best tuned baseline ({best_name}): {vs_best['mean']:+.1%} reward "
          f"(95% CI {vs_best['ci95'][0]:+.1%} .. {vs_best['ci95'][1]:+.1%})")
    improvement = paired_improvement(median_run, hpa)
    print(f"PPO vs tuned HPA: {improvement['mean']:+.1%} reward "
          f"(95% CI {improvement['ci95'][0]:+.1%} .. {improvement['ci95'][1]:+.1%})")
    # SLA violations, paired by episode: PPO's rate minus HPA's.
    violations = mean_ci(median_run.overall_violation_rate - hpa.overall_violation_rate)
    print(f"SLA violation rate, PPO minus tuned HPA: {violations['mean']:+.5f} "
          f"(95% CI {violations['ci95'][0]:+.5f} .. {violations['ci95'][1]:+.5f})")
    figures = {
        "ppo_reward": float(median_run.reward.mean()),
        "best_baseline": best_name,
        "best_baseline_reward": float(best.reward.mean()),
        "improvement_vs_best_baseline": (median_run.reward.mean() - best.reward.mean())
        / abs(best.reward.mean()),
        "improvement_vs_best_baseline_paired_ci95": vs_best["ci95"],
        "best_baseline_sla_violation_rate": float(best.overall_violation_rate.mean()),
        "best_baseline_high_class_sla_violation_rate": float(best.violation_rate[:, 0].mean()),
        "ppo_high_class_sla_violation_rate": float(median_run.violation_rate[:, 0].mean()),
        "hpa_reward": float(hpa.reward.mean()),
        "static_reward": float(results["static"].reward.mean()),
        "erlang_c_reward": float(results["erlang_c"].reward.mean()),
        "queue_threshold_reward": float(results["queue_threshold"].reward.mean()),
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
