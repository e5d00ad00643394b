"""Shared fixtures: an isolated data home per test and small traffic series."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prioritymax.settings import BUNDLED_TRACE, get_settings

#: A tracking URI the tests were started with (then kept); MLflow itself exports one per test.
SESSION_MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with a test marked ``slow`` run first (longest work first). pytest-xdist hands whole
    files to its workers in this order (``--no-loadscope-reorder`` in the Makefile: its default
    sorts files by how many tests they hold, which put the one-test benchmark files last, and the
    suite ended with one core running a seven-minute file alone)."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: the order within each part stays


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own PRIORITYMAX_HOME; nothing leaks into ./var."""
    home = tmp_path / "home"
    monkeypatch.setenv("PRIORITYMAX_HOME", str(home))
    # MLflow exports the tracking URI it is given; undo that after every test.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    yield home
    # monkeypatch restores only what it changed: a URI MLflow exported during the test (to this
    # home's store) would stay, and a module or session fixture set up before the next test's
    # data_home would write to this home's registry. Unless the session started with one set.
    if not SESSION_MLFLOW_URI:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def nasa_trace() -> Path:
    """The NASA HTTP trace (the copy in the package; identical to ../shared/data's)."""
    return BUNDLED_TRACE


def write_trace(path: Path, timestamps, counts, header=("timestamp", "requests")) -> Path:
    pd.DataFrame({header[0]: timestamps, header[1]: counts}).to_csv(path, index=False)
    return path


@pytest.fixture
def small_trace(tmp_path: Path) -> Path:
    """Three days of per-minute counts with a two-hour gap on day two; a daily cycle."""
    stamps = pd.date_range("2024-03-04", periods=3 * 1440, freq="min", tz="UTC")
    minutes = np.arange(len(stamps))
    counts = (40 + 30 * np.sin(2 * np.pi * minutes / 1440)).round().astype(int)
    keep = ~((minutes >= 1900) & (minutes < 2020))
    stamps = stamps[keep].strftime("%Y-%m-%dT%H:%M:%SZ")
    return write_trace(tmp_path / "small.csv", stamps, counts[keep])

