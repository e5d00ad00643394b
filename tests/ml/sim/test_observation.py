"""A live reading becomes the observation the simulator would have given the policy."""

import numpy as np
import pytest

from ml.sim import PriorityMaxVecEnv, SimConfig
from ml.sim.core import observation_from_reading


def seconds_of_day(env: PriorityMaxVecEnv, row: int) -> float:
    """The time of day the simulator observes after the step of ``row - 1``: ``row``'s, or past
    the trace's end one step after its last row."""
    if row < len(env.traffic):
        return float(env.traffic.seconds_of_day(np.array([row]))[0])
    return (seconds_of_day(env, row - 1) + env.config.step_seconds) % 86_400


def reading(env: PriorityMaxVecEnv, info: dict, i: int, with_wait: bool) -> dict:
    return {
        "queue": info["queue"][i],
        "arrival_rate": float(info["arrival_rate"][i]),
        "arrival_rate_smoothed": float(info["arrival_rate_smoothed"][i]),
        "active_workers": float(info["active_workers"][i]),
        "warming_workers": float(info["warming_workers"][i]),
        "utilization": float(info["utilization"][i]),
        "seconds_of_day": seconds_of_day(env, int(info["series_index"][i]) + 1),
        "est_wait": info["est_wait"][i] if with_wait else None,
    }


@pytest.mark.parametrize("with_wait", [True, False], ids=["given wait", "projected wait"])
def test_a_reading_of_a_simulated_pool_gives_its_observation(with_wait):
    config = SimConfig(episode_steps=200)
    env = PriorityMaxVecEnv(3, config)
    env.reset(seed=5)
    rng = np.random.default_rng(1)
    compared = 0
    for _ in range(150):
        obs, _, _, _, info = env.step(rng.integers(0, len(config.scale_deltas), 3))
        for i in range(3):
            built = observation_from_reading(config, **reading(env, info, i, with_wait))
            np.testing.assert_allclose(built, obs[i], rtol=1e-5, atol=1e-5)
            compared += 1
    env.close()
    assert compared == 450


def test_the_observation_is_clipped_like_the_simulators():
    config = SimConfig()
    built = observation_from_reading(config, queue=[1e9, 0, 0], arrival_rate=1e6, arrival_rate_smoothed=0,
                                     active_workers=1, warming_workers=0, utilization=1, seconds_of_day=0)
    k = config.num_classes
    assert built[0] == 100.0 and built[k] == 20.0  # OBS_HIGH_QUEUE, OBS_HIGH_RATE
    assert built[-2:].tolist() == [0.0, 1.0]
