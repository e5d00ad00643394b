"""Predictive against reactive Erlang-C: does sizing the pool for the load forecast pay?

Both rules size the pool with the Erlang-C formula; the reactive one for the smoothed arrival
rate, the predictive one for the higher of that and the forecast of the rate one warm-up ahead
(``ml.sim.policies.PredictiveErlangCPolicy``; its p90 or its mean, chosen in tuning - the
p90-only variant is reported too). The load predictor is trained on the first
part of the trace only (default: the NASA trace; the latest 20% is held out, as in
``bench/policy_quality.py``); both rules are tuned on that same part over Erlang-C's grid
(``ml.sim.tuning``), then run over the same seeded held-out episodes, where the forecasts are
made row by row from the past only. Reported: mean reward, SLA violation rate (all classes and
the high class), the paired reward improvement (95% CI) and the p90 forecast's coverage on the
held-out part. The last line printed is one JSON object of the figures.

    .venv/bin/python bench/predictive_erlang.py [--trace CSV] [--seeds 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ml.rl.train import eval_seeds, traffic_for
from ml.sim.config import SimConfig
from ml.sim.evaluate import best_of_grid, mean_ci, paired_improvement
from ml.sim.tuning import (
    PREDICTIVE,
    TUNING_SEEDS,
    baseline_grids,
    evaluate_tuned,
    forecasts_for,
    tune_baselines,
)
from prioritymax.settings import get_settings

REACTIVE = "erlang_c"


def row(name: str, evaluation) -> str:
    s = evaluation.summary()
    return (f"{name:<32} reward {s['reward']['mean']:9.2f} ± {s['reward']['std']:6.2f}  "
            f"cost {s['cost']['mean']:7.2f}  SLA violations {s['sla_violation_rate']['all']['mean']:.5f}"
            f" (high class {s['sla_violation_rate'][evaluation.class_names[0]]['mean']:.5f})"
            f"  workers {s['mean_workers']['mean']:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=None, help="trace CSV (default: NASA)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, default=16, help="held-out episodes (>= 2)")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2")
    config = SimConfig()
    trace = args.trace or get_settings().trace_path
    traffic = traffic_for(trace, config, args.holdout_fraction)
    holdout_seeds = eval_seeds(args.seeds)

    started = time.perf_counter()
    forecasts_for(config, traffic.train, traffic.train)  # trains the predictor (cached)
    trained = time.perf_counter() - started
    print(f"load predictor trained on {traffic.train.name} ({len(traffic.train)} steps) "
          f"in {trained:.0f} s")
    tuned = tune_baselines(config, traffic.train, seeds=TUNING_SEEDS, only=(REACTIVE, PREDICTIVE))
    if PREDICTIVE not in tuned:
        raise SystemExit("the training part is too short to train the load predictor")
    grids = baseline_grids(config)
    for name, params in tuned.items():
        print(f"tuned {name} on the training part: {params} (grid {grids[name]})")
    # The rule as first specified, planning for the p90 forecast only, for comparison.
    p90_only = best_of_grid(PREDICTIVE, grids[PREDICTIVE] | {"forecast": ["p90"]}, traffic.train,
                            seeds=TUNING_SEEDS, config=config,
                            extra={"forecasts": forecasts_for(config, traffic.train, traffic.train)})[0]
    print(f"tuned {PREDICTIVE} planning for the p90 forecast only: {p90_only}")
    print(f"tuning took {time.perf_counter() - started - trained:.0f} s")

    results = evaluate_tuned(tuned, config, traffic.evaluation, holdout_seeds, train=traffic.train)
    predictive, reactive = results[PREDICTIVE], results[REACTIVE]
    p90 = evaluate_tuned({PREDICTIVE: p90_only}, config, traffic.evaluation, holdout_seeds,
                         train=traffic.train)[PREDICTIVE]
    forecasts = forecasts_for(config, traffic.train, traffic.evaluation)
    coverage = forecasts.coverage(traffic.evaluation)

    print(f"\nheld-out part of {traffic.evaluation.name}, {args.seeds} episodes "
          f"(forecast {forecasts.horizon_steps} steps ahead; p90 coverage {coverage:.3f}):")
    print(row(PREDICTIVE, predictive))
    print(row(REACTIVE, reactive))
    print(row(f"{PREDICTIVE} (p90 only)", p90))
    paired = paired_improvement(predictive, reactive)
    print(f"predictive vs reactive Erlang-C: {paired['mean']:+.2%} reward "
          f"(95% CI {paired['ci95'][0]:+.2%} .. {paired['ci95'][1]:+.2%})")
    violations = mean_ci(predictive.overall_violation_rate - reactive.overall_violation_rate)
    print(f"SLA violation rate, predictive minus reactive: {violations['mean']:+.5f} "
          f"(95% CI {violations['ci95'][0]:+.5f} .. {violations['ci95'][1]:+.5f})")

    def rate(evaluation, high: bool = False) -> float:
        values = evaluation.violation_rate[:, 0] if high else evaluation.overall_violation_rate
        return float(values.mean())

    figures = {
        "predictive_reward": float(predictive.reward.mean()),
        "reactive_reward": float(reactive.reward.mean()),
        "improvement": (predictive.reward.mean() - reactive.reward.mean()) / abs(reactive.reward.mean()),
        "improvement_paired_ci95": paired["ci95"],
        "predictive_sla_violation_rate": rate(predictive),
        "reactive_sla_violation_rate": rate(reactive),
        "predictive_high_class_sla_violation_rate": rate(predictive, high=True),
        "reactive_high_class_sla_violation_rate": rate(reactive, high=True),
        "sla_violation_rate_difference_ci95": violations["ci95"],
        "predictive_cost": float(predictive.cost.mean()),
        "reactive_cost": float(reactive.cost.mean()),
        "predictive_mean_workers": float(predictive.mean_workers.mean()),
        "reactive_mean_workers": float(reactive.mean_workers.mean()),
        "predictive_p90_only_reward": float(p90.reward.mean()),
        "predictive_p90_only_improvement": (p90.reward.mean() - reactive.reward.mean())
        / abs(reactive.reward.mean()),
        "predictive_p90_only_sla_violation_rate": rate(p90),
        "predictive_p90_only_params": p90_only,
        "forecast_horizon_steps": forecasts.horizon_steps,
        "forecast_p90_coverage": coverage,
        "tuned": tuned,
        "episodes": args.seeds,
        "trace": str(trace),
    }
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
