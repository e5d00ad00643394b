"""Generalization: the learned policy against the best tuned rule on traffic it was not trained on.

A matrix of train/test cells built from one trace (default: the NASA trace; any CSV of that shape
with ``--trace``) and the synthetic profile:

    time                  train: the trace's first 80%          test: its last 20%
    load_0.3x, load_3x    train: the first 80%                  test: the last 20% at 0.3x / 3x
                                                                the training mean load
    overloaded_training   train: the first 80% scaled so that its busiest 10% of minutes exceed
                          what the largest pool serves (hours above capacity every day)
                                                                test: the last 20%
    synthetic_to_trace    train: the synthetic profile          test: the trace's last 20%
    trace_to_synthetic    train: the first 80%                  test: unseen synthetic days
    flash_crowds          train: the first 80%                  test: the last 20% with flash
                                                                crowds (5-20x for 5-30 min)

In each cell every rule (HPA, Erlang-C, queue-threshold, static) is tuned on that cell's
training part only, PPO is trained there with ``train_rl``'s defaults once per training seed,
and all of them run over the same seeded test episodes. PPO's reward per episode is the mean over
its training seeds (each seed's learned adjustments kept only if they beat its rule on the
training part's variants, ``adjustments_kept`` per cell); improvements are paired by episode,
with 95% CIs. Each cell also shows the residual policy's base rule alone (what the learned part
adds) and a perfect-sizing bound (``ml.sim.evaluate.perfect_sizing_reward``) with the share of
the gap between the best rule and that bound which PPO closes. The last line printed is one JSON
object of the figures.

    .venv/bin/python bench/generalization.py [--trace CSV] [--seeds 5] [--episodes 16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml.rl.policy import PPOPolicy
from ml.rl.ppo import Args, train
from ml.rl.residual import RulePolicy, tune_base_rule
from ml.rl.train import eval_seeds
from ml.sim.config import SimConfig
from ml.sim.evaluate import PolicyEvaluation, evaluate_policy, mean_ci, perfect_sizing_reward
from ml.sim.shifts import capacity_rate, scaled, scaled_to_mean, with_flash_crowds
from ml.sim.traffic import RateSeries, load_trace, synthetic_series
from ml.sim.tuning import best_of, evaluate_tuned, tune_baselines
from prioritymax.settings import get_settings

FLASH_SEED = 7


def training_sets(trace: RateSeries, config: SimConfig, synthetic_days: int) -> dict[str, RateSeries]:
    train, _ = trace.split(0.2)
    busiest = float(np.quantile(train.rates, 0.9))
    overload = 1.25 * capacity_rate(config) / busiest
    return {
        "trace": train,
        "overloaded": scaled(train, overload, f"overloaded_x{overload:.2f}"),
        "synthetic": synthetic_series(step_seconds=config.step_seconds, seed=0, days=synthetic_days)
        .scaled_to(config.mean_arrival_rate),
    }


def cells(trace: RateSeries, sets: dict[str, RateSeries], config: SimConfig,
          synthetic_days: int) -> list[tuple[str, str, RateSeries]]:
    """(cell name, training set, test series)."""
    train, test = trace.split(0.2)
    mean = float(train.rates.mean())
    unseen_synthetic = synthetic_series(step_seconds=config.step_seconds, seed=1,
                                        days=max(2, synthetic_days // 4)).scaled_to(mean)
    return [
        ("time", "trace", test),
        ("load_0.3x", "trace", scaled_to_mean(test, 0.3 * mean, "x0.3_train_mean")),
        ("load_3x", "trace", scaled_to_mean(test, 3.0 * mean, "x3_train_mean")),
        ("overloaded_training", "overloaded", test),
        ("synthetic_to_trace", "synthetic", test),
        ("trace_to_synthetic", "trace", unseen_synthetic),
        ("flash_crowds", "trace", with_flash_crowds(test, FLASH_SEED)),
    ]


def summary(evaluation: PolicyEvaluation) -> dict[str, Any]:
    return {
        "reward": float(evaluation.reward.mean()),
        "cost": float(evaluation.cost.mean()),
        "sla_violation_rate": {name: float(evaluation.violation_rate[:, k].mean())
                               for k, name in enumerate(evaluation.class_names)},
        "mean_workers": float(evaluation.mean_workers.mean()),
    }


def judge_cell(name: str, train_name: str, test: RateSeries, ppo: list[PolicyEvaluation],
               base: PolicyEvaluation, baselines: dict[str, PolicyEvaluation],
               bound: np.ndarray, tuned: dict[str, Any], kept: int) -> dict[str, Any]:
    best_name = best_of(baselines)
    best = baselines[best_name]
    reward = np.mean([e.reward for e in ppo], axis=0)  # per episode, over training seeds
    high = np.mean([e.violation_rate[:, 0] for e in ppo], axis=0)
    improvement = float((reward.mean() - best.reward.mean()) / abs(best.reward.mean()))
    gap = float(bound.mean() - best.reward.mean())
    return {
        "cell": name,
        "train": train_name,
        "test": test.name,
        "best_baseline": best_name,
        "best_baseline_params": tuned[best_name],
        "improvement_vs_best_baseline": improvement,
        "improvement_paired_ci95": mean_ci((reward - best.reward) / np.abs(best.reward))["ci95"],
        "improvement_by_training_seed": [
            float((e.reward.mean() - best.reward.mean()) / abs(best.reward.mean())) for e in ppo],
        "high_class_sla_excess": float(high.mean() - best.violation_rate[:, 0].mean()),
        "high_class_sla_excess_ci95": mean_ci(high - best.violation_rate[:, 0])["ci95"],
        "ppo": {**summary(ppo[0]), "reward": float(reward.mean()),
                "sla_violation_rate": {n: float(np.mean([e.violation_rate[:, k].mean() for e in ppo]))
                                       for k, n in enumerate(ppo[0].class_names)},
                "mean_workers": float(np.mean([e.mean_workers.mean() for e in ppo])),
                "cost": float(np.mean([e.cost.mean() for e in ppo]))},
        "residual_base_rule": summary(base),
        "adjustments_kept": kept,
        "baselines": {n: summary(e) for n, e in baselines.items()},
        "perfect_sizing_bound": float(bound.mean()),
        "gap_closed": float((reward.mean() - best.reward.mean()) / gap) if gap > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=None, help="trace CSV (default: NASA)")
    parser.add_argument("--seeds", type=int, default=5, help="PPO training seeds per cell")
    parser.add_argument("--episodes", type=int, default=16, help="test episodes per cell")
    parser.add_argument("--epochs", type=int, default=None, help="PPO epochs (default: train_rl's)")
    parser.add_argument("--quick", action="store_true",
                        help="small and fast (short episodes, few epochs, small grids): a smoke run")
    args = parser.parse_args()
    if args.seeds < 1 or args.episodes < 2:
        parser.error("--seeds must be >= 1 and --episodes >= 2")
    config = SimConfig(episode_steps=180) if args.quick else SimConfig()
    episodes = min(args.episodes, 4) if args.quick else args.episodes
    epochs = args.epochs or (2 if args.quick else Args().epochs)
    synthetic_days = 4 if args.quick else 28
    trace_path = args.trace or get_settings().trace_path
    trace = load_trace(trace_path, step_seconds=config.step_seconds).scaled_to(config.mean_arrival_rate)
    sets = training_sets(trace, config, synthetic_days)
    test_seeds = eval_seeds(episodes)
    started = time.perf_counter()

    prepared: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="pmx-generalization-") as folder:
        for set_name, series in sets.items():
            began = time.perf_counter()
            tuned = tune_baselines(config, series, small=args.quick)
            control = tune_base_rule(config, series, episodes=4 if args.quick else 8)
            policies = []
            for seed in range(args.seeds):
                run = Args(seed=seed, epochs=epochs, eval_every=0)
                if args.quick:
                    run.num_envs, run.steps, run.minibatch_size = 8, 256, 128
                state = train(run, traffic=series, traffic_name=series.name, config=config,
                              checkpoint=Path(folder) / f"{set_name}-{seed}.pt", progress=False,
                              control=control)
                policies.append(PPOPolicy.from_state(state))
            prepared[set_name] = {"tuned": tuned, "control": control, "policies": policies,
                                  "train": series}
            rule = {k: v for k, v in control.to_dict().items() if k not in ("config", "kind")}
            kept = sum(p.control.learned for p in policies)
            print(f"training set {set_name}: tuned {tuned}; base rule {rule}; "
                  f"{args.seeds} PPO seeds in {time.perf_counter() - began:.0f} s, learned "
                  f"adjustments kept by validation in {kept}", flush=True)

    results = []
    for name, set_name, test in cells(trace, sets, config, synthetic_days):
        ready = prepared[set_name]
        baselines = evaluate_tuned(ready["tuned"], config, test, test_seeds, train=ready["train"])
        ppo = [evaluate_policy(p, test, seeds=test_seeds, config=config) for p in ready["policies"]]
        base = evaluate_policy(RulePolicy(ready["control"]), test, seeds=test_seeds, config=config)
        bound = perfect_sizing_reward(test, test_seeds, config)
        kept = sum(p.control.learned for p in ready["policies"])
        cell = judge_cell(name, set_name, test, ppo, base, baselines, bound, ready["tuned"], kept)
        results.append(cell)
        best = cell["best_baseline"]
        print(f"{name:<22} PPO {cell['ppo']['reward']:10.2f}"
              f"  base rule {cell['residual_base_rule']['reward']:10.2f}"
              f"  best {best:<15} {cell['baselines'][best]['reward']:10.2f}"
              f"  bound {cell['perfect_sizing_bound']:9.2f}"
              f"  improvement {cell['improvement_vs_best_baseline']:+.2%}"
              f"  high-class SLA excess {cell['high_class_sla_excess']:+.5f}", flush=True)

    improvements = [c["improvement_vs_best_baseline"] for c in results]
    flash = [c["improvement_vs_best_baseline"] for c in results if c["cell"] == "flash_crowds"]
    gaps = [c["gap_closed"] for c in results if c["gap_closed"] is not None]
    figures = {
        "trace": str(trace_path),
        "seeds": args.seeds,
        "episodes": episodes,
        "epochs": epochs,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
        "cells": results,
        "worst_improvement_vs_best_baseline": min(improvements),
        "mean_improvement_vs_best_baseline": float(np.mean(improvements)),
        "flash_crowd_improvement_vs_best_baseline": flash[0] if flash else None,
        "high_class_sla_excess_worst": max(c["high_class_sla_excess"] for c in results),
        "perfect_sizing_bound": {c["cell"]: c["perfect_sizing_bound"] for c in results},
        "mean_gap_closed": float(np.mean(gaps)) if gaps else None,
    }
    print(json.dumps(figures, default=float))


if __name__ == "__main__":
    main()
