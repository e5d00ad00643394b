"""Training runs through Dagster's own APIs, so every run the admin API launches is an ordinary
Dagster run: queued by the run coordinator, dequeued by ``dagster-daemon``, shown in the UI.

Launch goes through the webserver's GraphQL (``dagster_graphql.DagsterGraphQLClient``, what
``dagster job launch`` does against a workspace, without loading the code location in the API
process); status, logs and cancel read and write the data home's instance directly, so they answer
while the webserver is down."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import dagster as dg

log = logging.getLogger("api.admin")

#: The jobs the admin API launches (``orchestration/jobs.py``).
TRAINING_JOBS = ("train_predictor_job", "train_rl_job", "full_pipeline_job", "canary_gate_job", "promote_job")
LAUNCHED_BY_TAG = "prioritymax/launched_by"
#: Dagster's error types that mean the caller's run config is wrong (a 422, not a 502).
CONFIG_ERRORS = ("RunConfigValidationInvalid", "PipelineConfigurationInvalid", "InvalidStepError",
                 "InvalidOutputError")


class DagsterUnavailable(RuntimeError):
    """The webserver did not answer (a 503)."""


class LaunchRefused(RuntimeError):
    """Dagster refused the launch: ``config`` True when the run config is at fault (a 422)."""

    def __init__(self, message: str, *, config: bool) -> None:
        super().__init__(message)
        self.config = config


def launch(dagster_url: str, job: str, run_config: dict[str, Any], actor: str) -> str:
    """Submit a run of ``job`` through the webserver's GraphQL; its run id."""
    import httpx
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    unavailable = DagsterUnavailable(f"Dagster's webserver at {dagster_url} does not answer "
                                     "(PRIORITYMAX_DAGSTER_URL; `pmx up` starts it)")
    # Asked first: the GraphQL client reports a refused connection as a generic query failure.
    try:
        httpx.get(f"{dagster_url.rstrip('/')}/server_info", timeout=10).raise_for_status()
    except httpx.HTTPError:
        raise unavailable from None
    where = urlsplit(dagster_url)
    try:
        client = DagsterGraphQLClient(where.hostname or "127.0.0.1", port_number=where.port,
                                      use_https=where.scheme == "https", timeout=60,
                                      path_prefix=where.path.rstrip("/"))
        return client.submit_job_execution(job, run_config=run_config, tags={LAUNCHED_BY_TAG: actor})
    except DagsterGraphQLClientError as error:
        kind = str(error.args[0]) if error.args else ""
        if kind.startswith("Error when connecting"):
            raise unavailable from None
        detail = error.args[1] if len(error.args) > 1 else error.body
        raise LaunchRefused(f"Dagster refused {job}: {kind}: {detail}",
                            config=kind in CONFIG_ERRORS) from None


def run_summary(instance: dg.DagsterInstance, run_id: str, dagster_url: str) -> dict[str, Any] | None:
    record = instance.get_run_record_by_id(run_id)
    return None if record is None else _summary(record, dagster_url)


def recent_runs(instance: dg.DagsterInstance, dagster_url: str, limit: int) -> list[dict[str, Any]]:
    """The latest runs of the training jobs, newest first."""
    records = instance.get_run_records(dg.RunsFilter(), limit=limit * 4)
    return [_summary(r, dagster_url) for r in records if r.dagster_run.job_name in TRAINING_JOBS][:limit]


def _summary(record: Any, dagster_url: str) -> dict[str, Any]:
    run = record.dagster_run
    return {
        "run_id": run.run_id, "job_name": run.job_name, "status": run.status.value,
        "launched_by": run.tags.get(LAUNCHED_BY_TAG), "tags": dict(run.tags),
        "created": record.create_timestamp.timestamp(), "started": record.start_time,
        "ended": record.end_time, "finished": run.is_finished,
        "dagster_url": f"{dagster_url.rstrip('/')}/runs/{run.run_id}",
    }


def run_logs(instance: dg.DagsterInstance, run_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    """The run's event log from index ``after`` on (what the UI's run page lists)."""
    entries = instance.all_logs(run_id)[after:after + limit]
    return [{
        "index": after + i, "at": entry.timestamp, "level": logging.getLevelName(entry.level),
        "step": entry.step_key,
        "event": entry.dagster_event.event_type_value if entry.dagster_event else None,
        "message": entry.user_message or entry.message,
    } for i, entry in enumerate(entries)]


#: How long a cancel of a queued run is watched for the dequeuer's race (below).
CANCEL_WATCH_SECONDS = 30.0


def cancel(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Ask the run coordinator to cancel (a queued run is dropped, a started one terminated).

    Dropping a queued run races with the daemon's dequeuer (dagster-io/dagster#3323): a run it
    dequeues in the same moment starts anyway, and the cancel is lost (the run ended SUCCESS here,
    once in a few hundred cancels). So a run cancelled from the queue is watched for a while by
    :func:`_finish_cancel`, which terminates it through the run launcher if it starts after all.
    """
    run = instance.get_run_by_id(run_id)
    requested = instance.run_coordinator.cancel_run(run_id)
    if requested and run is not None and run.status == dg.DagsterRunStatus.QUEUED:
        threading.Thread(target=_finish_cancel, args=(instance, run_id), daemon=True,
                         name=f"cancel-{run_id[:8]}").start()
    return requested


def _finish_cancel(instance: dg.DagsterInstance, run_id: str, seconds: float = CANCEL_WATCH_SECONDS) -> None:
    """Terminate ``run_id`` if the dequeuer starts it after it was cancelled from the queue (its
    status then goes from CANCELED back to STARTING and STARTED)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is None:
            return
        # STARTING has no run worker to stop yet: terminate once it is STARTED.
        if run.status == dg.DagsterRunStatus.STARTED and instance.run_launcher.terminate(run_id):
            log.info("run %s started after it was cancelled from the queue: terminated", run_id)
            return
        if run.is_finished and run.status != dg.DagsterRunStatus.CANCELED:
            log.warning("run %s, cancelled from the queue, ended %s", run_id, run.status.value)
            return
        time.sleep(0.5)
