"""Runs workflow versions as Dagster runs, at most WORKFLOW_MAX_CONCURRENT_RUNS at a time.

A run is recorded PENDING when submitted and waits in a queue for one of the worker threads; the
thread executes the compiled job with ``execute_in_process`` on the Dagster instance in the data
home (so the run is in ``dagster run list`` and the UI, under the same run id), with the recorder as
the ``workflow`` resource. ``execute_in_process`` keeps a run's steps in one process, about 20 ms per
op on a persistent instance; the multiprocess executor would cost about 1.5 s per step
(../shared/STACK.md). Cancellation is cooperative: the node running finishes its current call
(a timer or a waiting executor stops at once), no later node starts, and the run ends CANCELLED.

Runs survive their process (DESIGN.md decision 10). Every run this runner queues or executes holds
a lease in the store from its creation to its end event; :class:`LeaseKeeper` renews them every
``workflow_lease_renew_seconds``. :meth:`WorkflowRunner.reclaim` (the API calls it at start-up and
in its maintenance loop) takes over the runs whose lease lapsed: a RUNNING one ends FAILED
"interrupted" (its running nodes too), a PENDING one, lost from a dead process's queue, is queued
here. A run whose lease this process lost (it stalled past the expiry and another reclaimed it) is
stopped here and records no end of its own.

:meth:`WorkflowRunner.resume` re-executes a FAILED or CANCELLED run as Dagster re-executes from
failure: a *new* run (its own Dagster run id, tagged ``dagster/parent_run_id`` and
``dagster/root_run_id``) that reuses the outputs of the nodes the parent completed and executes the
rest. Idempotency keys of http nodes derive from the root run id, so they repeat across the chain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
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
from orchestration.workflows.store import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    WorkflowStore,
)

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


class NotResumable(Exception):
    """The run cannot be resumed in its state (still active, or it completed); says why."""


class LeaseKeeper:
    """Renews the leases of the runs a runner holds, on a daemon thread that lives only while the
    runner holds some: a runner never shut down (a test's, a CLI's) leaves no thread behind."""

    def __init__(self, runner: WorkflowRunner) -> None:
        self.runner = runner
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def ensure(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="workflow-leases", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.runner.settings.workflow_lease_renew_seconds):
            with self._lock:  # deciding to end and ensure() starting one are exclusive
                held = list(self.runner.futures)
                if not held:
                    self._thread = None
                    return
            try:
                self.runner.renew(held)
            except Exception:  # a busy database: the next beat tries again, well before expiry
                log.exception("renewing workflow run leases failed")
        with self._lock:
            self._thread = None


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
        #: Who holds this runner's leases: unique per process and runner, readable in the store.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leases = LeaseKeeper(self)
        #: Runs whose lease another process took over while this one still executes them.
        self._lost: set[str] = set()

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
        return self._submit(spec, job, {**spec.variables, **variables}, actor)

    def resume(self, run_id: str, actor: str) -> dict:
        """A new run that re-executes ``run_id`` from its first unfinished node, reusing the outputs
        of the nodes it completed, with its variables; returns the new run's record. KeyError: the
        run is unknown, or its workflow version is gone; :class:`NotResumable`: it is still active
        or it completed."""
        parent = self.store.run(run_id)
        if parent is None:
            raise KeyError(f"run {run_id} not found")
        if parent["status"] in (PENDING, RUNNING):
            raise NotResumable(f"run {run_id} is still {parent['status']}: cancel it first, or wait for "
                               "it to end (one whose process stopped is reclaimed when its lease expires)")
        if parent["status"] not in (FAILED, CANCELLED):
            raise NotResumable(f"run {run_id} already {parent['status']}: there is nothing to resume")
        spec, job = self.job(parent["workflow_id"], parent["version"])
        return self._submit(spec, job, parent["input_variables"], actor, parent=parent)

    def _submit(self, spec: WorkflowSpec, job: dg.JobDefinition, variables: dict[str, Any], actor: str,
                parent: dict | None = None) -> dict:
        """Record a run PENDING, leased by this runner (a resume names its parent and root), and
        queue it."""
        run_id = str(uuid.uuid4())
        run = self.store.create_run(
            run_id, job.tags["workflow/id"], int(job.tags["workflow/version"]), job.name, variables, actor,
            owner=self.owner, lease_seconds=self.settings.workflow_lease_seconds,
            parent_run_id=parent["run_id"] if parent else None,
            root_run_id=parent["root_run_id"] if parent else None)
        self._queue(run, spec, job)
        return run

    def _queue(self, run: dict, spec: WorkflowSpec, job: dg.JobDefinition) -> None:
        """Queue a leased run for a worker thread; a resumed run first learns what it reuses."""
        run_id = run["run_id"]
        self.recorder.cancel_event(run_id)
        tags = {"workflow/source": "api"}
        if run.get("parent_run_id"):
            reused = self.store.completed_nodes(run["parent_run_id"])
            self.recorder.prepare(run_id, run["root_run_id"], reused)
            tags.update({"dagster/parent_run_id": run["parent_run_id"],
                         "dagster/root_run_id": run["root_run_id"]})
        future = self.pool.submit(self._execute, run_id, spec, job, run["input_variables"], tags)
        self.futures[run_id] = future
        # Runs immediately when the run already ended, so no finished run is left in ``futures``.
        future.add_done_callback(lambda _: self.futures.pop(run_id, None))
        self.leases.ensure()

    # ------------------------------------------------------------------------------ leases
    def renew(self, run_ids: list[str]) -> None:
        """Renew this runner's leases on ``run_ids``; stop the runs among them it lost."""
        held = self.store.renew_leases(self.owner, run_ids, self.settings.workflow_lease_seconds)
        for run_id in set(run_ids) - held:
            self._lost.add(run_id)  # before the stop, so a run ending meanwhile leaves nothing behind
            if self.recorder.stop(run_id):
                log.warning("workflow run %s: its lease was taken over; it is stopped here", run_id)
            else:
                self._lost.discard(run_id)

    def reclaim(self) -> dict[str, list[str]]:
        """Take over every orphan (a run whose lease lapsed): a RUNNING one ends FAILED
        "interrupted", a PENDING one is queued here. Another process reclaiming at the same moment
        gets each run at most once (:meth:`WorkflowStore.take_lease`)."""
        done: dict[str, list[str]] = {"interrupted": [], "adopted": []}
        for run in self.store.orphaned_runs():
            if not self.store.take_lease(run["run_id"], self.owner, self.settings.workflow_lease_seconds):
                continue
            if run["status"] == PENDING and self._adopt(run):
                done["adopted"].append(run["run_id"])
            else:
                self._interrupt(run)
                done["interrupted"].append(run["run_id"])
        return done

    def cancel_orphan(self, run_id: str, actor: str) -> bool:
        """Cancel a run whose process stopped (its lease lapsed) by reclaiming it here: it ends
        CANCELLED "interrupted". False when it is not an orphan."""
        orphan = self.store.orphaned_runs(run_id=run_id)
        if not orphan or not self.store.take_lease(run_id, self.owner, self.settings.workflow_lease_seconds):
            return False
        self._interrupt(orphan[0], cancelled_by=actor)
        return True

    def _adopt(self, run: dict) -> bool:
        """Queue an orphaned PENDING run here; False when its version no longer compiles."""
        try:
            spec, job = self.job(run["workflow_id"], run["version"])
        except (KeyError, ValueError) as error:
            log.warning("workflow run %s cannot be restarted: %s", run["run_id"], error)
            return False
        self._queue(run, spec, job)
        return True

    def _interrupt(self, run: dict, cancelled_by: str | None = None) -> None:
        """End an orphan: the nodes it was executing end FAILED (CANCELLED), then the run, each with
        the error "interrupted: ...", so its record, metrics and subscribers say what happened."""
        run_id = run["run_id"]
        why = (f"cancelled by {cancelled_by} after the process executing it stopped" if cancelled_by
               else "the process executing it stopped (its lease expired)")
        error, status = f"{INTERRUPTED}: {why}", CANCELLED if cancelled_by else FAILED
        for started in self.store.unfinished_nodes(run_id):
            node = {k: v for k, v in started.items() if k not in ("seq", "type", "at")}
            now = time.time()
            self.recorder.emit({**node, "type": "node_end", "status": status, "at": now, "error": error,
                                "duration_ms": round((now - started["at"]) * 1000, 3)})
        self._emit_end(run_id, workflow_id=run["workflow_id"], version=run["version"], job=run["job_name"],
                       kind="run_cancelled" if cancelled_by else "run_failed", error=error)

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

    def _execute(self, run_id: str, spec: WorkflowSpec, job: dg.JobDefinition, variables: dict,
                 tags: dict[str, str]) -> None:
        """A worker thread's run: only while this runner still holds its lease (a queued run may
        have been reclaimed by another process meanwhile)."""
        try:
            if self.store.holds_lease(run_id, self.owner):
                self._run_job(run_id, spec, job, variables, tags)
        finally:
            self.recorder.forget(run_id)
            self._lost.discard(run_id)

    def _run_job(self, run_id: str, spec: WorkflowSpec, job: dg.JobDefinition, variables: dict,
                 tags: dict[str, str]) -> None:
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
                run_id=run_id, raise_on_error=False, resources={"workflow": self.recorder}, tags=tags)
        except Exception as error:  # the instance failed: the run still ends
            log.exception("workflow run %s could not execute", run_id)
            self._end(run_id, **end, kind="run_failed", error=f"{type(error).__name__}: {error}")
            return
        if result.success:  # a cancel that came after the last node changes nothing
            self._end(run_id, **end, kind="run_completed")
        elif self.recorder.cancel_event(run_id).is_set():
            self._end(run_id, **end, kind="run_cancelled", error="cancelled")
        else:
            self._end(run_id, **end, kind="run_failed", error=self._failure(run_id))

    def _end(self, run_id: str, **end) -> None:
        """The end of a run executed here, unless another process took it over: its end is theirs."""
        if run_id in self._lost:
            log.warning("workflow run %s ended here after another process reclaimed it", run_id)
            return
        self._emit_end(run_id, **end)

    def _failure(self, run_id: str) -> str:
        return (self.store.last_failure(run_id)
                or "the run failed before any node ran (see the Dagster run's logs)")

    def shutdown(self) -> None:
        """Cancel every run of this process (queued ones end CANCELLED at once) and wait for them."""
        for run_id in list(self.futures):
            self.cancel(run_id)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.leases.stop()
