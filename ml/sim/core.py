"""The queue dynamics of N independent simulations, as whole-array numpy operations.

One :class:`QueueCore` holds the state of N environments in arrays and advances all of them with one
call to :meth:`QueueCore.step`: there is no Python loop over environments in a step (the short loops
below run over priority classes or warm-up slots). The scalar gymnasium env is this core with N = 1
and the vector env is this core with N > 1, so both run the same code and give the same
trajectories for the same seeds.

Model, per step of ``dt`` seconds and per environment:

1. The action moves the pool by a delta, clipped to [min_workers, max_workers]. Added workers warm
   up for ``warmup_steps`` steps (paid, not serving); removals cancel warming workers first, newest
   first, then active ones.
2. Arrivals per class are Poisson around the traffic rate times the class share.
3. Active workers serve ``active * service_rate * dt`` tasks, strictly by priority (class 0 first);
   the rest queues (FIFO within a class), capped at ``max_queue`` per class (overflow is dropped).
4. The projected wait of the newest task of class k is the backlog ahead of it (classes <= k) over
   the pool's service rate; this step's arrivals beyond the SLA horizon, and dropped tasks, are
   *SLA violations*.
5. reward = -(worker cost + sum_k penalty_k * violations_k + churn cost), each part in ``info``.

Arrays are class-major, (K, N), so per-class rows are contiguous; ``info`` exposes (N, K) views.

Randomness is per environment: each env draws its episodes' arrivals from its own generator, one
episode at a time (:mod:`ml.sim.arrivals`), so results depend neither on N nor on threads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ml.sim.arrivals import EpisodeArrivals
from ml.sim.config import SimConfig
from ml.sim.traffic import SECONDS_PER_DAY, RateSeries

OBS_HIGH_QUEUE = 100.0  # queue lengths, in mean arrivals per step
OBS_HIGH_RATE = 20.0  # arrival rates, in multiples of the mean rate
OBS_HIGH_WAIT = 20.0  # projected waits, in multiples of the class SLA


def observation_fields(config: SimConfig) -> tuple[str, ...]:
    """Names of the observation's components, in order."""
    names = config.class_names
    return (
        *(f"queue_{c}" for c in names),
        "arrival_rate",
        "arrival_rate_smoothed",
        "active_workers",
        "warming_workers",
        "utilization",
        *(f"wait_{c}" for c in names),
        "time_of_day_sin",
        "time_of_day_cos",
    )


#: The observation fields of the default three-class configuration.
OBS_FIELDS = observation_fields(SimConfig())


