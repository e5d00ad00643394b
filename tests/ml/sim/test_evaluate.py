import numpy as np
import pytest

from ml.sim import SimConfig, synthetic_series
from ml.sim.evaluate import evaluate_policy, mean_ci, paired_improvement
from ml.sim.policies import HPAPolicy, StaticPolicy

CONFIG = SimConfig(episode_steps=240)
TRAFFIC = synthetic_series(days=3, seed=1).scaled_to(CONFIG.mean_arrival_rate)


def test_mean_ci_is_the_student_t_interval():
    summary = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert summary["mean"] == 2.5
    half = 3.182446305284263 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert summary["ci95"] == pytest.approx([2.5 - half, 2.5 + half])
    assert mean_ci([5.0])["ci95"] == [None, None]


def test_evaluation_is_deterministic_per_seed_and_summarized():
    first = evaluate_policy(HPAPolicy(CONFIG), TRAFFIC, seeds=[3, 4, 5], config=CONFIG)
    again = evaluate_policy(HPAPolicy(CONFIG), TRAFFIC, seeds=[3, 4, 5], config=CONFIG)
    assert np.array_equal(first.reward, again.reward)
    summary = first.summary()
    assert summary["episodes"] == 3
    low, high = summary["reward"]["ci95"]
    assert low <= summary["reward"]["mean"] <= high
    assert set(summary["sla_violation_rate"]) == {"high", "normal", "low", "all"}
    assert 0 < summary["mean_workers"]["mean"] <= CONFIG.max_workers
    assert np.all(first.cost > 0)


def test_an_undersized_static_pool_misses_slas_that_hpa_meets():
    seeds = list(range(4))
    hpa = evaluate_policy(HPAPolicy(CONFIG), TRAFFIC, seeds=seeds, config=CONFIG)
    tiny = evaluate_policy(StaticPolicy(CONFIG, workers=2), TRAFFIC, seeds=seeds, config=CONFIG)
    assert tiny.overall_violation_rate.mean() > 0.5 > hpa.overall_violation_rate.mean()
    assert tiny.cost.mean() < hpa.cost.mean()
    improvement = paired_improvement(hpa, tiny)
    assert improvement["mean"] > 0
    with pytest.raises(ValueError, match="same seeds"):
        paired_improvement(hpa, evaluate_policy(HPAPolicy(CONFIG), TRAFFIC, seeds=[9],
                                                config=CONFIG))
