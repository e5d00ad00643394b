"""What the compiled ops call while a workflow runs: the ``workflow`` resource.

:class:`WorkflowRecorder` turns each op's events into the run's record: the event itself (store,
the run's JSONL log, the audit log); the run's status: RUNNING on the first node, and on ``run_*``
a final status with the node results, read from the run's node_end events whichever process
stored them; then the ``hooks`` (the API adds metrics, tracing and the WebSocket push). It is
thread-safe: the ops of a run, and several runs, call it concurrently.

The same recorder, without hooks, is the resource of the Dagster code location, so a workflow
launched from the Dagster UI or ``dagster job launch`` is recorded in the same store: the API's
WebSocket, replay and run routes see it (its hub polls the event log).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from orchestration.workflows.store import RUN_END, RUNNING, WorkflowStore
from prioritymax.settings import Settings, get_settings


class WorkflowRecorder:
    def __init__(self, store: WorkflowStore, settings: Settings | None = None) -> None:
        self.store = store
        #: What the executors run with (allowlists, container mode): the API's, or the location's.
        self.settings = settings or get_settings()
        #: Called with every event after it is stored (it carries its ``seq`` then).
        self.hooks: list[Callable[[dict[str, Any]], None]] = []
        self._cancel: dict[str, threading.Event] = {}
        self._started: set[str] = set()
        #: run_id -> (root run id, node_id -> what it reuses): set for a resumed run by the runner.
        self._lineage: dict[str, tuple[str, dict[str, dict]]] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------- lineage
    def prepare(self, run_id: str, root_run_id: str, reused: dict[str, dict]) -> None:
        """What a resumed run's ops need: the root run id (idempotency keys) and the completed
        nodes of the run it resumes (their outputs are reused, not recomputed)."""
        with self._lock:
            self._lineage[run_id] = (root_run_id, reused)

    def root_run_id(self, run_id: str) -> str:
        """The first run of a resume chain; a run that resumes nothing is its own root."""
        with self._lock:
            return self._lineage.get(run_id, (run_id, {}))[0]

    def reused(self, run_id: str, node_id: str) -> dict | None:
        """The recorded output of ``node_id`` when this run reuses it, else None."""
        with self._lock:
            return self._lineage.get(run_id, (run_id, {}))[1].get(node_id)

    # ------------------------------------------------------------------------- cancellation
    def cancel_event(self, run_id: str) -> threading.Event:
        with self._lock:
            return self._cancel.setdefault(run_id, threading.Event())

    def cancel(self, run_id: str) -> None:
        self.cancel_event(run_id).set()

    def stop(self, run_id: str) -> bool:
        """Cancel a run that is going on here (set up and not yet forgotten); False otherwise, and
        nothing is left behind for a run already over."""
        with self._lock:
            event = self._cancel.get(run_id)
        if event is None:
            return False
        event.set()
        return True

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._cancel.pop(run_id, None)
            self._started.discard(run_id)
            self._lineage.pop(run_id, None)

    # ------------------------------------------------------------------------------- events
    def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("at", time.time())
        run_id, kind = event["run_id"], event["type"]
        status, results = None, None
        if kind in ("run_started", "node_start"):
            with self._lock:
                first = run_id not in self._started
                self._started.add(run_id)
            if first:
                if kind == "node_start":  # launched from Dagster: no run_started, no record yet
                    self.store.ensure_run(run_id, event["workflow_id"], event["version"],
                                          event.get("job_name", ""), {})
                status = RUNNING
        elif kind in RUN_END:
            status, results = RUN_END[kind], self.store.node_results(run_id)
        self.store.append_event(event, status, results)
        for hook in self.hooks:
            hook(event)
        return event
