"""The stored workflows as jobs of the Dagster code location (``orchestration.definitions``).

The latest version of each workflow is compiled with a :class:`WorkflowRecorder` on the shared
store as its ``workflow`` resource, so a run launched from the Dagster UI or ``dagster job launch``
is recorded like one started by the API (its events reach the API's WebSocket, replay and run
routes). Variables come from the launchpad: ``ops: {<start node>: {config: {variables: {...}}}}``.
A workflow that no longer compiles is left out with a warning; it never breaks the location.
"""

from __future__ import annotations

import logging

import dagster as dg

from orchestration.workflows.runner import WorkflowRunner
from orchestration.workflows.runtime import WorkflowRecorder
from orchestration.workflows.store import WorkflowStore
from prioritymax.settings import get_settings

log = logging.getLogger("orchestration.workflows")


def workflow_jobs() -> list[dg.JobDefinition]:
    settings = get_settings()
    store = WorkflowStore.from_settings(settings)
    recorder = WorkflowRecorder(store, settings)
    runner = WorkflowRunner(store, recorder, settings)
    jobs = []
    for workflow in store.list():
        try:
            _, job = runner.job(workflow["workflow_id"], workflow["latest_version"])
        except Exception as error:
            log.warning("workflow %s left out of the code location: %s", workflow["workflow_id"], error)
            continue
        resource = dg.ResourceDefinition.hardcoded_resource(recorder)
        jobs.append(job.with_top_level_resources({"workflow": resource}))
    return jobs
