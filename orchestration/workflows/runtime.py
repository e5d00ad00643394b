"""What the compiled ops call while a workflow runs: the ``workflow`` resource.

:class:`WorkflowRecorder` turns each op's events into the run's record: the event itself (store,
the run's JSONL log, the audit log), the run's status (RUNNING on the first node, a final status and the
node results on ``run_*``), and then the ``hooks`` (the API adds metrics, tracing and the
WebSocket push). It is thread-safe: the ops of a run, and several runs, call it concurrently.

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
        self.settings = settings or get_settings()
        #: Called with every event after it is stored (it carries its ``seq`` then).
        self.hooks: list[Callable[[dict[str, Any]], None]] = []
        self._cancel: dict[str, threading.Event] = {}
        self._started: set[str] = set()
        #: Node results of the runs going on here, written to the run record when it ends (one
        #: write per run, not per node; meanwhile they are in the node_end events).
        self._results: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------- cancellation
    def cancel_event(self, run_id: str) -> threading.Event:
        with self._lock:
            return self._cancel.setdefault(run_id, threading.Event())

    def cancel(self, run_id: str) -> None:
        self.cancel_event(run_id).set()

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._cancel.pop(run_id, None)
            self._started.discard(run_id)

    # ------------------------------------------------------------------------------- events
    def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("at", time.time())
        run_id = event["run_id"]
        kind = event["type"]
        if kind == "run_started" or (kind == "node_start" and run_id not in self._started):
            # A run launched from Dagster has no record yet; one launched by the API has one.
            self.store.ensure_run(run_id, event["workflow_id"], event["version"], event.get("job_name", ""),
                                  event.get("variables", {}))
            with self._lock:
                first = run_id not in self._started
                self._started.add(run_id)
            if first:
                self.store.set_status(run_id, RUNNING, event["at"])
        if kind == "node_end" and event.get("status") == "COMPLETED" and "result" in event:
            with self._lock:
                self._results.setdefault(run_id, {})[event["node_id"]] = event["result"]
        if kind in RUN_END:
            with self._lock:
                results = self._results.pop(run_id, None)
            self.store.set_status(run_id, RUN_END[kind], event["at"], error=event.get("error"),
                                  results=results)
        self.store.append_event(event)
        for hook in self.hooks:
            hook(event)
        return event
