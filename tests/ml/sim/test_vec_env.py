import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from ml.sim import PriorityMaxSimEnv, PriorityMaxVecEnv, SimConfig
from ml.sim.arrivals import PARALLEL_MIN_ENVS

INFO_KEYS = ("arrivals", "queue", "served", "violations", "active_workers", "warming_workers",
             "utilization", "worker_cost", "sla_penalty", "series_index")


def assert_same_trajectories(num_envs, config, mode, steps, seed=11):
    vec = PriorityMaxVecEnv(num_envs, config, autoreset_mode=mode)
    sync = SyncVectorEnv([lambda: PriorityMaxSimEnv(config) for _ in range(num_envs)],
                         autoreset_mode=mode)
    obs_v, info_v = vec.reset(seed=seed)
    obs_s, info_s = sync.reset(seed=seed)
    assert np.array_equal(obs_v, obs_s)
    rng = np.random.default_rng(0)
    for step in range(steps):
        actions = rng.integers(0, 5, num_envs)
        out_v, out_s = vec.step(actions), sync.step(actions)
        for name, a, b in zip(("obs", "reward", "terminated", "truncated"), out_v, out_s,
                              strict=False):
            assert np.array_equal(a, b), (step, name)
        for key in INFO_KEYS:
            assert np.array_equal(out_v[4][key], out_s[4][key]), (step, key)
        if mode is AutoresetMode.SAME_STEP and out_v[3].any():
            for i in np.flatnonzero(out_v[3]):
                assert np.array_equal(out_v[4]["final_obs"][i], out_s[4]["final_obs"][i])
    vec.close()
    sync.close()


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_same_trajectories_as_sync_vector_env_over_several_episodes(mode):
    assert_same_trajectories(6, SimConfig(episode_steps=120), mode, steps=400)


def test_same_trajectories_when_resets_are_drawn_in_threads():
    n = PARALLEL_MIN_ENVS + 8
    assert_same_trajectories(n, SimConfig(episode_steps=40), AutoresetMode.NEXT_STEP, steps=90)


def test_results_do_not_depend_on_the_number_of_threads():
    def run(threads):
        env = PriorityMaxVecEnv(64, SimConfig(episode_steps=30), sampler_threads=threads)
        obs, _ = env.reset(seed=5)
        rewards = [env.step(np.full(64, step % 5))[1] for step in range(70)]
        return obs, np.array(rewards)

    one, two = run(1), run(2)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


def test_vector_api_shapes_and_info_masks():
    env = PriorityMaxVecEnv(4)
    assert env.observation_space.shape == (4, 13)
    assert env.action_space.shape == (4,)
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 13) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(np.array([0, 1, 3, 4]))
    assert reward.shape == (4,) and info["queue"].shape == (4, 3)
    assert info["_queue"].all()
    with pytest.raises(ValueError, match="actions must be in 0..4"):
        env.step(np.array([0, 1, 5, 4]))
    with pytest.raises(ValueError, match="4 integers"):
        env.step(np.array([0, 1]))


def test_partial_reset_with_a_mask():
    env = PriorityMaxVecEnv(3, SimConfig(episode_steps=50))
    env.reset(seed=0)
    for _ in range(10):
        obs, *_ , info = env.step(np.full(3, 2))
    mask = np.array([False, True, False])
    new_obs, new_info = env.reset(options={"reset_mask": mask})
    assert np.array_equal(new_obs[[0, 2]], obs[[0, 2]])
    assert new_info["_queue"].tolist() == [False, True, False]
    assert new_info["queue"][1].sum() == 0
    # The envs are now at different steps; stepping still works for all of them.
    _, _, _, truncated, info = env.step(np.full(3, 2))
    assert info["series_index"][1] == new_info["series_index"][1]


def test_start_and_length_options_per_env(small_trace):
    config = SimConfig(episode_steps=100)
    env = PriorityMaxVecEnv(2, config, small_trace)
    _, info = env.reset(seed=0, options={"start_index": [0, 500], "episode_steps": [10, 100]})
    assert info["series_index"].tolist() == [0, 500]
    for _ in range(10):
        _, _, _, truncated, _ = env.step(np.full(2, 2))
    assert truncated.tolist() == [True, False]
    with pytest.raises(ValueError, match="within 1..100"):
        env.reset(seed=0, options={"episode_steps": 101})


def test_gymnasium_make_vec_uses_the_vectorized_env():
    import gymnasium as gym

    env = gym.make_vec("PriorityMaxSim-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(env.unwrapped, PriorityMaxVecEnv)


def test_a_snapshot_continues_exactly():
    config = SimConfig(episode_steps=50)
    env = PriorityMaxVecEnv(5, config)
    env.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(30):
        env.step(rng.integers(0, 5, 5))
    snapshot = env.get_state()
    actions = [rng.integers(0, 5, 5) for _ in range(80)]  # crosses an autoreset
    expected = [env.step(a)[:2] for a in actions]
    other = PriorityMaxVecEnv(5, config)
    other.set_state(snapshot)
    for a, (obs, reward) in zip(actions, expected, strict=True):
        got_obs, got_reward, *_ = other.step(a)
        assert np.array_equal(got_obs, obs) and np.array_equal(got_reward, reward)
    with pytest.raises(ValueError, match="other num_envs"):
        PriorityMaxVecEnv(4, config).set_state(snapshot)
