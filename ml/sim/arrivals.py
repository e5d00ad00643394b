"""Episode arrivals: each env's start row and its Poisson arrivals for a whole episode.

Arrivals do not depend on actions, so an env draws its whole episode of them when it resets, from
its own generator. Those Poisson draws are the largest cost of the simulator at large N (three
variates per env-step at ~100 ns each here, against a few hundred ns for the rest of a step).
Drawing per episode in bulk removes the per-step call overhead, and a reset of many envs together
draws in a small thread pool (numpy releases the GIL while it samples), with the stepping thread
waiting, so nothing competes with it for the GIL. numpy's exact Poisson sampler is kept: the
distribution is untouched.

Determinism: each generator is used by one thread at a time, and each env's draws happen in the
same order (start row, then arrivals) whatever N or the number of threads, so N scalar envs and
one vectorized env with the same seeds draw exactly the same episodes.

(Drawing the next episode in the background while the current one runs was tried and measured
slower on 2 cores: the sampling threads and the stepping thread convoy on the GIL.)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ml.sim.config import SimConfig
from ml.sim.traffic import RateSeries

#: Resets of at least this many envs together draw in the thread pool.
PARALLEL_MIN_ENVS = 32
_CHUNK = 256  # envs sampled into one contiguous block before it is written to the buffer


class EpisodeArrivals:
    """The arrivals of the current episode of each of ``num_envs`` envs."""

    def __init__(
        self,
        config: SimConfig,
        traffic: RateSeries,
        num_envs: int,
        *,
        threads: int | None = None,
    ) -> None:
        self.config = config
        self.traffic = traffic
        self.num_envs = num_envs
        #: buffer[t, k, i]: class-k arrivals of env i at step t of its current episode. Time- and
        #: class-major so that one step of all envs is one contiguous (K, N) slice; the row after
        #: an episode's last step stays zero.
        self.buffer = np.zeros(
            (config.episode_steps + 1, config.num_classes, num_envs), dtype=np.float32
        )
        self._mean_per_step = traffic.rates[:, None] * (
            config.step_seconds * np.asarray(config.class_shares)
        )
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._threads = threads if threads is not None else min(2, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._valid = {config.episode_steps: traffic.valid_starts(config.episode_steps)}

    def seed(self, env: int, rng: np.random.Generator) -> None:
        self._rngs[env] = rng

    def generator(self, env: int) -> np.random.Generator | None:
        return self._rngs[env]

    def draw(
        self,
        envs: np.ndarray,
        lengths: np.ndarray,
        start_index: np.ndarray | None = None,
    ) -> np.ndarray:
        """Draw a new episode for each of ``envs``; returns the start rows.

        Each env draws its start uniformly among the rows an episode of its length may start at
        (unless ``start_index`` is given), then its Poisson arrivals.
        """
        for env in envs:
            if self._rngs[env] is None:
                raise RuntimeError(f"env {env} has no random generator: reset it with a seed first")
        starts = np.empty(len(envs), dtype=np.int64)
        if start_index is None:
            for length in np.unique(lengths):  # computed here, not in the sampling threads
                self._valid_starts(int(length))
        chunks = [
            chunk
            for length in np.unique(lengths)
            for chunk in np.array_split(
                np.flatnonzero(lengths == length), max(1, int(np.sum(lengths == length)) // _CHUNK)
            )
        ]

        def draw_chunk(rows: np.ndarray) -> None:
            self._draw(envs[rows], int(lengths[rows[0]]), starts, rows, start_index)

        if len(envs) >= PARALLEL_MIN_ENVS and self._threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="pmx-arrivals")
            list(self._pool.map(draw_chunk, chunks))
        else:
            for chunk in chunks:
                draw_chunk(chunk)
        return starts

    def _draw(
        self,
        envs: np.ndarray,
        length: int,
        starts: np.ndarray,
        rows: np.ndarray,
        start_index: np.ndarray | None,
    ) -> None:
        """Sample env by env into a contiguous block, then write the block's columns at once:
        writing one env at a time into the time-major buffer would touch a cache line per value."""
        valid = self._valid_starts(length) if start_index is None else None
        block = np.zeros((len(envs), *self.buffer.shape[:2]), dtype=np.float32)
        for j, env in enumerate(envs):
            rng = self._rngs[env]
            if start_index is None:
                start = int(valid[rng.integers(len(valid))])
            else:
                start = int(start_index[rows[j]])
            starts[rows[j]] = start
            block[j, :length] = rng.poisson(self._mean_per_step[start : start + length])
        columns = envs
        if envs[-1] - envs[0] + 1 == len(envs) and np.all(np.diff(envs) == 1):
            columns = slice(int(envs[0]), int(envs[-1]) + 1)  # a contiguous run: a plain slice
        self.buffer[:, :, columns] = block.transpose(1, 2, 0)

    def _valid_starts(self, length: int) -> np.ndarray:
        if length not in self._valid:
            self._valid[length] = self.traffic.valid_starts(length)
        return self._valid[length]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
