"""``PriorityMaxSimEnv``: one PriorityMax queue as a gymnasium environment.

A thin shell around :class:`ml.sim.core.QueueCore` with one environment, so it shares every line of
the dynamics with the vectorized twin (:mod:`ml.sim.vec_env`). Register-free: construct it directly,
or through ``gymnasium.make("PriorityMaxSim-v0")`` after importing :mod:`ml.sim`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ml.sim.config import SimConfig
from ml.sim.core import QueueCore, observation_bounds
from ml.sim.traffic import RateSeries, resolve_traffic


class PriorityMaxSimEnv(gym.Env[np.ndarray, np.int64]):
    """A priority task queue served by an autoscaled worker pool.

    Actions: index into ``config.scale_deltas`` (default -2..+2 workers). Observations: see
    ``ml.sim.core.OBS_FIELDS``. Episodes are ``config.episode_steps`` long and end by truncation.
    ``info`` carries the raw state and each reward component (worker_cost, sla_penalty, churn_cost).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: SimConfig | None = None,
        traffic: RateSeries | str | Path | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self.traffic = resolve_traffic(
            traffic, self.config.mean_arrival_rate, self.config.step_seconds
        )
        self._core = QueueCore(self.config, self.traffic, 1, sampler_threads=1)
        low, high = observation_bounds(self.config)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Discrete(len(self.config.scale_deltas))
        self._only = np.zeros(1, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self._core.arrivals.generator(0) is not self.np_random:
            self._core.seed(0, self.np_random)
        self._core.reset(self._only, options)
        info = self._core.reset_info()
        return self._core.observe(info)[0], _first(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(
                f"action {action!r} is not in {self.action_space} "
                f"(an index into scale_deltas {self.config.scale_deltas})"
            )
        reward, truncated = self._core.step(np.array([int(action)]))
        info = self._core.info
        return self._core.observe(info)[0], float(reward[0]), False, bool(truncated[0]), _first(info)

    def close(self) -> None:
        self._core.close()


def _first(info: dict[str, np.ndarray]) -> dict[str, Any]:
    return {key: value[0] for key, value in info.items()}
