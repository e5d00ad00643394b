"""The worker in-process, on a real registry: which model decides, modes, bad readings, refused
versions. (Following a live control plane is ``test_live.py``.)"""

from __future__ import annotations

import pytest

from api.autoscaler.decide import ReadingError
from api.autoscaler.schemas import Reading
from api.autoscaler.worker import AutoscalerWorker
from prioritymax.settings import get_settings
from tests.api.autoscaler.support import READING, register_policies


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    work = tmp_path_factory.mktemp("autoscaler")
    return register_policies(work / "home", work)


@pytest.fixture
def worker(versions, monkeypatch):
    monkeypatch.setenv("PRIORITYMAX_HOME", str(versions.home))
    get_settings.cache_clear()
    alerts = []
    running = AutoscalerWorker(name="test-worker", alert=lambda text, **_: alerts.append(text)).start()
    assert running.wait_loaded(60)
    running.alerts = alerts
    yield running
    running.close()


def test_decisions_come_from_the_registry_champion(worker, versions):
    decision = worker.decide(Reading(**READING))
    assert decision.mode == "policy" and not decision.fallback
    assert decision.policy_version == versions.good[0]
    assert decision.current_workers == 10
    assert decision.target_workers == 10 + decision.delta
    assert 0 < decision.action_probability <= 1
    assert worker.health()["status"] == "ok"
    assert b'prioritymax_autoscaler_model_version{model="rl_agent"} 1.0' in worker.metrics.render()


def test_a_new_version_is_swapped_in_and_decisions_report_it(worker, versions):
    worker.request("rl_agent", versions.good[1], "test").result(60)
    decision = worker.decide(Reading(**READING))
    assert decision.policy_version == versions.good[1]
    assert worker.health()["last_swap"]["to"] == versions.good[1]


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(worker, versions):
    worker.request("rl_agent", versions.broken, "test").result(60)
    assert worker.decide(Reading(**READING)).policy_version == versions.good[0]
    error = worker.health()["last_load_error"]
    assert error["version"] == versions.broken and error["serving"] == versions.good[0]
    assert "not a readable PPO checkpoint" in error["error"]
    assert len(worker.alerts) == 1 and f"version {versions.broken} refused" in worker.alerts[0]
    assert b'model_load_failures_total{model="rl_agent"} 1.0' in worker.metrics.render()


def test_an_unknown_version_is_refused_too(worker, versions):
    worker.request("rl_agent", "999", "test").result(60)
    assert worker.decide(Reading(**READING)).policy_version == versions.good[0]
    assert "has no version 999" in worker.health()["last_load_error"]["error"]


def test_the_hpa_rule_on_request_and_as_the_fallback(worker, versions, monkeypatch, tmp_path):
    hpa = worker.decide(Reading(**READING, mode="hpa"))
    # utilization 0.9 against the 0.7 target: HPA wants ceil(10 * 0.9 / 0.7) = 13, at most +2 a step
    assert (hpa.mode, hpa.delta, hpa.target_workers, hpa.policy_version) == ("hpa", 2, 12, None)
    assert not hpa.fallback

    monkeypatch.setenv("PRIORITYMAX_HOME", str(tmp_path / "empty"))  # no registry, no champion
    get_settings.cache_clear()
    bare = AutoscalerWorker(name="bare").start()
    try:
        assert bare.wait_loaded(60)
        decision = bare.decide(Reading(**READING))
        assert decision.mode == "hpa" and decision.fallback and decision.policy_version is None
        assert bare.health()["status"] == "degraded"
    finally:
        bare.close()


def test_a_reading_that_does_not_fit_the_policy_is_refused(worker):
    with pytest.raises(ReadingError, match="lacks \\['low'\\].*has unknown \\['urgent'\\]"):
        worker.decide(Reading(**{**READING, "queue": {"high": 1, "normal": 2, "urgent": 3}}))


def test_a_reading_unlike_any_in_training_falls_back_to_the_policys_own_rule(worker):
    """The champion is a residual policy: a reading far outside the inputs it trained on (a
    backlog of hours) is decided by its base rule, said in the reason and counted."""
    flooded = {**READING, "queue": {"high": 5_000_000, "normal": 0, "low": 0}}
    decision = worker.decide(Reading(**flooded))
    assert decision.mode == "policy" and decision.fallback
    assert "base rule" in decision.reason and "outside what the policy was trained on" in decision.reason
    assert decision.delta == 2  # the rule drains the backlog: as fast as the pool may grow
    assert b'prioritymax_autoscaler_fallbacks_total{reason="out_of_range"} 1.0' in worker.metrics.render()
