"""The residual policy's interface: inputs relative to capacity, the rule as its floor, the
checkpoint keeping both, and the guard against inputs training never saw."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ml.rl.policy import PPOPolicy
from ml.rl.ppo import Args, load_checkpoint, train
from ml.rl.residual import ResidualControl, RulePolicy, feature_names, reading_info, tune_base_rule
from ml.sim.config import SimConfig
from ml.sim.evaluate import evaluate_policy
from ml.sim.policies import ErlangCPolicy
from ml.sim.traffic import synthetic_series
from ml.sim.tuning import tune_baselines

CONFIG = SimConfig()
SMALL = Args(epochs=2, steps=256, num_envs=4, minibatch_size=64, update_epochs=2, eval_every=0)


@pytest.fixture(scope="module")
def traffic():
    return synthetic_series(days=3, seed=3).scaled_to(CONFIG.mean_arrival_rate)


def test_inputs_mean_the_same_at_any_load_level():
    control = ResidualControl(CONFIG, drain_sla_fraction=1.0)
    names = feature_names(CONFIG)
    one = control.features(reading_info(np.array([30.0, 60.0, 90.0]), 10.0, 9.0, 12, 2, 0.8))
    three = control.features(reading_info(np.array([90.0, 180.0, 270.0]), 30.0, 27.0, 36, 6, 0.8))
    absolute = {"load_over_max_pool", "rule_over_pool"}  # the cap is absolute; Erlang-C pools scale
    same = [i for i, name in enumerate(names) if name not in absolute]
    np.testing.assert_allclose(one[0, same], three[0, same], rtol=1e-6)
    assert one.shape == (1, len(names))


def test_with_no_reactions_the_base_rule_is_the_erlang_c_rule(traffic):
    control = ResidualControl(CONFIG, 30.0, 0.05, drain_sla_fraction=None, instant_rate=False)
    seeds = [1, 2, 3]
    ours = evaluate_policy(RulePolicy(control), traffic, seeds=seeds)
    erlang = evaluate_policy(ErlangCPolicy(CONFIG, 30.0, 0.05), traffic, seeds=seeds)
    np.testing.assert_array_equal(ours.reward, erlang.reward)


def test_an_untrained_residual_policy_is_its_rule(traffic, tmp_path):
    """Greedy, with the rule's action favoured at initialization: the floor before any learning."""
    control = ResidualControl(CONFIG, 30.0, 0.05, drain_sla_fraction=1.0)
    state = train(dataclasses.replace(SMALL, epochs=0), traffic=traffic, traffic_name="t",
                  checkpoint=tmp_path / "r.pt", control=control, progress=False)
    seeds = [4, 5]
    policy = evaluate_policy(PPOPolicy.from_state(state), traffic, seeds=seeds)
    rule = evaluate_policy(RulePolicy(control), traffic, seeds=seeds)
    np.testing.assert_array_equal(policy.reward, rule.reward)


def test_the_checkpoint_keeps_the_rule_and_the_inputs_seen(traffic, tmp_path):
    control = ResidualControl(CONFIG, 120.0, 0.2, drain_sla_fraction=4.0, instant_rate=False)
    state = train(SMALL, traffic=traffic, traffic_name="t", checkpoint=tmp_path / "r.pt",
                  control=control, progress=False)
    loaded = PPOPolicy.from_checkpoint(tmp_path / "r.pt")
    assert dataclasses.replace(loaded.control, learned=True) == control
    verdict = load_checkpoint(tmp_path / "r.pt")["residual_validation"]
    assert loaded.control.learned == verdict["kept"] == state.validation["kept"]
    assert len(verdict["change_vs_rule"]) == 4
    low, high = loaded.obs_range
    np.testing.assert_array_equal(low, state.obs_range[0])
    assert low.shape == (len(feature_names(CONFIG)),) and np.all(low <= high)
    seeds = [6, 7]
    np.testing.assert_array_equal(evaluate_policy(loaded, traffic, seeds=seeds).reward,
                                  evaluate_policy(PPOPolicy.from_state(state), traffic, seeds=seeds).reward)
    # resumed, it keeps the rule it started with (it is not tuned again)
    more = train(dataclasses.replace(SMALL, epochs=3), traffic=traffic, traffic_name="t",
                 checkpoint=tmp_path / "r.pt", progress=False)
    assert dataclasses.replace(more.control, learned=True) == control and more.epoch == 3


def test_adjustments_that_do_not_beat_the_rule_are_dropped(traffic, tmp_path):
    """A policy whose greedy adjustment is always "remove 20%" loses to its rule on every variant
    of the training traffic: validation drops its adjustments, and it acts as its rule."""
    import torch

    from ml.rl.residual import validate_adjustments

    control = ResidualControl(CONFIG, 30.0, 0.05, drain_sla_fraction=2.0)
    state = train(dataclasses.replace(SMALL, epochs=0), traffic=traffic, traffic_name="t",
                  checkpoint=tmp_path / "r.pt", control=control, progress=False)
    with torch.no_grad():
        state.agent.actor[-1].bias[:] = torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0])
    verdict = validate_adjustments(PPOPolicy.from_state(state), control, traffic)
    assert not verdict["kept"] and max(verdict["change_vs_rule"]) < 0


