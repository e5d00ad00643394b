"""A trace replayed through an autoscaler worker: the live loop of ``pmx replay`` and ``pmx up``.

Each simulated step (one row of the trace) the simulated pool's state goes to the worker as a
reading (``POST /autoscaler/decide``) and the worker's target is applied to that pool, so the
worker's decisions, and nothing else, size it: the closed loop the project exists for, at a speed
a person can watch. Beside it a twin pool fed the same arrivals (the same seed: arrivals do not
depend on the pool) is sized by the HPA rule, so each step also says what HPA would have done.

Every step is one line of a JSON-lines timeline (:class:`Timeline`, in the data home) that the
dashboard's Autoscaler page plots: load, both pools, queue per class, the decision's reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ml.sim.config import SimConfig
from ml.sim.policies import HPAPolicy
from ml.sim.traffic import RateSeries
from ml.sim.vec_env import PriorityMaxVecEnv
from prioritymax.files import append_jsonl, atomic_write_bytes

#: The replayed pool is env 0 of the pair, the HPA twin env 1.
SERVED, TWIN = 0, 1
#: Steps the timeline keeps (it is cut back to this when it holds twice as many).
KEEP_STEPS = 1440
#: A speed that shows an hour of traffic in a minute.
DEFAULT_SPEED = 60.0

Decide = Callable[[dict[str, Any]], dict[str, Any]]


def reading_from(info: dict[str, np.ndarray], env: int, config: SimConfig,
                 tenant: str | None) -> dict[str, Any]:
    """Env ``env``'s state as the JSON body of ``POST /autoscaler/decide``."""
    return {
        "tenant": tenant,
        "queue": {name: float(q) for name, q in zip(config.class_names, info["queue"][env], strict=True)},
        "arrival_rate": float(info["arrival_rate"][env]),
        "arrival_rate_smoothed": float(info["arrival_rate_smoothed"][env]),
        "active_workers": int(info["active_workers"][env]),
        "warming_workers": int(info["warming_workers"][env]),
        "utilization": float(np.clip(info["utilization"][env], 0.0, 1.0)),
    }


def pool_of(info: dict[str, np.ndarray], env: int) -> int:
    return int(info["active_workers"][env] + info["warming_workers"][env])


def action_toward(config: SimConfig, current: int, target: int) -> int:
    """The action that moves the pool toward ``target`` as far as one step allows (the worker may
    run another configuration's deltas), as the rules of :mod:`ml.sim.policies` do."""
    target = min(max(target, config.min_workers), config.max_workers)
    return int(config.action_for_delta(np.asarray(target - current)))


