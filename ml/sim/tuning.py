"""Baselines tuned on a training part, so that a learned policy is compared with the best rule,
never a strawman: every evaluation, bench and gate that names "the best tuned baseline" gets it here.

Each rule's parameters are the best of a grid by mean reward on seeded episodes of the *training*
traffic only; the best baseline of a comparison is then the tuned rule with the highest mean
reward on the held-out episodes the learned policy is judged on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.sim.config import SimConfig
from ml.sim.evaluate import PolicyEvaluation, best_of_grid, evaluate_policy
from ml.sim.policies import make_baseline
from ml.sim.traffic import RateSeries

#: The rules a learned policy must beat (the predictive Erlang-C joins when forecasts exist).
TUNED_BASELINES = ("hpa", "erlang_c", "queue_threshold", "static")

TUNING_SEEDS = tuple(range(8))


def baseline_grids(config: SimConfig, small: bool = False) -> dict[str, dict[str, list[Any]]]:
    """The parameter grid of each tuned rule; ``small`` for quick runs (tests, ``--quick``)."""
    sla = list(config.sla_seconds[:2])
    if small:
        return {
            "hpa": {"target_utilization": [0.6, 0.8, 0.9]},
            "erlang_c": {"max_wait_probability": [0.05, 0.2], "wait_seconds": sla[:1]},
            "queue_threshold": {"scale_up_seconds": [5.0, 30.0], "scale_down_utilization": [0.5]},
            "static": {"workers": sorted({config.min_workers, config.max_workers // 4,
                                          config.max_workers // 2, config.max_workers})},
        }
    return {
        "hpa": {"target_utilization": [round(float(x), 2) for x in np.arange(0.5, 0.96, 0.05)]},
        "erlang_c": {"max_wait_probability": [0.01, 0.05, 0.1, 0.2, 0.4], "wait_seconds": sla},
        "queue_threshold": {"scale_up_seconds": [2.0, 5.0, 10.0, 30.0],
                            "scale_down_utilization": [0.3, 0.5, 0.7]},
        "static": {"workers": list(range(config.min_workers, config.max_workers + 1, 2))},
    }


def tune_baselines(config: SimConfig, train: RateSeries, *, seeds: Sequence[int] = TUNING_SEEDS,
                   small: bool = False) -> dict[str, dict[str, Any]]:
    """Each rule's best parameters on ``train`` (the training part only)."""
    return {name: best_of_grid(name, grid, train, seeds=seeds, config=config)[0]
            for name, grid in baseline_grids(config, small).items()}


def evaluate_tuned(tuned: dict[str, dict[str, Any]], config: SimConfig, source: RateSeries,
                   seeds: Sequence[int]) -> dict[str, PolicyEvaluation]:
    """Every tuned rule over the same seeded episodes of ``source``."""
    return {name: evaluate_policy(make_baseline(name, config, **params), source, seeds=seeds,
                                  config=config)
            for name, params in tuned.items()}


def best_of(evaluations: dict[str, PolicyEvaluation]) -> str:
    """The name of the evaluation with the highest mean reward."""
    return max(evaluations, key=lambda name: float(evaluations[name].reward.mean()))