def test_inputs_outside_the_training_range_are_named(traffic, tmp_path):
    state = train(SMALL, traffic=traffic, traffic_name="t", checkpoint=tmp_path / "r.pt",
                  control=ResidualControl(CONFIG), progress=False)
    policy = PPOPolicy.from_state(state)
    usual = reading_info(np.zeros(3), 10.0, 10.0, 14, 0, 0.7)
    assert policy.unseen(policy.control.features(usual)[0]) is None
    action, probability, outside = policy.decide_residual(usual)
    assert outside is None and 0 < probability <= 1
    flooded = reading_info(np.array([1e6, 0.0, 0.0]), 10.0, 10.0, 14, 0, 1.0)
    action, probability, outside = policy.decide_residual(flooded)
    assert "backlog_minutes_high" in outside and "outside what the policy was trained on" in outside
    assert probability is None
    rule = policy.control.env_action(np.array([policy.control.rule_action]), flooded)
    assert action == int(rule[0])


def test_the_base_rule_starts_from_the_tuned_erlang_c(traffic):
    """Stage one tunes Erlang-C on the training traffic as the Erlang-C baseline is tuned."""
    control = tune_base_rule(CONFIG, traffic, episodes=4, episode_steps=120)
    short = CONFIG.replace(episode_steps=120)
    baseline = tune_baselines(short, traffic, seeds=range(4))["erlang_c"]
    assert (control.wait_seconds, control.max_wait_probability) == (
        baseline["wait_seconds"], baseline["max_wait_probability"])


def test_the_training_reward_is_the_improvement_over_the_rule(traffic):
    """The twin draws the same episodes: following the rule earns exactly 0 at every step,
    across episode ends; always removing workers earns less than the rule."""
    from ml.rl.residual import ResidualVecEnv

    short = CONFIG.replace(episode_steps=50)
    control = ResidualControl(short, 30.0, 0.05, drain_sla_fraction=2.0)
    env = ResidualVecEnv(3, control, traffic)
    env.reset(seed=9)
    follow = np.full(3, control.rule_action)
    rewards = [env.step(follow)[1] for _ in range(120)]  # two episode ends in there
    assert np.all(np.stack(rewards) == 0.0)
    trimmed = [env.step(np.zeros(3, dtype=np.int64))[1] for _ in range(50)]
    assert np.sum(trimmed) < 0
    env.close()


def _target(control: ResidualControl, queue, active: float, rate: float = 5.0, now: float | None = None):
    info = reading_info(np.asarray(queue, dtype=np.float64), rate if now is None else now, rate,
                        active, 0, 0.5)
    return float(control.rule_target(info)[0])


def test_the_backlog_term_drains_only_what_the_pool_would_not_clear_in_time():
    """10 active workers clear 300 tasks in the high class's 30 s SLA: with a threshold of 0.5 a
    backlog of 150 (half the SLA) adds nothing; 450 adds (450 - 150) / (1 x 30) = 10 workers.
    Without a threshold the whole backlog counts (the rule before this one)."""
    plain = ResidualControl(CONFIG, 30.0, 0.05, drain_sla_fraction=1.0, instant_rate=False)
    thresholded = dataclasses.replace(plain, drain_threshold=0.5)
    empty = _target(plain, [0, 0, 0], 10)
    assert _target(thresholded, [150, 0, 0], 10) == empty
    assert _target(thresholded, [450, 0, 0], 10) == pytest.approx(empty + 10)
    assert _target(plain, [450, 0, 0], 10) == pytest.approx(empty + 15)


def test_near_the_cap_every_queued_task_counts():
    """At a rate whose Erlang-C pool is half the largest pool or more, the threshold is ignored:
    a pool that cannot grow much later drains its backlog now."""
    control = ResidualControl(CONFIG, 30.0, 0.05, drain_sla_fraction=1.0, instant_rate=False,
                              drain_threshold=0.5)
    plain = dataclasses.replace(control, drain_threshold=0.0)
    busy_rate = 0.5 * CONFIG.max_workers * CONFIG.service_rate
    near_cap = _target(control, [150, 0, 0], 30, rate=busy_rate)
    assert near_cap == _target(plain, [150, 0, 0], 30, rate=busy_rate)
    assert _target(control, [150, 0, 0], 10) < _target(plain, [150, 0, 0], 10)


def test_the_rule_follows_the_instantaneous_rate_only_past_its_jump_ratio():
    control = ResidualControl(CONFIG, 30.0, 0.05, drain_sla_fraction=None, jump_ratio=3.0)
    smoothed = _target(control, [0, 0, 0], 10, rate=5.0)
    assert _target(control, [0, 0, 0], 10, rate=5.0, now=12.0) == smoothed  # 2.4x: noise
    assert _target(control, [0, 0, 0], 10, rate=5.0, now=20.0) > smoothed  # 4x: a jump
    assert _target(dataclasses.replace(control, jump_ratio=1.5), [0, 0, 0], 10, rate=5.0, now=12.0) > smoothed


def test_a_checkpoint_from_before_the_threshold_keeps_its_rule():
    """Older checkpoints have no drain_threshold or jump_ratio: they load as the rule they were
    trained with (every queued task counts; jumps past 1.5x)."""
    data = ResidualControl(CONFIG, 30.0, 0.05, drain_sla_fraction=2.0).to_dict()
    del data["drain_threshold"], data["jump_ratio"]
    old = ResidualControl.from_dict(data)
    assert old.drain_threshold == 0.0 and old.jump_ratio == 1.5