def worker_decide(url: str, token: str | None = None, timeout: float = 10.0) -> Decide:
    """A :data:`Decide` that asks the worker at ``url`` (keeping one connection open)."""
    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                          headers={"Authorization": f"Bearer {token}"} if token else {})

    def decide(reading: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/autoscaler/decide", json=reading)
        if response.status_code != 200:
            raise httpx.HTTPStatusError(f"POST /autoscaler/decide answered {response.status_code}: "
                                        f"{response.text[:300]}", request=response.request, response=response)
        return response.json()

    return decide


@dataclass
class TraceReplay:
    """The replayed pool and its HPA twin over ``traffic``, from ``start_row``, segment by segment
    (a gap in the trace ends an episode; the trace's end wraps around to ``start_row``)."""

    traffic: RateSeries
    config: SimConfig = field(default_factory=SimConfig)
    start_row: int = 0
    seed: int = 0
    tenant: str = "replay"
    _env: PriorityMaxVecEnv = field(init=False, repr=False)
    _hpa: HPAPolicy = field(init=False, repr=False)
    _info: dict[str, np.ndarray] = field(init=False, repr=False)
    _obs: np.ndarray = field(init=False, repr=False)
    _row: int = field(init=False, repr=False)
    _episode: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not 0 <= self.start_row < len(self.traffic):
            raise ValueError(f"start row {self.start_row} is outside the trace's {len(self.traffic)} rows")
        # An episode runs to the end of its segment, however long: the pool is never reset but
        # where the trace itself has a gap.
        longest = int((self.traffic.segment_bounds[:, 1] - self.traffic.segment_bounds[:, 0]).max())
        self._env = PriorityMaxVecEnv(2, dataclasses.replace(self.config, episode_steps=longest),
                                      self.traffic)
        self._hpa = HPAPolicy(self.config)
        self._begin(self.start_row)

    def _begin(self, row: int) -> None:
        """A new episode of both pools from ``row`` to the end of its segment, on one seed."""
        length = int(self.traffic.segment_end(np.array([row]))[0]) - row
        if length < 2:  # a one-row segment: go on from the next one (or wrap)
            row = self._next_row(row + length)
            length = int(self.traffic.segment_end(np.array([row]))[0]) - row
        seed = self.seed + self._episode
        self._episode += 1
        self._obs, self._info = self._env.reset(seed=[seed, seed],
                                                options={"start_index": row, "episode_steps": length})
        self._hpa.reset(2)
        self._row = row

    def _next_row(self, row: int) -> int:
        return row if row < len(self.traffic) else self.start_row

    def step(self, decide: Decide) -> dict[str, Any]:
        """One step: the worker decides for the served pool, HPA for the twin; both move. Returns
        the step's timeline entry (the state the decision was made on, and the decision)."""
        info, cfg = self._info, self.config
        reading = reading_from(info, SERVED, cfg, self.tenant)
        asked = time.perf_counter()
        decision = decide(reading)
        decide_ms = (time.perf_counter() - asked) * 1000
        served_action = action_toward(cfg, pool_of(info, SERVED), int(decision["target_workers"]))
        hpa_action = int(self._hpa.act(self._obs, info)[TWIN])
        index = self._row  # the trace row this decision's step simulates
        entry = {
            "trace_time": str(self.traffic.timestamps[index].astype("datetime64[s]")) + "Z",
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "row": index,
            "arrival_rate": reading["arrival_rate"],
            "workers": pool_of(info, SERVED),
            "target_workers": int(decision["target_workers"]),
            "hpa_workers": pool_of(info, TWIN),
            **{f"queue_{name}": q for name, q in reading["queue"].items()},
            **{f"hpa_queue_{name}": float(q) for name, q in zip(cfg.class_names, info["queue"][TWIN],
                                                                 strict=True)},
            "mode": decision.get("mode"),
            "policy_version": decision.get("policy_version"),
            "reason": decision.get("reason"),
            "worker": decision.get("worker"),
            "decide_ms": round(decide_ms, 2),
        }
        actions = np.array([served_action, hpa_action])
        self._obs, _, terminated, truncated, self._info = self._env.step(actions)
        entry["cost"] = float(self._info["worker_cost"][SERVED] + self._info["churn_cost"][SERVED])
        entry["sla_penalty"] = float(self._info["sla_penalty"][SERVED])
        entry["hpa_cost"] = float(self._info["worker_cost"][TWIN] + self._info["churn_cost"][TWIN])
        entry["hpa_sla_penalty"] = float(self._info["sla_penalty"][TWIN])
        self._row += 1
        if terminated[SERVED] or truncated[SERVED]:
            self._begin(self._next_row(self._row))
        return entry

    def close(self) -> None:
        self._env.close()


class Timeline:
    """The replay's steps as JSON lines in ``path``, the newest last; cut back to the latest
    :data:`KEEP_STEPS` once it holds twice as many (a rewrite, then an atomic rename)."""

    def __init__(self, path: Path, keep: int = KEEP_STEPS) -> None:
        self.path, self.keep = path, keep
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")  # a replay starts a fresh timeline
        self._lines = 0

    def append(self, entry: dict[str, Any]) -> None:
        append_jsonl(self.path, entry)
        self._lines += 1
        if self._lines >= 2 * self.keep:
            kept = self.path.read_text().splitlines()[-self.keep:]
            atomic_write_bytes(self.path, ("\n".join(kept) + "\n").encode())
            self._lines = len(kept)


def run(replay: TraceReplay, decide: Decide, timeline: Timeline, *, speed: float = DEFAULT_SPEED,
        steps: int | None = None, say: Callable[[str], None] = print) -> Iterator[dict[str, Any]]:
    """Step ``replay`` in real time at ``speed`` simulated seconds per second (0: as fast as the
    worker answers), ``steps`` times or forever, yielding each entry once it is in the timeline.

    A worker that does not answer is waited for (said once, then once when it answers again): the
    replay outlives a worker's restart, as a real pool outlives its autoscaler's.
    """
    interval = replay.config.step_seconds / speed if speed > 0 else 0.0
    next_at = time.monotonic()
    done, waiting = 0, False
    while steps is None or done < steps:
        try:
            entry = replay.step(decide)
        except httpx.HTTPError as error:
            if not waiting:
                say(f"replay: the worker did not answer ({error}); retrying every second")
                waiting = True
            time.sleep(1.0)
            next_at = time.monotonic()
            continue
        if waiting:
            say("replay: the worker answers again")
            waiting = False
        timeline.append(entry)
        done += 1
        yield entry
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()  # behind: go on from now rather than rush to catch up
