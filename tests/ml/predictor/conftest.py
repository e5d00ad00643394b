"""Small predictor datasets, built once per session from the simulator."""

from pathlib import Path

import pytest

from ml.sim import SimConfig, synthetic_series
from ml.sim.dataset import build_queue_metrics, write_queue_metrics


@pytest.fixture(scope="session")
def queue_metrics(tmp_path_factory) -> Path:
    """Six days of synthetic queue metrics (8,640 one-minute rows)."""
    config = SimConfig()
    series = synthetic_series(days=6, seed=4).scaled_to(config.mean_arrival_rate)
    frame = build_queue_metrics(series, config=config)
    return write_queue_metrics(frame, tmp_path_factory.mktemp("qm") / "queue_metrics.csv")


@pytest.fixture(scope="session")
def holdout_metrics(tmp_path_factory) -> Path:
    """Two later days of the same kind of traffic (another seed): a canary holdout."""
    config = SimConfig()
    series = synthetic_series(days=2, seed=9).scaled_to(config.mean_arrival_rate)
    frame = build_queue_metrics(series, config=config)
    return write_queue_metrics(frame, tmp_path_factory.mktemp("qm") / "holdout.csv")
