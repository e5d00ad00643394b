"""The nightly retrain: the whole pipeline on the latest traffic, so the champions follow the
traffic as it drifts; the gates keep a worse night from promoting anything."""

from __future__ import annotations

import dagster as dg

from orchestration.jobs import full_pipeline_job

nightly_retrain = dg.ScheduleDefinition(
    name="nightly_retrain",
    job=full_pipeline_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="full_pipeline_job every night at 03:00 UTC (runs while dagster-daemon runs).",
)

SCHEDULES = [nightly_retrain]
