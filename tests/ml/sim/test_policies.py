import math

import numpy as np
import pytest

from ml.sim import SimConfig
from ml.sim.policies import (
    ErlangCPolicy,
    HPAPolicy,
    QueueThresholdPolicy,
    StaticPolicy,
    erlang_c_servers,
    erlang_c_wait_probability,
    make_baseline,
)

CONFIG = SimConfig()


def info(active, util, warming=0.0, queue=(0.0, 0.0, 0.0), rate=10.0):
    n = len(np.atleast_1d(active))
    return {
        "active_workers": np.full(n, active, dtype=float),
        "warming_workers": np.full(n, warming, dtype=float),
        "utilization": np.full(n, util, dtype=float),
        "queue": np.tile(np.asarray(queue, dtype=float), (n, 1)),
        "arrival_rate_smoothed": np.full(n, rate, dtype=float),
    }


def delta(action):
    return np.asarray(CONFIG.scale_deltas)[action]


def test_hpa_follows_the_kubernetes_formula_and_tolerance():
    hpa = HPAPolicy(CONFIG, target_utilization=0.5)
    hpa.reset(1)
    assert hpa.recommend(info(10, 0.6)).tolist() == [12.0]  # ceil(10 * 0.6 / 0.5)
    assert hpa.recommend(info(10, 0.54)).tolist() == [10.0]  # ratio 1.08: within tolerance
    assert delta(hpa.act(None, info(10, 0.6))).tolist() == [2]
    # ceil(10 * 1.0 / 0.5) = 20, but one step moves at most +2 and warming workers count.
    assert delta(hpa.act(None, info(10, 1.0, warming=9))).tolist() == [1]


def test_hpa_scale_down_is_stabilized_over_the_window():
    hpa = HPAPolicy(CONFIG, target_utilization=0.5, stabilization_seconds=180)  # 3 steps
    hpa.reset(1)
    assert delta(hpa.act(None, info(10, 0.5))).tolist() == [0]  # recommends 10
    assert delta(hpa.act(None, info(10, 0.2))).tolist() == [0]  # recommends 4: window holds 10
    assert delta(hpa.act(None, info(10, 0.2))).tolist() == [0]
    assert delta(hpa.act(None, info(10, 0.2))).tolist() == [-2]  # 10 left the window


def erlang_c_textbook(c, load):
    """C(c, A) from the closed form, independent of the recurrence."""
    top = load**c / math.factorial(c) * c / (c - load)
    return top / (sum(load**k / math.factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize("c, rate", [(2, 1.0), (5, 4.2), (12, 10.0), (30, 27.5)])
def test_erlang_c_matches_the_closed_form(c, rate):
    expected = erlang_c_textbook(c, rate) * math.exp(-(c - rate) * 20.0)
    got = erlang_c_wait_probability(c, np.array([rate]), 1.0, 20.0)[0]
    assert got == pytest.approx(expected, rel=1e-9)
    assert erlang_c_wait_probability(c, np.array([c + 0.5]), 1.0, 20.0)[0] == 1.0  # unstable


def test_erlang_c_sizing_is_the_smallest_pool_meeting_the_target():
    rates = np.array([0.5, 5.0, 10.0, 20.0])
    servers = erlang_c_servers(rates, 1.0, 30.0, 0.05, 50)
    assert np.all(np.diff(servers) > 0)
    for c, rate in zip(servers.astype(int), rates, strict=True):
        assert erlang_c_wait_probability(c, np.array([rate]), 1.0, 30.0)[0] <= 0.05
        if c > 1:
            assert erlang_c_wait_probability(c - 1, np.array([rate]), 1.0, 30.0)[0] > 0.05
    policy = ErlangCPolicy(CONFIG)
    assert delta(policy.act(None, info(1, 0.5, rate=5.0))).tolist() == [2]


def test_static_and_queue_threshold():
    static = StaticPolicy(CONFIG, workers=8)
    assert delta(static.act(None, info([5, 8, 12], 0.5))).tolist() == [2, 0, -2]
    queue_rule = QueueThresholdPolicy(CONFIG, scale_up_seconds=10)
    backlog = queue_rule.act(None, info(10, 1.0, queue=(100, 100, 100)))  # 30 s to drain
    idle = queue_rule.act(None, info(10, 0.2))
    assert delta(backlog).tolist() == [1] and delta(idle).tolist() == [-1]


def test_make_baseline_by_name():
    assert make_baseline("hpa", CONFIG, target_utilization=0.6).target_utilization == 0.6
    with pytest.raises(ValueError, match="unknown policy 'ppo'"):
        make_baseline("ppo", CONFIG)
