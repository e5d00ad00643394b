"""The dashboard's pages under Streamlit's AppTest, on an empty data home (every service down) and
on a populated one: MLflow runs and registered champions of both models, a queue_metrics dataset,
the API (uvicorn) with config items, tenant flags and a finished workflow run, and one autoscaler
worker (``pmx autoscaler``) following it that has made decisions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from prioritymax.settings import REPO_ROOT, get_settings
from tests.api.conftest import Server, free_port, start_server, stop_server, wait_until_answers

APP = str(REPO_ROOT / "dashboard" / "app.py")
CLOSED = "http://127.0.0.1:9"  # nothing listens on the discard port
READING = {"queue": {"high": 10, "normal": 100, "low": 50}, "arrival_rate": 12.0, "active_workers": 10,
           "utilization": 0.9}


@dataclass
class Populated:
    home: Path
    api: Server
    worker_url: str
    dataset: Path
    workflow_id: str
    run_id: str


def _populate_models(home: Path) -> Path:
    """In-process, on ``home``: a queue_metrics dataset; a predictor of its load (``arrivals``, 1, 5
    and 15 steps ahead) and an RL agent trained small, logged to MLflow, gated and promoted
    (version 1 of each the champion); a second predictor version, the challenger."""
    from ml import registry
    from ml.predictor.canary import canary_predictor
    from ml.predictor.train import train_predictor
    from ml.rl.ppo import Args
    from ml.rl.train import train_rl
    from ml.sim import SimConfig, synthetic_series
    from ml.sim.dataset import LOAD_TARGET, build_queue_metrics, dataset_path, write_queue_metrics

    settings = get_settings().layout_home()
    config = SimConfig()
    series = synthetic_series(days=4, seed=4).scaled_to(config.mean_arrival_rate)
    dataset = write_queue_metrics(build_queue_metrics(series, config=config),
                                  dataset_path(settings.data_dir, "synthetic"))
    checkpoint = settings.models_dir / "predictor_lgbm.pkl"
    train_predictor(dataset, LOAD_TARGET, checkpoint, params={"n_estimators": 60}, mlflow=True,
                    progress=False)
    canary_predictor(checkpoint, dataset, threshold=1e9)
    registry.promote("predictor", 1, actor="dashboard-test")
    train_predictor(dataset, LOAD_TARGET, settings.models_dir / "second.pkl",
                    params={"n_estimators": 10}, mlflow=True, progress=False)
    agent = settings.models_dir / "rl_agent.pt"
    train_rl(Args(epochs=2, steps=512, num_envs=4, eval_every=1, eval_episodes=1, seed=3), agent,
             mlflow=True, progress=False)
    registry.record_gate("rl_agent", 1, {"passed": True})
    registry.promote("rl_agent", 1, actor="dashboard-test")
    return dataset


@pytest.fixture(scope="session")
def populated(tmp_path_factory):
    home = tmp_path_factory.mktemp("dashboard") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIORITYMAX_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        dataset = _populate_models(home)
    get_settings.cache_clear()
    api = start_server(home, {"PRIORITYMAX_DAGSTER_URL": CLOSED})
    worker = None
    try:
        with api.client("operator") as operator:
            operator.post("/config", json={"key": "autoscaler.max_workers", "value": 40, "comment": "first"})
            operator.post("/config", json={"key": "autoscaler.max_workers", "value": 50, "comment": "more"})
            operator.put("/config/features/chaos_mode", json={"enabled": False})
            operator.put("/config/features/chaos_mode", json={"enabled": True, "tenant": "org:acme"})
            spec = json.loads((REPO_ROOT / "examples" / "order_workflow.json").read_text())
            workflow_id = operator.post("/workflows/", json=spec).json()["workflow_id"]
            run_id = operator.post("/workflows/run/start", json={
                "workflow_id": workflow_id, "input_variables": {"order_id": 1}}).json()["run_id"]
            deadline = time.monotonic() + 120
            while operator.get(f"/workflows/run/{run_id}").json()["status"] in ("PENDING", "RUNNING"):
                assert time.monotonic() < deadline, "the workflow run did not finish"
                time.sleep(0.5)
        port = free_port()
        worker = subprocess.Popen(
            [sys.executable, "-m", "pmx.cli", "autoscaler", "--port", str(port), "--api-url", api.url,
             "--token", api.tokens["viewer"], "--name", "dashboard-worker", "--log-level", "warning"],
            env=api.env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker_url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{worker_url}/autoscaler/health", worker, "the worker",
                           ok=lambda response: response.json()["status"] == "ok")
        for tenant in (None, "org:acme", None):
            httpx.post(f"{worker_url}/autoscaler/decide", json={**READING, "tenant": tenant}, timeout=10)
        yield Populated(home, api, worker_url, dataset, workflow_id, run_id)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(20)
        stop_server(api)


def _fresh_caches() -> None:
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def on_empty(data_home, monkeypatch):
    """A fresh data home and no service anywhere."""
    for variable in ("PRIORITYMAX_API_URL", "PRIORITYMAX_DAGSTER_URL", "PRIORITYMAX_AUTOSCALER_URL"):
        monkeypatch.setenv(variable, CLOSED)
    _fresh_caches()
    yield data_home
    _fresh_caches()


@pytest.fixture
def on_populated(populated, monkeypatch):
    """The populated home, the API with an operator's token, the worker; Dagster's webserver down."""
    monkeypatch.setenv("PRIORITYMAX_HOME", str(populated.home))
    monkeypatch.setenv("PRIORITYMAX_API_URL", populated.api.url)
    monkeypatch.setenv("PRIORITYMAX_API_TOKEN", populated.api.tokens["operator"])
    monkeypatch.setenv("PRIORITYMAX_AUTOSCALER_URL", populated.worker_url)
    monkeypatch.setenv("PRIORITYMAX_DAGSTER_URL", CLOSED)
    _fresh_caches()
    yield populated
    _fresh_caches()


def open_page(page: str) -> AppTest:
    """The app run at ``page`` (``overview``, ``runs``, ...), with no exception raised."""
    app = AppTest.from_file(APP, default_timeout=120).run()
    if page != "overview":
        app.switch_page(f"views/{page}.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def frame_with(page: AppTest, *columns: str) -> pd.DataFrame:
    """The first dataframe on the page that has all ``columns``."""
    for element in page.dataframe:
        if set(columns) <= set(element.value.columns):
            return element.value
    raise AssertionError(f"no dataframe with columns {columns}")


def texts(app: AppTest) -> str:
    """Every text a reader sees on the page, joined (markdown, titles, captions, alerts, metrics)."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "warning", "info", "error",
                 "success", "text"):
        parts += [str(e.value) for e in getattr(app, kind)]
    parts += [f"{m.label} {m.value}" for m in app.metric]
    return "\n".join(parts)


def _is_emoji(char: str) -> bool:
    """A pictograph that needs an emoji font (✅ ❌ ⚠ ➕ 🚀 ...), or the emoji variation selector."""
    code = ord(char)
    return char == "\ufe0f" or 0x2600 <= code <= 0x27BF or 0x2B00 <= code <= 0x2BFF or code >= 0x1F000


def assert_plain_text(frame, *columns: str) -> None:
    """Every cell of ``columns`` is text a reader can read without an emoji font: no emoji, and
    never empty or the text None."""
    for column in columns:
        for value in frame[column]:
            assert isinstance(value, str) and value.strip(), f"{column}: {value!r} is not text"
            assert value != "None", f"{column} reads None"
            assert not any(_is_emoji(c) for c in value), f"{column}: {value!r} holds an emoji"