def observation_bounds(config: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Low and high bounds of one observation (float32)."""
    k = config.num_classes
    high = np.array(
        [OBS_HIGH_QUEUE] * k + [OBS_HIGH_RATE] * 2 + [1.0] * 3 + [OBS_HIGH_WAIT] * k + [1.0] * 2,
        dtype=np.float32,
    )
    low = np.zeros_like(high)
    low[-2:] = -1.0
    return low, high


def observation_from_reading(
    config: SimConfig,
    *,
    queue: np.ndarray,
    arrival_rate: float,
    arrival_rate_smoothed: float,
    active_workers: float,
    warming_workers: float,
    utilization: float,
    seconds_of_day: float,
    est_wait: np.ndarray | None = None,
) -> np.ndarray:
    """One observation (2K + 7,) float32 from a live reading of a real pool, as
    :meth:`QueueCore.observe` builds it from a simulated one: the autoscaler worker's way into a
    policy trained here. ``queue`` per class in tasks, rates in tasks/s, ``est_wait`` per class in
    seconds (None: projected as the simulator does, the backlog ahead over the active pool's
    service rate). Keep both in step: ``tests/ml/sim/test_observation.py`` compares them."""
    queue = np.asarray(queue, dtype=np.float32)
    if est_wait is None:
        drain_rate = max(float(active_workers), 1e-9) * config.service_rate
        est_wait = np.cumsum(queue) / drain_rate
    sla = np.asarray(config.sla_seconds, dtype=np.float32)
    wait = np.minimum(np.asarray(est_wait, dtype=np.float32) / sla, OBS_HIGH_WAIT)
    rates = np.minimum(np.array([arrival_rate, arrival_rate_smoothed], dtype=np.float32)
                       / config.mean_arrival_rate, OBS_HIGH_RATE)
    angle = seconds_of_day * (2 * math.pi / SECONDS_PER_DAY)
    return np.concatenate([
        np.minimum(queue / config.mean_arrivals_per_step, OBS_HIGH_QUEUE),
        rates,
        np.array([active_workers / config.max_workers, warming_workers / config.max_workers, utilization]),
        wait,
        np.array([math.sin(angle), math.cos(angle)]),
    ]).astype(np.float32)


class QueueCore:
    """State and dynamics of ``num_envs`` queue simulations over one traffic series."""

    def __init__(
        self,
        config: SimConfig,
        traffic: RateSeries,
        num_envs: int,
        *,
        sampler_threads: int | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        self.config = cfg = config
        self.traffic = traffic
        self.num_envs = n = num_envs
        k = cfg.num_classes
        self.arrivals = EpisodeArrivals(cfg, traffic, n, threads=sampler_threads)

        self._shares = np.asarray(cfg.class_shares, dtype=np.float64)
        self._sla = np.asarray(cfg.sla_seconds, dtype=np.float32)[:, None]
        self._penalty = tuple(float(p) for p in cfg.sla_penalty)
        self._deltas = np.asarray(cfg.scale_deltas, dtype=np.float32)
        # Time of day per series row, plus the row after the last (the state after an episode).
        seconds = np.append(
            traffic.seconds_of_day(np.arange(len(traffic))),
            (traffic.seconds_of_day(np.array([len(traffic) - 1])) + cfg.step_seconds)
            % SECONDS_PER_DAY,
        )
        angle = seconds * (2 * math.pi / SECONDS_PER_DAY)
        self._tod_sin = np.sin(angle).astype(np.float32)
        self._tod_cos = np.cos(angle).astype(np.float32)

        self.start = np.zeros(n, dtype=np.int64)
        self.length = np.full(n, cfg.episode_steps, dtype=np.int64)
        self._synced = False  # all envs at the same step: arrivals are one contiguous slice

        self.t = np.zeros(n, dtype=np.int64)
        self.queue = np.zeros((k, n), dtype=np.float32)
        self.active = np.zeros(n, dtype=np.float32)
        self.warming = np.zeros((cfg.warmup_steps, n), dtype=np.float32)
        self.rate = np.zeros(n, dtype=np.float32)
        self.rate_smoothed = np.zeros(n, dtype=np.float32)
        self.info: dict[str, np.ndarray] = {}
        self._columns = np.arange(n)
        # numpy's float32 minimum/maximum against a scalar is several times slower here than
        # against an array of the same shape, so the bounds used every step are arrays.
        self._zero_n = np.zeros(n, dtype=np.float32)
        self._zero_kn = np.zeros((k, n), dtype=np.float32)
        self._min_workers = np.full(n, cfg.min_workers, dtype=np.float32)
        self._max_workers = np.full(n, cfg.max_workers, dtype=np.float32)
        self._max_queue = np.full((k, n), cfg.max_queue, dtype=np.float32)
        self._obs_caps = {
            "queue": np.full((k, n), OBS_HIGH_QUEUE, dtype=np.float32),
            "wait": np.full((k, n), OBS_HIGH_WAIT, dtype=np.float32),
            "rate": np.full((2, n), OBS_HIGH_RATE, dtype=np.float32),
        }
        self._inv_sla = (1.0 / self._sla).astype(np.float32)

    def seed(self, index: int, rng: np.random.Generator) -> None:
        self.arrivals.seed(index, rng)

    # ----------------------------------------------------------------------------------- reset
    def reset(self, envs: np.ndarray, options: dict[str, Any] | None = None) -> None:
        """Start a new episode in the given envs (indices), each drawing from its own generator.

        ``options`` may pin where episodes start and how long they are: ``start_index`` and
        ``episode_steps`` (an int for all, or one value per reset env), e.g. to replay a whole
        trace segment. Otherwise each env draws its start uniformly among the valid ones.
        """
        envs = np.asarray(envs, dtype=np.int64)
        cfg, traffic = self.config, self.traffic
        options = options or {}
        lengths = np.broadcast_to(
            np.asarray(options.get("episode_steps", cfg.episode_steps), dtype=np.int64), envs.shape
        )
        if np.any(lengths < 1) or np.any(lengths > cfg.episode_steps):
            raise ValueError(
                f"episode_steps must be within 1..{cfg.episode_steps} (the config's episode length)"
            )
        starts = None
        if "start_index" in options:
            starts = np.broadcast_to(np.asarray(options["start_index"], dtype=np.int64), envs.shape)
            if np.any(starts < 0) or np.any(starts >= len(traffic)):
                raise ValueError(f"start_index must be within 0..{len(traffic) - 1}")
            fits = traffic.segment_end(starts) >= starts + lengths
            if not np.all(fits):
                raise ValueError(
                    f"an episode from row {int(starts[~fits][0])} would run across a gap or past "
                    f"the end of {traffic.name!r}"
                )
        starts = self.arrivals.draw(envs, lengths, starts)

        # Fresh arrays rather than in-place writes: earlier infos handed out views of the old ones.
        first_rate = traffic.rates[starts]
        pool = np.ceil(first_rate / (cfg.service_rate * cfg.initial_utilization))
        self.start = _with(self.start, envs, starts)
        self.length = _with(self.length, envs, lengths)
        self.t = _with(self.t, envs, 0)
        self.queue = _with(self.queue, (slice(None), envs), 0.0)
        self.active = _with(self.active, envs, np.clip(pool, cfg.min_workers, cfg.max_workers))
        self.warming = _with(self.warming, (slice(None), envs), 0.0)
        self.rate = _with(self.rate, envs, first_rate)
        self.rate_smoothed = _with(self.rate_smoothed, envs, first_rate)
        self._synced = bool(np.all(self.t == 0))

    # ------------------------------------------------------------------------------------ step
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every env one step; returns (reward, truncated) and fills :attr:`info`."""
        cfg = self.config
        k_classes = cfg.num_classes

        # 1. Scaling: clip the requested pool, cancel warming workers before active ones.
        warming = self.warming
        active = self.active
        total = active
        for slot in range(cfg.warmup_steps):
            total = total + warming[slot]
        target = total + self._deltas[actions]
        np.maximum(target, self._min_workers, out=target)
        np.minimum(target, self._max_workers, out=target)
        change = target - total
        if cfg.warmup_steps:
            to_remove = np.maximum(total - target, self._zero_n)
            kept = []
            for slot in range(cfg.warmup_steps - 1, -1, -1):
                cancelled = np.minimum(to_remove, warming[slot])
                kept.append(warming[slot] - cancelled)
                to_remove = to_remove - cancelled
            kept.reverse()
            warming = np.empty_like(warming)
            warming[:-1] = kept[1:]
            np.maximum(change, self._zero_n, out=warming[-1])
            active = active - to_remove + kept[0]
            self.warming = warming
        else:
            active = target
        self.active = active

        # 2-3. This step's arrivals, then strict-priority service in class order.
        if self._synced:
            arrivals = self.arrivals.buffer[min(int(self.t[0]), cfg.episode_steps)].copy()
        else:
            rows = np.minimum(self.t, cfg.episode_steps)
            arrivals = self.arrivals.buffer[rows, :, self._columns].T.copy()
        capacity = active * (cfg.service_rate * cfg.step_seconds)
        backlog = self.queue + arrivals
        served = np.empty_like(backlog)
        spare = capacity
        for c in range(k_classes):
            np.minimum(backlog[c], spare, out=served[c])
            spare = spare - served[c]
        queue = backlog
        queue -= served
        overflow = None
        if queue.max() > cfg.max_queue:
            overflow = np.maximum(queue - self._max_queue, self._zero_kn)
            queue -= overflow
        self.queue = queue

        # 4. Projected waits and the SLA violations of this step's arrivals.
        drain_rate = active * cfg.service_rate
        ahead = np.empty_like(queue)
        running = queue[0]
        ahead[0] = running
        for c in range(1, k_classes):
            running = running + queue[c]
            ahead[c] = running
        wait = ahead / drain_rate
        violations = ahead - self._sla * drain_rate
        np.maximum(violations, self._zero_kn, out=violations)
        np.minimum(violations, queue, out=violations)
        np.minimum(violations, arrivals, out=violations)
        if overflow is not None:
            violations += overflow

        # 5. Reward.
        worker_cost = target * cfg.worker_cost_per_step
        sla_penalty = violations[0] * self._penalty[0]
        for c in range(1, k_classes):
            sla_penalty = sla_penalty + violations[c] * self._penalty[c]
        churn_cost = np.abs(change) * cfg.churn_cost
        reward = -(worker_cost + sla_penalty + churn_cost)

        self.rate = arrivals.sum(axis=0) * (1.0 / cfg.step_seconds)
        self.rate_smoothed = self.rate_smoothed + cfg.rate_smoothing_alpha * (
            self.rate - self.rate_smoothed
        )
        series_index = self.start + self.t
        self.t = self.t + 1
        self.info = {
            "arrivals": arrivals.T,
            "served": served.T,
            "queue": queue.T,
            "violations": violations.T,
            "est_wait": wait.T,
            "active_workers": active,
            "warming_workers": target - active,
            "utilization": 1.0 - spare / capacity,
            "arrival_rate": self.rate,
            "arrival_rate_smoothed": self.rate_smoothed,
            "worker_delta": change,
            "worker_cost": worker_cost,
            "sla_penalty": sla_penalty,
            "churn_cost": churn_cost,
            "series_index": series_index,
        }
        return reward, self.t >= self.length

    def reset_info(self) -> dict[str, np.ndarray]:
        """The info of envs that just reset: their state, with nothing yet arrived or served."""
        n, k = self.num_envs, self.config.num_classes
        zeros, zeros_k = np.zeros(n, dtype=np.float32), np.zeros((n, k), dtype=np.float32)
        return {
            "arrivals": zeros_k,
            "served": zeros_k,
            "queue": self.queue.T,
            "violations": zeros_k,
            "est_wait": zeros_k,
            "active_workers": self.active,
            "warming_workers": self.warming.sum(axis=0),
            # Before any service: the load the pool faces at the episode's first rate.
            "utilization": np.minimum(self.rate / (self.active * self.config.service_rate), 1.0),
            "arrival_rate": self.rate,
            "arrival_rate_smoothed": self.rate_smoothed,
            "worker_delta": zeros,
            "worker_cost": zeros,
            "sla_penalty": zeros,
            "churn_cost": zeros,
            "series_index": self.start + self.t,
        }

    # --------------------------------------------------------------------------------- observe
    def observe(self, info: dict[str, np.ndarray]) -> np.ndarray:
        """Observations (N, 2K + 7) float32, in the order of :func:`observation_fields`."""
        cfg = self.config
        caps = self._obs_caps
        queue = np.minimum(self.queue * (1.0 / cfg.mean_arrivals_per_step), caps["queue"])
        wait = np.minimum(info["est_wait"].T * self._inv_sla, caps["wait"])
        rates = np.minimum(np.stack([self.rate, self.rate_smoothed]) * (1.0 / cfg.mean_arrival_rate),
                           caps["rate"])
        per_worker = 1.0 / cfg.max_workers
        row = self.start + self.t
        # Fields are computed as contiguous rows and stacked once: writing columns one by one into
        # an (N, F) array costs more than the arithmetic.
        return np.stack(
            [
                *queue,
                *rates,
                self.active * per_worker,
                info["warming_workers"] * per_worker,
                info["utilization"],
                *wait,
                self._tod_sin[row],
                self._tod_cos[row],
            ],
            axis=1,
            dtype=np.float32,
        )

    # ------------------------------------------------------------------------------- state
    _STATE_ARRAYS = ("t", "queue", "active", "warming", "rate", "rate_smoothed", "start", "length")

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue these simulations exactly: arrays (copied), the episode
        arrivals and every env's generator state (see :meth:`set_state`)."""
        return {
            **{name: getattr(self, name).copy() for name in self._STATE_ARRAYS},
            "arrivals": self.arrivals.buffer.copy(),
            "generators": [None if g is None else g.bit_generator.state
                           for g in (self.arrivals.generator(i) for i in range(self.num_envs))],
            "synced": self._synced,
            "info": {k: np.array(v) for k, v in self.info.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state["arrivals"].shape != self.arrivals.buffer.shape:
            raise ValueError(
                f"simulator state is for arrivals of shape {state['arrivals'].shape}, this "
                f"simulator has {self.arrivals.buffer.shape} (other num_envs or episode_steps)"
            )
        for name in self._STATE_ARRAYS:
            setattr(self, name, np.array(state[name], dtype=getattr(self, name).dtype))
        self.arrivals.buffer[...] = state["arrivals"]
        for i, generator_state in enumerate(state["generators"]):
            if generator_state is not None:
                generator = np.random.Generator(
                    getattr(np.random, generator_state["bit_generator"])()
                )
                generator.bit_generator.state = generator_state
                self.seed(i, generator)
        self._synced = bool(state["synced"])
        self.info = {k: np.array(v) for k, v in state["info"].items()}

    def close(self) -> None:
        self.arrivals.close()


def _with(array: np.ndarray, index: Any, value: Any) -> np.ndarray:
    """A copy of ``array`` with ``array[index] = value``."""
    array = array.copy()
    array[index] = value
    return array
