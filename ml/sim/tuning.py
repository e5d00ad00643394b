"""Baselines tuned on a training part, so that a learned policy is compared with the best rule,
never a strawman: every evaluation, bench and gate that names "the best tuned baseline" gets it here.

Each rule's parameters are the best of a grid by mean reward on seeded episodes of the *training*
traffic only; the best baseline of a comparison is then the tuned rule with the highest mean
reward on the held-out episodes the learned policy is judged on.

The predictive Erlang-C rule also needs load forecasts: a predictor trained on the training part
forecasts the traffic being run (``ml.sim.forecasts``), for tuning (the training part itself) and
for evaluation (the held-out part, given the training part as ``train=``). Without a training
part to train the predictor on, an evaluation leaves that rule out rather than forecast with a
model that has seen the traffic it is judged on. Tuned parameters stay plain JSON values; the
forecasts are rebuilt (and cached in memory) from the series.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.sim.config import SimConfig
from ml.sim.evaluate import PolicyEvaluation, best_of_grid, evaluate_policy
from ml.sim.forecasts import SeriesForecasts, forecast_horizon, forecast_series
from ml.sim.policies import FORECAST_BASELINES, make_baseline
from ml.sim.traffic import RateSeries

log = logging.getLogger(__name__)

PREDICTIVE = "predictive_erlang_c"
#: The rules a learned policy must beat (predictive Erlang-C needs a training part to forecast from).
TUNED_BASELINES = ("hpa", "erlang_c", "queue_threshold", "static", PREDICTIVE)
FORECAST_SEED = 0

TUNING_SEEDS = tuple(range(8))


def baseline_grids(config: SimConfig, small: bool = False) -> dict[str, dict[str, list[Any]]]:
    """The parameter grid of each tuned rule; ``small`` for quick runs (tests, ``--quick``).
    Predictive Erlang-C has Erlang-C's grid, and plans for the p90 or for the mean forecast:
    p90 sizes for a noisy minute's upper bound, which on spiky traffic can cost more workers than
    the waits it saves; the training part decides."""
    sla = list(config.sla_seconds[:2])
    if small:
        erlang_c = {"max_wait_probability": [0.05, 0.2], "wait_seconds": sla[:1]}
        return {
            "hpa": {"target_utilization": [0.6, 0.8, 0.9]},
            "erlang_c": erlang_c,
            "queue_threshold": {"scale_up_seconds": [5.0, 30.0], "scale_down_utilization": [0.5]},
            "static": {"workers": sorted({config.min_workers, config.max_workers // 4,
                                          config.max_workers // 2, config.max_workers})},
            PREDICTIVE: erlang_c | {"forecast": ["p90", "mean"]},
        }
    erlang_c = {"max_wait_probability": [0.01, 0.05, 0.1, 0.2, 0.4], "wait_seconds": sla}
    return {
        "hpa": {"target_utilization": [round(float(x), 2) for x in np.arange(0.5, 0.96, 0.05)]},
        "erlang_c": erlang_c,
        "queue_threshold": {"scale_up_seconds": [2.0, 5.0, 10.0, 30.0],
                            "scale_down_utilization": [0.3, 0.5, 0.7]},
        "static": {"workers": list(range(config.min_workers, config.max_workers + 1, 2))},
        PREDICTIVE: erlang_c | {"forecast": ["p90", "mean"]},
    }


def forecasts_for(config: SimConfig, train: RateSeries, source: RateSeries) -> SeriesForecasts:
    """Forecasts of ``source`` one warm-up ahead by a predictor trained on ``train`` only."""
    return forecast_series(train, source, forecast_horizon(config), seed=FORECAST_SEED)


def tune_baselines(config: SimConfig, train: RateSeries, *, seeds: Sequence[int] = TUNING_SEEDS,
                   small: bool = False, predictive: bool = True,
                   only: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each rule's best parameters on ``train`` (the training part only); ``only``: just these
    rules. Predictive Erlang-C (unless ``predictive`` is False) is tuned with forecasts of
    ``train`` by a predictor trained on ``train``; it is left out, with a warning, when ``train``
    is too short to train one."""
    grids = baseline_grids(config, small)
    unknown = set(only or ()) - set(grids)
    if unknown:
        raise ValueError(f"no tuned rule {sorted(unknown)}; choose among {sorted(grids)}")
    tuned = {}
    for name, grid in grids.items():
        if only is not None and name not in only:
            continue
        if name in FORECAST_BASELINES:
            forecasts = _forecasts_or_none(config, train, train) if predictive else None
            if forecasts is not None:
                tuned[name] = best_of_grid(name, grid, train, seeds=seeds, config=config,
                                           extra={"forecasts": forecasts})[0]
        else:
            tuned[name] = best_of_grid(name, grid, train, seeds=seeds, config=config)[0]
    return tuned


def evaluate_tuned(tuned: dict[str, dict[str, Any]], config: SimConfig, source: RateSeries,
                   seeds: Sequence[int], train: RateSeries | None = None) -> dict[str, PolicyEvaluation]:
    """Every tuned rule over the same seeded episodes of ``source``. Rules that need forecasts
    get them from a predictor trained on ``train``; without ``train`` they are left out."""
    evaluations = {}
    for name, params in tuned.items():
        policy = tuned_policy(name, params, config, source, train)
        if policy is not None:
            evaluations[name] = evaluate_policy(policy, source, seeds=seeds, config=config)
    return evaluations


def tuned_policy(name: str, params: dict[str, Any], config: SimConfig, source: RateSeries,
                 train: RateSeries | None):
    """The rule ``name`` with its tuned ``params``, ready to run on ``source``: a rule that needs
    forecasts gets those of a predictor trained on ``train``; None when it cannot have them."""
    if name not in FORECAST_BASELINES:
        return make_baseline(name, config, **params)
    forecasts = _forecasts_or_none(config, train, source) if train is not None else None
    return None if forecasts is None else make_baseline(name, config, **params, forecasts=forecasts)


def _forecasts_or_none(config: SimConfig, train: RateSeries,
                       source: RateSeries) -> SeriesForecasts | None:
    from ml.predictor.data import DataError

    try:
        return forecasts_for(config, train, source)
    except DataError as error:
        log.warning("no load forecasts for %s (predictor trained on %s): %s; predictive Erlang-C "
                    "is left out", source.name, train.name, error)
        return None


def best_of(evaluations: dict[str, PolicyEvaluation]) -> str:
    """The name of the evaluation with the highest mean reward."""
    return max(evaluations, key=lambda name: float(evaluations[name].reward.mean()))
