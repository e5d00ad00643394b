"""The code location that ``workspace.yaml`` loads: it only gathers the sibling modules."""

import dagster as dg

from orchestration.assets import queue_metrics

defs = dg.Definitions(assets=[queue_metrics])
