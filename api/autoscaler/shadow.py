"""The challenger's decisions in the shadow of the champion's, off the request path.

Every decision the worker serves is handed here with its reading (a queue put, a few µs); one
low-priority thread asks the registry's challenger what it would have done and scores both
targets with the same counterfactual (``ml/sim/counterfactual.py``): the expected cost of moving
the pool to each target from that reading. Nothing it computes is ever served. What it finds goes
to the decision's log entry (``GET /autoscaler/decisions``, field ``shadow``), the worker's
metrics and its health (agreement over the latest decisions, both counterfactual costs), so a
challenger is judged on live traffic, already loaded, before anyone promotes it.

When the thread falls behind (a burst of readings on a busy machine), readings are dropped and
counted rather than queued without bound: the shadow is a sample of live traffic, never a
reason for a decision to wait.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from api.autoscaler import decide
from api.autoscaler.metrics import AutoscalerMetrics
from api.autoscaler.schemas import Decision, Reading
from ml.serving import ServedPolicy
from ml.sim.config import SimConfig
from ml.sim.counterfactual import decision_cost

log = logging.getLogger("api.autoscaler")

#: Readings waiting for the shadow thread; beyond this they are dropped (and counted).
QUEUE_LIMIT = 256
#: Shadow decisions the agreement rate and the cost totals of the health are taken over.
WINDOW = 200


@dataclass
class LoggedDecision:
    """One entry of the worker's decisions log; ``shadow`` is filled in later by the shadow thread."""

    at: float
    decision: Decision
    shadow: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Job:
    entry: LoggedDecision
    reading: Reading
    config: SimConfig  # the champion's (or the default) configuration the decision was made with
    challenger: ServedPolicy


class ShadowRunner:
    """The shadow thread of one worker; :meth:`submit` never blocks."""

    def __init__(self, metrics: AutoscalerMetrics, name: str,
                 initializer: Callable[[], None] | None = None) -> None:
        self.metrics = metrics
        self._jobs: queue.Queue[_Job | None] = queue.Queue(QUEUE_LIMIT)
        self._rng = np.random.default_rng()
        self._window: collections.deque[dict[str, Any]] = collections.deque(maxlen=WINDOW)
        self._lock = threading.Lock()
        self._initializer = initializer
        self._thread = threading.Thread(target=self._run, name=f"autoscaler-shadow-{name}", daemon=True)
        self._thread.start()

    def submit(self, entry: LoggedDecision, reading: Reading, config: SimConfig,
               challenger: ServedPolicy) -> None:
        try:
            self._jobs.put_nowait(_Job(entry, reading, config, challenger))
        except queue.Full:
            self.metrics.shadow_decisions.labels(outcome="dropped").inc()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Whether every reading submitted so far was scored (or dropped) within ``timeout``."""
        jobs = self._jobs  # the queue counts unfinished jobs itself (task_done)
        with jobs.all_tasks_done:
            return jobs.all_tasks_done.wait_for(lambda: jobs.unfinished_tasks == 0, timeout)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):  # full: a daemon thread, it ends with the process
            self._jobs.put_nowait(None)

    def summary(self, version: str | None) -> dict[str, Any] | None:
        """The challenger's record over the latest shadow decisions (None without a challenger)."""
        if version is None:
            return None
        with self._lock:
            own = list(self._window) if self._window and self._window[0]["version"] == version else []
        agreed = sum(s["agreed"] for s in own)
        return {
            "version": version, "decisions": len(own),
            "agreement": round(agreed / len(own), 4) if own else None,
            "champion_cost": round(sum(s["champion_cost"] for s in own), 6),
            "challenger_cost": round(sum(s["cost"] for s in own), 6),
        }

    def _run(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (job := self._jobs.get()) is not None:
            try:
                job.entry.shadow = self._score(job)
            except decide.ReadingError as error:  # the challenger's classes are not the champion's
                log.debug("the challenger cannot decide on this reading: %s", error)
                self.metrics.shadow_decisions.labels(outcome="incompatible").inc()
            except Exception:
                log.exception("a shadow decision failed")
                self.metrics.shadow_decisions.labels(outcome="error").inc()
            finally:
                self._jobs.task_done()

    def _score(self, job: _Job) -> dict[str, Any]:
        challenger, reading, decision, config = job.challenger, job.reading, job.entry.decision, job.config
        action, delta, probability, outside = decide.policy_step(challenger, reading, self._rng)
        target = decide.target(challenger.config, reading, delta)
        queue_now = decide.per_class(config, reading.queue, "queue")
        state = {"queue": queue_now, "arrival_rate": reading.arrival_rate,
                 "active": reading.active_workers, "warming": reading.warming_workers}
        cost = decision_cost(config, target=target, **state).total
        champion_cost = decision_cost(config, target=decision.target_workers, **state).total
        agreed = target == decision.target_workers
        shadow = {"version": challenger.version, "action": action, "delta": delta,
                  "target_workers": target, "action_probability": probability,
                  "fallback": outside is not None, "agreed": agreed,
                  "cost": round(cost, 6), "champion_cost": round(champion_cost, 6)}
        with self._lock:
            if self._window and self._window[0]["version"] != challenger.version:
                self._window.clear()  # a new challenger starts its own record
            self._window.append(shadow)
            agreement = sum(s["agreed"] for s in self._window) / len(self._window)
        metrics = self.metrics
        metrics.shadow_decisions.labels(outcome="agree" if agreed else "disagree").inc()
        metrics.shadow_actions.labels(delta=str(delta)).inc()
        metrics.shadow_cost.labels(model="champion").inc(champion_cost)
        metrics.shadow_cost.labels(model="challenger").inc(cost)
        metrics.shadow_agreement.set(agreement)
        return shadow
