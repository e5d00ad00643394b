import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ml.sim import PriorityMaxSimEnv, SimConfig, synthetic_series
from ml.sim.core import observation_fields

KEEP = 2  # action index of a zero delta in the default scale_deltas (-2..2)


def test_passes_gymnasiums_env_checker():
    check_env(PriorityMaxSimEnv(), skip_render_check=True)


def test_passes_stable_baselines3_env_checker():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(PriorityMaxSimEnv(), warn=False)


def test_registered_with_gymnasium():
    env = gym.make("PriorityMaxSim-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (len(observation_fields(SimConfig())),)


def test_reward_is_minus_the_sum_of_its_parts_and_obs_stays_in_bounds():
    env = PriorityMaxSimEnv()
    obs, info = env.reset(seed=1)
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(env.config.episode_steps):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(5)))
        assert env.observation_space.contains(obs)
        parts = info["worker_cost"] + info["sla_penalty"] + info["churn_cost"]
        assert reward == pytest.approx(-parts, rel=1e-5)
        total += reward
    assert truncated and not terminated
    assert total < 0


def test_strict_priority_serves_high_before_low():
    # One worker serves 60 tasks a step against ~600 arrivals, 5% of them high priority.
    config = SimConfig(min_workers=1, max_workers=1, warmup_steps=0,
                       class_shares=(0.05, 0.45, 0.5))
    env = PriorityMaxSimEnv(config)
    env.reset(seed=0)
    for _ in range(30):
        _, _, _, _, info = env.step(KEEP)
        high, normal, low = info["served"]
        assert high == info["arrivals"][0]  # every high task is served at once
        assert normal == pytest.approx(60.0 - high)  # the rest of the capacity goes to normal
        assert low == 0.0
    assert info["queue"][0] == 0 and info["queue"][1] > 0 and info["queue"][2] > info["queue"][1]
    assert info["violations"][2] > 0 and info["violations"][0] == 0


def test_scale_up_waits_for_warm_up_and_scale_down_cancels_warming_first():
    config = SimConfig(warmup_steps=3)
    env = PriorityMaxSimEnv(config)
    _, info = env.reset(seed=0)
    active = info["active_workers"]
    _, _, _, _, info = env.step(4)  # +2
    assert info["warming_workers"] == 2 and info["active_workers"] == active
    _, _, _, _, info = env.step(KEEP)
    _, _, _, _, info = env.step(KEEP)
    assert info["active_workers"] == active
    _, _, _, _, info = env.step(KEEP)
    assert info["active_workers"] == active + 2 and info["warming_workers"] == 0
    env.step(3)  # +1 warming
    _, _, _, _, info = env.step(0)  # -2: cancels the warming one, then one active
    assert info["warming_workers"] == 0 and info["active_workers"] == active + 1


def test_pool_stays_within_min_and_max():
    config = SimConfig(min_workers=2, max_workers=6, warmup_steps=0)
    env = PriorityMaxSimEnv(config)
    env.reset(seed=0)
    for action in [0] * 10:
        _, _, _, _, info = env.step(action)
    assert info["active_workers"] == 2
    for action in [4] * 10:
        _, _, _, _, info = env.step(action)
    assert info["active_workers"] == 6


def test_seeds_make_trajectories_reproducible():
    def rollout(seed):
        env = PriorityMaxSimEnv()
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for step in range(50):
            out.append(env.step(step % 5)[0])
        return np.array(out)

    assert np.array_equal(rollout(7), rollout(7))
    assert not np.array_equal(rollout(7), rollout(8))


def test_trace_replay_with_explicit_start(small_trace):
    env = PriorityMaxSimEnv(SimConfig(episode_steps=60), traffic=small_trace)
    _, info = env.reset(seed=0, options={"start_index": 100})
    assert info["series_index"] == 100
    with pytest.raises(ValueError, match="across a gap"):
        env.reset(seed=0, options={"start_index": 1890})


def test_invalid_action_is_rejected():
    env = PriorityMaxSimEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in Discrete"):
        env.step(7)


def test_synthetic_series_in_tasks_per_second_is_used_as_given():
    series = synthetic_series(days=2).scaled_to(3.0)
    env = PriorityMaxSimEnv(SimConfig(mean_arrival_rate=3.0, episode_steps=100), traffic=series)
    env.reset(seed=0)
    arrivals = sum(env.step(KEEP)[4]["arrivals"].sum() for _ in range(100))
    assert 0.5 * 3.0 * 60 * 100 < arrivals < 2.0 * 3.0 * 60 * 100
