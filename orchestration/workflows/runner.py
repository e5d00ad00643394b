"""Runs workflow versions as Dagster runs, at most WORKFLOW_MAX_CONCURRENT_RUNS at a time.

A run is recorded PENDING when submitted and waits in a queue for one of the worker threads; the
thread executes the compiled job with ``execute_in_process`` on the Dagster instance in the data
home (so the run is in ``dagster run list`` and the UI, under the same run id), with the recorder as
the ``workflow`` resource. ``execute_in_process`` keeps a run's steps in one process, about 20 ms per
op on a persistent instance; the multiprocess executor would cost about 1.5 s per step
(../shared/STACK.md). Cancellation is cooperative: the node running finishes its current call
(a timer or a waiting executor stops at once), no later node starts, and the run ends CANCELLED.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import dagster as dg

from orchestration.instance import ensure_dagster_home
from orchestration.workflows.compile import compile_workflow
from orchestration.workflows.runtime import WorkflowRecorder
from orchestration.workflows.spec import TaskTemplate, WorkflowSpec
from orchestration.workflows.store import WorkflowStore

log = logging.getLogger("orchestration.workflows")
JOB_CACHE = 128
#: Dagster's console logger at CRITICAL: its per-step lines and failure tracebacks would flood the
#: API's stderr
#: (every event is in the instance, the run's JSONL log and the audit log anyway).
QUIET = {"console": {"config": {"log_level": "CRITICAL"}}}


def dagster_instance(settings) -> dg.DagsterInstance:
    """The persistent instance in DAGSTER_HOME (the data home's ``dagster/``)."""
    # dagster.yaml: telemetry off, the run queue, run monitoring, no python_logs (instance.py).
    home = ensure_dagster_home(settings)
    instance = dg.DagsterInstance.from_config(str(home))
    if not instance.get_python_log_dagster_handler_config():
        # Once dagster.yaml holds any setting, Dagster calls logging.config.dictConfig at the start
        # of every run, even with no python_logs handlers to add; with runs on several threads of
        # one process that deadlocks (dictConfig holds logging's module lock and waits for a
        # handler's lock, which another run's thread holds while it waits for the module lock).
        # Without handlers configured the call adds nothing, so it is skipped.
        instance.get_yaml_python_handlers = list
    return instance


class WorkflowRunner:
    def __init__(self, store: WorkflowStore, recorder: WorkflowRecorder, settings,
                 instance: dg.DagsterInstance | None = None) -> None:
        self.store = store
        self.recorder = recorder
        self.settings = settings
        self._instance = instance
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: OrderedDict[tuple, tuple[WorkflowSpec, dg.JobDefinition]] = OrderedDict()
        self._jobs_lock = threading.Lock()
        self.futures: dict[str, Future] = {}

    @property
    def instance(self) -> dg.DagsterInstance:
        with self._lock:
            if self._instance is None:
                self._instance = dagster_instance(self.settings)
            return self._instance

    @property
    def pool(self) -> ThreadPoolExecutor:
        """WORKFLOW_MAX_CONCURRENT_RUNS worker threads, made on the first run."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.settings.workflow_max_concurrent_runs,
                                                thread_name_prefix="workflow-run")
            return self._pool

    # ------------------------------------------------------------------------- compilation
    def templates(self) -> dict[str, TaskTemplate]:
        return {name: TaskTemplate.model_validate(row["template"])
                for name, row in self.store.templates().items()}

    def resolve_workflow(self, workflow_id: str, version: int | None) -> WorkflowSpec | None:
        spec = self.store.spec(workflow_id, version)
        return WorkflowSpec.model_validate(spec) if spec is not None else None

    def job(self, workflow_id: str, version: int | None = None) -> tuple[WorkflowSpec, dg.JobDefinition]:
        """The compiled job of a version (the latest when None). Versions are immutable, so jobs are
        cached, keyed also by what the version references as it resolves now: the versions of its
        subworkflows (one without a pinned version runs the inner workflow's latest) and the stored
        templates (a changed template recompiles, on every replica). KeyError for an unknown
        workflow or version; ValueError when something it references no longer exists."""
        found = self.store.get(workflow_id, version)
        if found is None:
            raise KeyError(f"unknown workflow {workflow_id}" + (f" version {version}" if version else ""))
        version = found["version"]
        spec = WorkflowSpec.model_validate(found["spec"])
        key = (workflow_id, version, self._subworkflow_versions(spec, (workflow_id,)),
               self.store.templates_stamp())
        with self._jobs_lock:
            if key in self._jobs:
                self._jobs.move_to_end(key)
                return self._jobs[key]
        job = compile_workflow(spec, workflow_id=workflow_id, version=version, templates=self.templates(),
                               resolve_workflow=self.resolve_workflow,
                               default_executor=self.settings.workflow_executor_default)
        with self._jobs_lock:
            self._jobs[key] = (spec, job)
            while len(self._jobs) > JOB_CACHE:
                self._jobs.popitem(last=False)
        return spec, job

    def _subworkflow_versions(self, spec: WorkflowSpec, chain: tuple[str, ...]) -> tuple:
        """(workflow_id, version) of every subworkflow reachable from ``spec``, as resolved now."""
        found: list[tuple[str, int | None]] = []
        for node in spec.nodes:
            if node.type != "subworkflow":
                continue
            target = node.config.get("workflow_id")
            current = self.store.get(target) if isinstance(target, str) else None
            version = node.config.get("version") or (current["latest_version"] if current else None)
            found.append((target, version))
            inner = self.resolve_workflow(target, version) if current and target not in chain else None
            if inner is not None:
                found.extend(self._subworkflow_versions(inner, (*chain, target)))
        return tuple(found)

    # ---------------------------------------------------------------------------------- runs
    def start(self, workflow_id: str, version: int | None, variables: dict[str, Any], actor: str) -> dict:
        """Record the run PENDING and queue it; returns the run record. KeyError: unknown workflow
        or version; ValueError: it references something deleted since."""
        spec, job = self.job(workflow_id, version)
        version = int(job.tags["workflow/version"])
        run_id = str(uuid.uuid4())
        merged = {**spec.variables, **variables}
        run = self.store.create_run(run_id, workflow_id, version, job.name, merged, actor)
        self.recorder.cancel_event(run_id)
        future = self.pool.submit(self._execute, run_id, spec, job, merged)
        self.futures[run_id] = future
        # Runs immediately when the run already ended, so no finished run is left in ``futures``.
        future.add_done_callback(lambda _: self.futures.pop(run_id, None))
        return run

    def cancel(self, run_id: str) -> bool:
        """Ask a run this process executes to stop; False when it is not one (finished, unknown,
        or executed by another process: a replica, or a Dagster run worker)."""
        future = self.futures.get(run_id)
        if future is None:
            return False
        self.recorder.cancel(run_id)
        if future.cancel():  # still queued: it never starts
            run = self.store.run(run_id)
            self._emit_end(run_id, workflow_id=run["workflow_id"], version=run["version"],
                           job=run["job_name"], kind="run_cancelled", error="cancelled before it started")
        return True

    def wait(self, run_id: str, timeout: float | None = None) -> dict | None:
        future = self.futures.get(run_id)
        if future is not None:
            with contextlib.suppress(Exception):  # a cancelled future, or a failure already recorded
                future.result(timeout)
        return self.store.run(run_id)

    def _emit_end(self, run_id: str, *, workflow_id: str, version: int, job: str, kind: str,
                  error: str | None = None) -> None:
        event = {"type": kind, "run_id": run_id, "workflow_id": workflow_id, "version": version,
                 "job_name": job, "at": time.time()}
        if error:
            event["error"] = error
        self.recorder.emit(event)
        self.recorder.forget(run_id)

    def _execute(self, run_id: str, spec: WorkflowSpec, job: dg.JobDefinition, variables: dict) -> None:
        workflow_id, version = job.tags["workflow/id"], int(job.tags["workflow/version"])
        end = {"workflow_id": workflow_id, "version": version, "job": job.name}
        try:
            start = next(n.node_id for n in spec.nodes if n.type == "start")
            self.recorder.emit({"type": "run_started", "run_id": run_id, "workflow_id": workflow_id,
                                "version": version, "job_name": job.name, "variables": variables,
                                "at": time.time()})
            result = job.execute_in_process(
                run_config={"ops": {start: {"config": {"variables": variables}}}, "loggers": QUIET},
                instance=self.instance,
                run_id=run_id, raise_on_error=False, resources={"workflow": self.recorder},
                tags={"workflow/source": "api"})
        except Exception as error:  # the instance failed: the run still ends
            log.exception("workflow run %s could not execute", run_id)
            self._emit_end(run_id, **end, kind="run_failed", error=f"{type(error).__name__}: {error}")
            return
        if result.success:  # a cancel that came after the last node changes nothing
            self._emit_end(run_id, **end, kind="run_completed")
        elif self.recorder.cancel_event(run_id).is_set():
            self._emit_end(run_id, **end, kind="run_cancelled", error="cancelled")
        else:
            self._emit_end(run_id, **end, kind="run_failed", error=self._failure(run_id))

    def _failure(self, run_id: str) -> str:
        return (self.store.last_failure(run_id)
                or "the run failed before any node ran (see the Dagster run's logs)")

    def shutdown(self) -> None:
        """Cancel every run of this process (queued ones end CANCELLED at once) and wait for them."""
        for run_id in list(self.futures):
            self.cancel(run_id)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
