"""Sensors: retrain when new traffic lands, and tell Slack when a training run fails.

- ``new_trace_sensor`` watches ``<home>/data/traces/`` for trace files (``*.csv``, ``*.csv.gz``; one
  per day as a collector exports them). A file that is new or changed since the last tick starts
  ``full_pipeline_job`` on the landed files; several files landing together start one run. Copy a
  file in under a dot name and rename it when complete: dot files are ignored.
- ``slack_on_run_failure`` posts the job, the run, the failed steps and the failed checks' reasons
  (a gate that blocked a promotion fails its run) to SLACK_WEBHOOK_URL when it is set.
"""

import hashlib
import json

import dagster as dg

from orchestration import sources
from orchestration.jobs import JOBS, full_pipeline_job
from prioritymax.settings import get_settings

#: Characters of each error kept in a Slack message.
ERROR_CHARS = 300


@dg.sensor(
    name="new_trace_sensor",
    job=full_pipeline_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def new_trace_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Start full_pipeline_job when a trace file lands in (or changes in) <home>/data/traces/."""
    settings = get_settings()
    seen = json.loads(context.cursor) if context.cursor else {}
    current = {}
    for path in sources.landed_traces(settings):
        stat = path.stat()
        current[path.name] = f"{stat.st_mtime_ns}:{stat.st_size}"
    new = sorted(name for name, stamp in current.items() if seen.get(name) != stamp)
    context.update_cursor(json.dumps(current, sort_keys=True))
    if not new:
        return dg.SkipReason(f"no new trace file in {sources.traces_dir(settings)}")
    digest = hashlib.sha256(json.dumps({n: current[n] for n in new}).encode()).hexdigest()[:16]
    context.log.info("new trace files: %s", ", ".join(new))
    return dg.RunRequest(
        run_key=f"traces-{digest}",
        run_config={"ops": {"queue_metrics": {"config": {"source": sources.LANDED}}}},
        tags={"prioritymax/trigger": "new_trace", "prioritymax/new_trace_files": str(len(new)),
              "prioritymax/latest_trace_file": new[-1][:200]},
    )


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 1] + "…"


def failure_message(context: dg.RunFailureSensorContext) -> str:
    """One Slack line: the job and run, each failed step's error, each failed check's reason."""
    run = context.dagster_run
    parts = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:  # Dagster's wrappers around the cause
            error = error.cause
        parts.append(f"{event.step_key}: {_short(error.message if error else 'failed')}")
    records = context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    for record in records:
        evaluation = record.get_dagster_event().event_specific_data
        if not evaluation.passed:
            key = evaluation.asset_check_key
            reason = evaluation.description or "failed"
            parts.append(f"check {key.asset_key.to_user_string()}:{key.name} failed: {_short(reason)}")
    detail = "; ".join(parts) or _short(context.failure_event.message or "")
    return f"dagster run {run.run_id} of {run.job_name} failed: {detail}"


@dg.run_failure_sensor(
    name="slack_on_run_failure",
    monitored_jobs=JOBS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def slack_on_run_failure(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    """Post a failed training/gating/promotion run to Slack (SLACK_WEBHOOK_URL)."""
    from prioritymax.alerts import post_slack  # httpx: only when a run failed

    settings = get_settings()
    if not settings.slack_webhook_url:
        return dg.SkipReason("SLACK_WEBHOOK_URL is not set")
    if not post_slack(failure_message(context), source="dagster", settings=settings):
        return dg.SkipReason("the Slack webhook did not take the message (logged)")
    return None


SENSORS = [new_trace_sensor, slack_on_run_failure]
