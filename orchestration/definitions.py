"""The code location that ``workspace.yaml`` loads: it only gathers the sibling modules."""

import dagster as dg

from orchestration.assets import queue_metrics
from orchestration.workflows.location import workflow_jobs

defs = dg.Definitions(assets=[queue_metrics], jobs=workflow_jobs())
