"""``PriorityMaxVecEnv``: N PriorityMax queues stepped by one numpy call.

It follows gymnasium's vector API (``gymnasium.vector.VectorEnv``): batched spaces, ``reset(seed=s)``
seeding env i with ``s + i``, info as dicts of arrays with ``_key`` masks, and the autoreset modes
``NEXT_STEP`` (gymnasium's default) and ``SAME_STEP``. With the same seeds it gives exactly the
trajectories of ``SyncVectorEnv`` over N :class:`~ml.sim.env.PriorityMaxSimEnv` - both run
:class:`~ml.sim.core.QueueCore` - only much faster (see ``bench/sim_throughput.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ml.sim.config import SimConfig
from ml.sim.core import QueueCore, observation_bounds
from ml.sim.traffic import RateSeries, resolve_traffic


class PriorityMaxVecEnv(VectorEnv):
    """``num_envs`` independent PriorityMax queues with per-env random generators."""

    def __init__(
        self,
        num_envs: int,
        config: SimConfig | None = None,
        traffic: RateSeries | str | Path | None = None,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        sampler_threads: int | None = None,
    ) -> None:
        self.num_envs = num_envs
        self.config = config or SimConfig()
        self.traffic = resolve_traffic(
            traffic, self.config.mean_arrival_rate, self.config.step_seconds
        )
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        if self.autoreset_mode is AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode DISABLED is not supported; use NEXT_STEP or SAME_STEP")
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": []}
        self._core = QueueCore(self.config, self.traffic, num_envs, sampler_threads=sampler_threads)
        low, high = observation_bounds(self.config)
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(len(self.config.scale_deltas))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._all = np.ones(num_envs, dtype=bool)
        self._obs: np.ndarray | None = None

    # ------------------------------------------------------------------------------- reset
    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed if isinstance(seed, int) else None)
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} envs")
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", self._all), dtype=bool)
        if mask.shape != (n,) or not mask.any():
            raise ValueError(f"reset_mask must be a boolean array of shape ({n},) with a True")
        envs = np.flatnonzero(mask)
        if mask is not self._all and self._obs is None:
            raise ValueError("reset all envs once before resetting a subset with reset_mask")
        for i in envs:
            if seeds[i] is not None or self._core.arrivals.generator(int(i)) is None:
                self._core.seed(int(i), seeding.np_random(seeds[i])[0])
        self._core.reset(envs, options)
        self._autoreset[envs] = False
        info = self._core.reset_info()
        obs = self._core.observe(info)
        if self._obs is not None and not mask.all():
            obs = np.where(mask[:, None], obs, self._obs)
        self._obs = obs
        return obs, self._vector_info(info, mask)

    # -------------------------------------------------------------------------------- step
    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu":
            raise ValueError(f"actions must be {self.num_envs} integers, got shape {actions.shape}")
        # One reduction checks both ends: negative ints become huge as unsigned.
        if actions.astype(np.uint64, copy=False).max() >= self.single_action_space.n:
            raise ValueError(f"actions must be in 0..{self.single_action_space.n - 1}")

        core = self._core
        reward, truncated = core.step(actions)
        info = core.info
        terminated = np.zeros(self.num_envs, dtype=bool)
        final: dict[str, Any] = {}

        if self.autoreset_mode is AutoresetMode.NEXT_STEP and self._autoreset.any():
            done = self._autoreset
            info = self._reset_envs(done, info)
            reward[done] = 0.0
            truncated[done] = False
        obs = core.observe(info)
        if self.autoreset_mode is AutoresetMode.SAME_STEP and truncated.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(truncated):
                final_obs[i] = obs[i]
            final = {
                "final_obs": final_obs,
                "_final_obs": truncated.copy(),
                "final_info": self._vector_info(info, truncated),
                "_final_info": truncated.copy(),
            }
            info = self._reset_envs(truncated, info)
            obs = core.observe(info)

        self._autoreset = truncated | terminated
        self._obs = obs
        # The observation array is handed out, not copied: each step builds a new one.
        return obs, reward, terminated, truncated, {**self._vector_info(info), **final}

    def _reset_envs(self, mask: np.ndarray, info: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Reset the masked envs and splice their reset info into this step's info."""
        self._core.reset(np.flatnonzero(mask))
        fresh = self._core.reset_info()
        spliced = {}
        for key, value in info.items():
            value = value.copy()
            value[mask] = fresh[key][mask]
            spliced[key] = value
        return spliced

    def _vector_info(self, info: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict:
        """gymnasium's vector info layout: every key paired with a ``_key`` mask."""
        mask = (self._all if mask is None else mask).copy()
        out: dict[str, Any] = {}
        for key, value in info.items():
            out[key] = value
            out[f"_{key}"] = mask
        return out

    def get_state(self) -> dict[str, Any]:
        """A snapshot to continue from exactly (checkpointed by PPO so a resume repeats a run)."""
        if self._obs is None:
            raise RuntimeError("call reset() before get_state()")
        return {"core": self._core.get_state(), "autoreset": self._autoreset.copy(),
                "obs": self._obs.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._core.set_state(state["core"])
        self._autoreset = np.array(state["autoreset"], dtype=bool)
        self._obs = np.array(state["obs"], dtype=np.float32)

    def close_extras(self, **kwargs: Any) -> None:
        core = getattr(self, "_core", None)  # absent when __init__ failed (e.g. traffic too short)
        if core is not None:
            core.close()
