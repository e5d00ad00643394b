"""The stored workflows as jobs of the Dagster code location (``orchestration.definitions``).

The latest version of each workflow is compiled with a :class:`WorkflowRecorder` on the shared
store as its ``workflow`` resource, so a run launched from the Dagster UI or ``dagster job launch``
is recorded like one started by the API (its events reach the API's WebSocket, replay and run
routes). Variables come from the launchpad: ``ops: {<start node>: {config: {variables: {...}}}}``.
A workflow that no longer compiles is left out with a warning; it never breaks the location.

Such a run has no API runner to record its end, so :data:`workflow_runs_sensor` (the daemon runs
it) closes the record once Dagster says the run finished: run_completed, run_failed or
run_cancelled, like the API's runner would.
"""

from __future__ import annotations

import functools
import logging

import dagster as dg

from orchestration.workflows.runner import WorkflowRunner
from orchestration.workflows.runtime import WorkflowRecorder
from orchestration.workflows.store import PENDING, RUNNING, WorkflowStore
from prioritymax.settings import get_settings

log = logging.getLogger("orchestration.workflows")


@functools.lru_cache(maxsize=1)
def _recorder(home: str) -> WorkflowRecorder:
    """One store and recorder per data home for this process (the location's jobs and sensor)."""
    settings = get_settings()
    return WorkflowRecorder(WorkflowStore.from_settings(settings), settings)


def workflow_jobs() -> list[dg.JobDefinition]:
    settings = get_settings()
    recorder = _recorder(str(settings.home))
    runner = WorkflowRunner(recorder.store, recorder, settings)
    resource = dg.ResourceDefinition.hardcoded_resource(recorder)
    jobs = []
    for workflow in recorder.store.list():
        try:
            _, job = runner.job(workflow["workflow_id"], workflow["latest_version"])
        except Exception as error:
            log.warning("workflow %s left out of the code location: %s", workflow["workflow_id"], error)
            continue
        jobs.append(job.with_top_level_resources({"workflow": resource}))
    return jobs


#: Dagster's final run statuses -> the run event that closes a workflow run record.
_END_EVENTS = {dg.DagsterRunStatus.SUCCESS: "run_completed", dg.DagsterRunStatus.FAILURE: "run_failed",
               dg.DagsterRunStatus.CANCELED: "run_cancelled"}


@dg.sensor(minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Closes the records of workflow runs launched from Dagster once they finish.")
def workflow_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    recorder = _recorder(str(get_settings().home))
    store = recorder.store
    closed = 0
    # Runs the location launched carry actor "dagster"; the API's runner records its own ends.
    for run in store.runs(status=(PENDING, RUNNING), limit=1000, actor="dagster"):
        dagster_run = context.instance.get_run_by_id(run["run_id"])
        kind = _END_EVENTS.get(dagster_run.status) if dagster_run is not None else None
        if kind is None:
            continue
        event = {"type": kind, "run_id": run["run_id"], "workflow_id": run["workflow_id"],
                 "version": run["version"], "job_name": run["job_name"]}
        if kind == "run_failed":
            event["error"] = (store.last_failure(run["run_id"])
                              or "the Dagster run failed (see its logs in the Dagster UI)")
        recorder.emit(event)
        closed += 1
    return dg.SkipReason(f"closed {closed} workflow run record(s)" if closed else "no workflow run to close")
