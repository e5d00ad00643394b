"""The jobs: each a selection of the asset graph, so a job run is a set of asset materializations
(and their checks) that the Dagster UI shows on the assets.

Training jobs carry the ``prioritymax/training`` tag (:data:`~orchestration.instance.TRAINING_TAGS`):
the instance's ``dagster.yaml`` (``orchestration/instance.py``) runs one run with that tag at a
time, so the nightly schedule, the trace sensor and a launch by hand never train at once on the
same cores; a second training waits QUEUED.

Selecting an asset selects its checks: training jobs also gate (the candidate's gate result is on
its registry version right away); only ``promote_job`` leaves them out, because promotion checks the
recorded gate itself (``ml.registry.promote`` refuses a version whose gate did not pass).
"""

from __future__ import annotations

import dagster as dg

from orchestration.assets import (
    predictor_candidate,
    predictor_champion,
    queue_metrics,
    rl_agent_candidate,
    rl_agent_champion,
    rl_agent_evaluation,
)
from orchestration.checks import predictor_canary_gate, rl_agent_canary_gate
from orchestration.instance import TRAINING_TAGS

train_predictor_job = dg.define_asset_job(
    "train_predictor_job",
    selection=dg.AssetSelection.assets(queue_metrics, predictor_candidate),
    tags=TRAINING_TAGS,
    description="Build queue_metrics, train the predictor candidate (registered as challenger), gate it.",
)

train_rl_job = dg.define_asset_job(
    "train_rl_job",
    selection=dg.AssetSelection.assets(queue_metrics, rl_agent_candidate, rl_agent_evaluation),
    tags=TRAINING_TAGS,
    description="Build queue_metrics, train the RL candidate (challenger), evaluate it against the "
                "baselines, gate it.",
)

canary_gate_job = dg.define_asset_job(
    "canary_gate_job",
    selection=dg.AssetSelection.checks(predictor_canary_gate, rl_agent_canary_gate),
    description="Gate the latest candidates again, against the registry's current champions.",
)

promote_job = dg.define_asset_job(
    "promote_job",
    selection=dg.AssetSelection.assets(predictor_champion, rl_agent_champion).without_checks(),
    description="Promote the latest candidates whose gate passed and publish their versions on the "
                "control plane.",
)

full_pipeline_job = dg.define_asset_job(
    "full_pipeline_job",
    selection=dg.AssetSelection.all(),
    tags=TRAINING_TAGS,
    description="Data, both candidates, their gates, and the promotion of those that pass.",
)

JOBS = [train_predictor_job, train_rl_job, canary_gate_job, promote_job, full_pipeline_job]
