"""Small predictor datasets, built once per session from the simulator."""

from pathlib import Path

import pytest

from ml.sim import SimConfig, synthetic_series
from ml.sim.dataset import build_queue_metrics, write_queue_metrics


def simulated_metrics(folder: Path, days: int, seed: int) -> Path:
    config = SimConfig()
    series = synthetic_series(days=days, seed=seed).scaled_to(config.mean_arrival_rate)
    return write_queue_metrics(build_queue_metrics(series, config=config),
                               folder / f"queue_metrics_{days}d_{seed}.csv")


@pytest.fixture(scope="session")
def queue_metrics(tmp_path_factory) -> Path:
    """Six days of synthetic queue metrics (8,640 one-minute rows)."""
    return simulated_metrics(tmp_path_factory.mktemp("qm"), days=6, seed=4)


@pytest.fixture(scope="session")
def holdout_metrics(tmp_path_factory) -> Path:
    """Two days of the same kind of traffic from another seed: a canary holdout."""
    return simulated_metrics(tmp_path_factory.mktemp("qm"), days=2, seed=9)
