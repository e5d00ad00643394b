"""The code location that ``workspace.yaml`` loads: it only gathers the sibling modules.

The training graph (assets, checks, jobs, the nightly schedule, the sensors, the resources) and the
stored user workflows compiled to jobs (``orchestration/workflows/``)."""

import dagster as dg

from orchestration.assets import ASSETS
from orchestration.checks import CHECKS
from orchestration.jobs import JOBS
from orchestration.resources import default_resources
from orchestration.schedules import SCHEDULES
from orchestration.sensors import SENSORS
from orchestration.workflows.location import workflow_jobs, workflow_runs_sensor

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[*JOBS, *workflow_jobs()],
    schedules=SCHEDULES,
    sensors=[*SENSORS, workflow_runs_sensor],
    resources=default_resources(),
)
