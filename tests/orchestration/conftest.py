"""Running the training graph for real, on small budgets: MLflow's embedded store in the test's data
home, a Dagster instance in its ``dagster/`` folder, real training.

``promoted`` runs the whole pipeline once per session in a home of its own, on the NASA trace (RL's
cost does not grow with the trace; the predictor uses its latest 6,000 rows): both candidates pass
their gates and become champions. Tests that need champions to defend run in that home
(``in_promoted_home``); they only add challengers, so the champions stay what the fixture made.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from orchestration.definitions import defs
from orchestration.resources import environment
from prioritymax.settings import get_settings

#: Enough for the policy to beat the HPA rule on the NASA trace's held-out days (+26% here) and to
#: come within the gate's margin of the reactive rules. Not of predictive Erlang-C (-7% here): these
#: tests are about the pipeline and the registry, so the gate compares with the reactive rules only;
#: the default (every rule) is tested in tests/ml/rl/test_commands.py.
SMALL_BUDGET = {"predictor_kind": "rf", "predictor_max_rows": 6000, "rl_epochs": 40, "rl_steps": 2048,
                "rl_num_envs": 64, "eval_episodes": 8,
                "rl_rules": ["hpa", "erlang_c", "queue_threshold", "static"]}


def closed_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def run_config(budget: dict[str, Any] | None = None, *, control_plane: str | None = None,
               ops: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run config: the budget over SMALL_BUDGET, a control-plane URL, and op (asset/check) configs."""
    resources: dict[str, Any] = {"budget": {"config": {**SMALL_BUDGET, **(budget or {})}},
                                 "control_plane": {"config": {"url": control_plane or closed_url()}}}
    return {"resources": resources, "ops": {name: {"config": c} for name, c in (ops or {}).items()}}


def execute(job: str, instance: dg.DagsterInstance, config: dict[str, Any] | None = None,
            **kwargs: Any) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(run_config=config or run_config(),
                                                        instance=instance, raise_on_error=False, **kwargs)


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """asset key -> metadata (plain values) of what the run materialized."""
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in materialization.metadata.items()}
    return out


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """``asset:check`` -> the check's evaluation (``passed``, ``description``, ``metadata``)."""
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def check_metadata(evaluation) -> dict[str, Any]:
    return {k: v.value for k, v in evaluation.metadata.items()}


def land_days(trace, folder, days):
    """Write the given days (0-based) of a trace as one file per day, the second one gzipped."""
    frame = pd.read_csv(trace)
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    folder.mkdir(parents=True, exist_ok=True)
    first = stamps.dt.normalize().min()
    written = []
    for day in days:
        start = first + pd.Timedelta(days=day)
        part = frame[(stamps >= start) & (stamps < start + pd.Timedelta(days=1))]
        name = f"{start:%Y-%m-%d}.csv"
        if day == 1:
            with gzip.open(folder / f"{name}.gz", "wt") as handle:
                part.to_csv(handle, index=False)
        else:
            part.to_csv(folder / name, index=False)
        written.append(part)
    return pd.concat(written, ignore_index=True)


@contextlib.contextmanager
def dagster_instance(home: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent instance in the home's ``dagster/`` folder (DAGSTER_HOME is left alone)."""
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(set_dagster_home=False, temp_dir=str(home / "dagster")) as instance:
        yield instance


@pytest.fixture
def instance(data_home: Path) -> Iterator[dg.DagsterInstance]:
    with dagster_instance(data_home) as found:
        yield found


def using_home(home: Path):
    """PRIORITYMAX_HOME = home and no MLFLOW_TRACKING_URI for the block (MLflow exports the URI it
    is given), as the autouse ``data_home`` fixture does for one test."""
    return environment({"PRIORITYMAX_HOME": str(home)}, unset=("MLFLOW_TRACKING_URI",))


@dataclass
class Promoted:
    home: Path
    instance: dg.DagsterInstance
    pipeline: dg.ExecuteInProcessResult
    regate: dg.ExecuteInProcessResult
    repromote: dg.ExecuteInProcessResult
    control_plane_url: str


@pytest.fixture(scope="session")
def promoted(tmp_path_factory) -> Iterator[Promoted]:
    """full_pipeline_job once (both champions made), then canary_gate_job and promote_job again on
    the same candidates (before any test adds a challenger)."""
    home = tmp_path_factory.mktemp("promoted") / "home"
    url = closed_url()
    with using_home(home):
        get_settings().layout_home()
    with dagster_instance(home) as session_instance:
        with using_home(home):
            pipeline = execute("full_pipeline_job", session_instance, run_config(control_plane=url))
            regate = execute("canary_gate_job", session_instance, run_config(control_plane=url))
            repromote = execute("promote_job", session_instance, run_config(control_plane=url))
        yield Promoted(home, session_instance, pipeline, regate, repromote, url)


@pytest.fixture
def in_promoted_home(promoted: Promoted, monkeypatch: pytest.MonkeyPatch) -> Promoted:
    monkeypatch.setenv("PRIORITYMAX_HOME", str(promoted.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    return promoted
