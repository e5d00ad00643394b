"""Load forecasts per decision: a real predictor, trained on a small trace and promoted in the
registry, served by a worker behind its HTTP routes (TestClient, the app's lifespan); readings
build each tenant's history until the model has enough of it to forecast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.autoscaler.app import create_app
from api.autoscaler.forecast import LoadHistory
from api.autoscaler.worker import AutoscalerWorker
from prioritymax.settings import get_settings
from tests.api.autoscaler.support import READING
from tests.conftest import write_trace

START = datetime(2024, 3, 7, tzinfo=UTC)  # right after the training trace


def requests_at(minute: int) -> float:
    """The trace's requests per minute: a daily cycle."""
    return float(round(40 + 30 * np.sin(2 * np.pi * minute / 1440)))


@pytest.fixture(scope="module")
def predictor_home(tmp_path_factory):
    """A data home whose predictor champion (version 1) forecasts ``requests`` per minute."""
    from ml import registry
    from ml.predictor.train import train_predictor

    work = tmp_path_factory.mktemp("forecasts")
    stamps = pd.date_range(START - timedelta(days=3), START, freq="min", tz="UTC", inclusive="left")
    trace = write_trace(work / "trace.csv", stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        [requests_at(m) for m in range(len(stamps))])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIORITYMAX_HOME", str(work / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        checkpoint = work / "predictor_lgbm.pkl"
        train_predictor(trace, "requests", checkpoint, params={"n_estimators": 20}, progress=False)
        version = registry.register_files("predictor", [checkpoint, checkpoint.with_suffix(".json")])
        registry.record_gate("predictor", version, {"passed": True})
        registry.promote("predictor", version, actor="test")
    get_settings.cache_clear()
    return work / "home"


def serve(home, monkeypatch) -> tuple[TestClient, AutoscalerWorker]:
    monkeypatch.setenv("PRIORITYMAX_HOME", str(home))
    get_settings.cache_clear()
    worker = AutoscalerWorker(name="forecast-worker", alert=lambda *_, **__: None)
    return TestClient(create_app(worker)), worker


@pytest.fixture
def client(predictor_home, monkeypatch):
    http, worker = serve(predictor_home, monkeypatch)
    with http:  # the lifespan starts the worker: it loads the champion in the background
        assert worker.wait_loaded(60) and worker.models.version("predictor") == "1"
        yield http


def decide(client: TestClient, minute: int, tenant: str = "org:acme", **changes) -> dict:
    reading = {**READING, "tenant": tenant, "arrival_rate": requests_at(minute) / 60,
               "timestamp": (START + timedelta(minutes=minute)).isoformat(), **changes}
    response = client.post("/autoscaler/decide", json=reading)
    assert response.status_code == 200, response.text
    return response.json()


def test_too_little_history_says_so_and_the_decision_is_made(client):
    for minute in range(10):
        decision = decide(client, minute)
    forecast = decision["forecast"]
    assert not forecast["available"] and forecast["horizons"] == {}
    assert "10 rows of history; the model needs at least 241" in forecast["reason"]
    described = (forecast["model_version"], forecast["target"], forecast["interval_seconds"])
    assert described == ("1", "requests", 60)
    assert decision["target_workers"] == decision["current_workers"] + decision["delta"]
    metrics = client.get("/autoscaler/metrics").text
    assert 'prioritymax_autoscaler_forecast_unavailable_total{reason="short_history"} 10.0' in metrics
    assert "prioritymax_autoscaler_load_forecast{" not in metrics


def test_enough_history_gives_forecasts_for_each_horizon(client):
    for minute in range(241):
        decision = decide(client, minute)
    forecast = decision["forecast"]
    assert forecast["available"] and forecast["reason"] is None, forecast
    assert forecast["history_rows"] == 241
    assert forecast["at"].startswith(str(pd.Timestamp(START + timedelta(minutes=240))))
    assert set(forecast["horizons"]) == {"1", "5", "15"}
    for values in forecast["horizons"].values():
        assert set(values) == {"mean", "p50", "p90"} and values["p90"] >= values["p50"]
    # the load is a slow cycle near 40-70 requests a minute: the next minute's is close to the last
    assert abs(forecast["horizons"]["1"]["mean"] - requests_at(240)) < 10
    metrics = client.get("/autoscaler/metrics").text
    p90 = forecast["horizons"]["15"]["p90"]
    assert (f'prioritymax_autoscaler_load_forecast{{horizon="15",quantile="p90",tenant="org:acme"}} '
            f'{p90!r}') in metrics

    # Another tenant has its own history; a gap starts this one's afresh and drops its gauge.
    assert not decide(client, 241, tenant="org:other")["forecast"]["available"]
    after_gap = decide(client, 300)["forecast"]
    assert not after_gap["available"] and after_gap["history_rows"] == 1
    assert 'tenant="org:acme"' not in client.get("/autoscaler/metrics").text


def test_without_a_predictor_decisions_carry_no_forecast(tmp_path, monkeypatch):
    http, worker = serve(tmp_path / "empty", monkeypatch)  # no registry, no champion
    with http:
        assert worker.wait_loaded(60)
        forecast = decide(http, 0)["forecast"]
        assert not forecast["available"] and forecast["reason"] == "no predictor version is loaded"
        assert forecast["model_version"] is None
        metrics = http.get("/autoscaler/metrics").text
    assert 'prioritymax_autoscaler_forecast_unavailable_total{reason="no_predictor"} 1.0' in metrics


def test_the_history_keeps_one_row_per_step_and_only_since_the_last_gap():
    history = LoadHistory(interval=60, rows=5, tenants=2)
    at = START + timedelta(seconds=10)
    assert history.add("a", at, 1.0) == [(int(START.timestamp()), 1.0)]
    assert history.add("a", at + timedelta(seconds=30), 2.0)[-1][1] == 2.0  # the same step: replaced
    for minute in range(1, 7):
        rows = history.add("a", at + timedelta(minutes=minute), float(minute))
    assert [load for _, load in rows] == [2.0, 3.0, 4.0, 5.0, 6.0]  # the latest 5 steps
    assert [s - rows[0][0] for s, _ in rows] == [0, 60, 120, 180, 240]
    late = history.add("a", at + timedelta(minutes=4), 40.0)  # a late reading for a step held
    assert [load for _, load in late] == [2.0, 3.0, 40.0, 5.0, 6.0]
    assert history.add("a", at, 9.0) == late  # older than every row held: dropped
    assert history.add("a", at + timedelta(minutes=9), 9.0) == [(rows[-1][0] + 180, 9.0)]  # a gap
    assert len(history.add(None, START.replace(tzinfo=None), 1.0)) == 1  # naive: UTC
    history.add("b", at, 1.0)  # a third tenant: "a", updated longest ago, is dropped
    assert history.add("a", at + timedelta(minutes=10), 1.0) == [(rows[-1][0] + 240, 1.0)]
