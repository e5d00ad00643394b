"""The shadow challenger on a real registry: the worker holds the registry's rl_agent challenger,
scores its decisions beside the champion's off the request path, and promotes it by a pointer flip."""

from __future__ import annotations

import numpy as np
import pytest

from api.autoscaler.schemas import Reading
from api.autoscaler.worker import AutoscalerWorker
from ml.sim.config import SimConfig
from ml.sim.counterfactual import decision_cost
from prioritymax.settings import get_settings
from tests.api.autoscaler.support import READING, register_policies


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    work = tmp_path_factory.mktemp("shadow")
    return register_policies(work / "home", work)


@pytest.fixture
def home(versions, monkeypatch):
    monkeypatch.setenv("PRIORITYMAX_HOME", str(versions.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # one left by another test's MLflow
    monkeypatch.setenv("PRIORITYMAX_SHADOW_REFRESH_SECONDS", "3600")  # the tests ask themselves
    get_settings.cache_clear()
    yield versions
    get_settings.cache_clear()


def challenger_is(version: str) -> None:
    from ml import registry

    registry.set_challenger("rl_agent", version)


def started(name: str) -> AutoscalerWorker:
    worker = AutoscalerWorker(name=name, alert=lambda text, **_: None).start()
    assert worker.wait_loaded(60)
    return worker


def metric(worker: AutoscalerWorker, line_start: str) -> float:
    for line in worker.metrics.render().decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_challenger_decides_in_the_shadow_of_every_reading(home):
    champion, challenger = home.good
    challenger_is(challenger)
    worker = started("shadow-worker")
    try:
        assert worker.models.policy.version == champion
        assert worker.models.challenger.version == challenger
        readings = [Reading(**{**READING, "active_workers": n, "arrival_rate": 1.5 * n})
                    for n in range(2, 14)]
        decisions = [worker.decide(reading) for reading in readings]
        assert all(d.policy_version == champion for d in decisions)  # the shadow never serves
        assert worker.shadow.wait_idle(30)

        logged = worker.recent_decisions(len(readings))
        config = worker.models.policy.config
        for entry, reading in zip(logged, readings, strict=True):
            shadow = entry["shadow"]
            assert shadow["version"] == challenger
            assert shadow["agreed"] == (shadow["target_workers"] == entry["target_workers"])
            assert shadow["target_workers"] == min(max(reading.active_workers + shadow["delta"],
                                                       config.min_workers), config.max_workers)
            state = {"queue": np.array([reading.queue[c] for c in config.class_names]),
                     "arrival_rate": reading.arrival_rate, "active": reading.active_workers, "warming": 0}
            assert shadow["champion_cost"] == pytest.approx(
                decision_cost(config, target=entry["target_workers"], **state).total, abs=1e-6)
            assert shadow["cost"] == pytest.approx(
                decision_cost(config, target=shadow["target_workers"], **state).total, abs=1e-6)

        agreed = sum(entry["shadow"]["agreed"] for entry in logged)
        summary = worker.health()["challenger"]
        assert summary["version"] == challenger and summary["decisions"] == len(readings)
        assert summary["agreement"] == pytest.approx(agreed / len(readings), abs=1e-4)
        assert summary["challenger_cost"] == pytest.approx(sum(e["shadow"]["cost"] for e in logged), abs=1e-4)
        assert metric(worker, 'prioritymax_autoscaler_shadow_decisions_total{outcome="agree"}') == agreed
        assert metric(worker, 'prioritymax_autoscaler_shadow_decisions_total{outcome="disagree"}') == \
            len(readings) - agreed
        assert metric(worker, "prioritymax_autoscaler_challenger_version ") == float(challenger)
        assert metric(worker, "prioritymax_autoscaler_shadow_agreement_ratio ") == \
            pytest.approx(agreed / len(readings))
    finally:
        worker.close()


def test_promoting_the_shadowed_version_is_a_pointer_flip(home):
    champion, challenger = home.good
    challenger_is(challenger)
    worker = started("flip-worker")
    try:
        held = worker.models.challenger
        assert held.version == challenger
        assert worker.request("rl_agent", challenger, "control_plane") is None  # nothing to load
        assert worker.models.policy.policy is held.policy  # the same loaded object, now serving
        assert worker.models.challenger is None
        assert worker.decide(Reading(**READING)).policy_version == challenger
        swap = worker.health()["last_swap"]
        assert swap["pointer_flip"] and swap["from"] == champion and swap["to"] == challenger
        assert swap["source"] == "control_plane"
        assert metric(worker, "prioritymax_autoscaler_challenger_version ") == 0

        worker.request("rl_agent", champion, "control_plane").result(60)  # not held: loads as before
        assert worker.models.policy.version == champion
        assert not worker.health()["last_swap"]["pointer_flip"]
    finally:
        worker.close()


def test_a_refresh_between_the_registry_promotion_and_its_publication_keeps_the_shadow(home):
    """The registry moves first (and drops its challenger alias), the control plane's message
    follows: a refresh in between must not drop the version about to be flipped in."""
    from ml import registry

    champion, challenger = home.good
    challenger_is(challenger)
    worker = started("race-worker")
    try:
        registry.promote("rl_agent", challenger, actor="test")
        assert registry.challenger_version("rl_agent") is None
        worker.request_challenger().result(60)
        assert worker.models.challenger.version == challenger  # kept for the flip
        assert worker.request("rl_agent", challenger, "control_plane") is None
        assert worker.health()["last_swap"]["pointer_flip"]
    finally:
        worker.close()
        registry.promote("rl_agent", champion, actor="test")


def test_a_challenger_that_does_not_load_is_not_shadowed_nor_retried(home):
    challenger_is(home.broken)
    worker = started("broken-shadow-worker")
    try:
        assert worker.models.challenger is None
        assert worker.models.policy.version == home.good[0]  # the champion serves regardless
        failures = 'prioritymax_autoscaler_model_load_failures_total{model="rl_agent_challenger"}'
        assert metric(worker, failures) == 1
        worker.request_challenger().result(60)
        assert metric(worker, failures) == 1  # remembered, not loaded again every refresh
        worker.decide(Reading(**READING))
        assert worker.shadow.wait_idle(30)
        assert worker.recent_decisions(1)[0]["shadow"] is None
        assert worker.health()["challenger"] is None

        challenger_is(home.good[1])  # the registry names another one: shadowed at the next refresh
        worker.request_challenger().result(60)
        assert worker.models.challenger.version == home.good[1]
    finally:
        worker.close()


def test_a_challenger_the_registry_drops_leaves_the_shadow(home):
    from ml import registry

    challenger_is(home.good[1])
    worker = started("dropped-shadow-worker")
    try:
        assert worker.models.challenger.version == home.good[1]
        registry.client().delete_registered_model_alias("rl_agent", registry.CHALLENGER)
        worker.request_challenger().result(60)
        assert worker.models.challenger is None
        assert metric(worker, "prioritymax_autoscaler_challenger_version ") == 0
    finally:
        worker.close()


class TestDecisionCost:
    """The counterfactual both decisions are scored with (``ml/sim/counterfactual.py``)."""

    config = SimConfig()

    def cost(self, target, *, queue=(0, 0, 0), rate=10.0, active=10, warming=0):
        return decision_cost(self.config, queue=np.array(queue, dtype=float), arrival_rate=rate,
                             active=active, warming=warming, target=target)

    def test_an_idle_pool_pays_for_every_extra_worker(self):
        small, large = self.cost(10, rate=2.0), self.cost(14, rate=2.0)
        assert small.sla_penalty == large.sla_penalty == 0
        steps = self.config.warmup_steps + 1
        extra = 4 * self.config.worker_cost_per_step * steps
        assert large.worker_cost - small.worker_cost == pytest.approx(extra)
        assert large.churn_cost == pytest.approx(4 * self.config.churn_cost)

    def test_an_overloaded_pool_misses_slas_that_more_workers_would_have_met(self):
        queue = (200, 800, 800)
        hold, grow = self.cost(10, queue=queue, rate=20.0), self.cost(12, queue=queue, rate=20.0)
        assert hold.sla_penalty > grow.sla_penalty > 0
        assert hold.violations[0] >= grow.violations[0]

    def test_added_workers_serve_only_after_warming_up(self):
        """Over a horizon shorter than the warm-up, adding workers only costs."""
        hold = decision_cost(self.config, queue=np.array([0, 3000, 0.0]), arrival_rate=20.0, active=10,
                             warming=0, target=10, steps=1)
        grow = decision_cost(self.config, queue=np.array([0, 3000, 0.0]), arrival_rate=20.0, active=10,
                             warming=0, target=12, steps=1)
        assert grow.sla_penalty == hold.sla_penalty and grow.total > hold.total

    def test_targets_are_clipped_to_the_pool_bounds(self):
        assert self.cost(500).worker_cost == self.cost(self.config.max_workers).worker_cost
        assert self.cost(-3).worker_cost == self.cost(self.config.min_workers).worker_cost
