"""KEDA's external scaler on a worker with a real registry, spoken to by a gRPC client generated from
KEDA's contract, reading a pool's state from a real Prometheus that scrapes the pool's exporter."""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest

from api.autoscaler import decide
from api.autoscaler.keda import externalscaler_pb2 as pb
from api.autoscaler.keda import externalscaler_pb2_grpc as pb_grpc
from api.autoscaler.keda.hpa import desired_replicas
from api.autoscaler.keda.scaler import serve, stop
from api.autoscaler.pool_exporter import PoolExporter
from api.autoscaler.schemas import Reading
from api.autoscaler.worker import AutoscalerWorker
from ml.sim.replay import reading_from
from ml.sim.vec_env import PriorityMaxVecEnv
from prioritymax.settings import BUNDLED_TRACE, get_settings
from tests.api.autoscaler.support import READING, register_policies
from tests.api.conftest import free_port
from tests.api.services import prometheus_server

pytestmark = pytest.mark.integration

POOL = "checkout"
#: The closed loop's episode: 90 minutes of the NASA trace (decisions every simulated minute).
LOOP_STEPS = 90


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A registry with a champion policy, a pool exporter scraped by Prometheus, a worker serving
    KEDA's scaler on loopback, and a stub to call it."""
    work = tmp_path_factory.mktemp("keda")
    versions = register_policies(work / "home", work)
    exporter = PoolExporter().serve(free_port())
    port = exporter._server.server_port
    with pytest.MonkeyPatch.context() as patch, prometheus_server([f"127.0.0.1:{port}"]) as prometheus:
        patch.setenv("PRIORITYMAX_HOME", str(versions.home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # one left by another test's MLflow
        patch.setenv("PRIORITYMAX_PROMETHEUS_URL", prometheus.url)
        get_settings.cache_clear()
        worker = AutoscalerWorker(name="keda-worker", alert=lambda *_, **__: None).start()
        assert worker.wait_loaded(60)
        server, scaler = serve(worker, 0)
        channel = grpc.insecure_channel(f"127.0.0.1:{scaler.port}")
        try:
            yield {"worker": worker, "exporter": exporter, "prometheus": prometheus,
                   "stub": pb_grpc.ExternalScalerStub(channel)}
        finally:
            channel.close()
            stop(server, scaler)
            worker.close()
            exporter.close()
    get_settings.cache_clear()


def ref(**metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="checkout-workers", namespace="shop",
                              scalerMetadata={"pool": POOL, "decisionCacheSeconds": "0", **metadata})


def publish(cluster, step: int, reading: dict) -> None:
    """The pool's state, in Prometheus once a scrape has brought it in."""
    cluster["exporter"].publish(POOL, queue=reading["queue"], arrival_rate=reading["arrival_rate"],
                                arrival_rate_smoothed=reading.get("arrival_rate_smoothed",
                                                                  reading["arrival_rate"]),
                                active_workers=reading["active_workers"],
                                warming_workers=reading.get("warming_workers", 0),
                                utilization=reading["utilization"], step=step)
    cluster["prometheus"].wait_for(f'prioritymax_pool_step{{pool="{POOL}"}}', step)


def test_get_metrics_lands_the_hpa_formula_on_the_policys_target(cluster):
    publish(cluster, 1, READING)
    stub = cluster["stub"]
    spec = stub.GetMetricSpec(ref()).metricSpecs[0]
    assert spec.metricName == "prioritymax-checkout" and spec.targetSizeFloat == 1.0
    value = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(), metricName="s0-prioritymax-checkout"))
    (metric,) = value.metricValues
    assert metric.metricName == "s0-prioritymax-checkout"
    expected = cluster["worker"].decide(Reading(**READING)).target_workers
    assert metric.metricValueFloat == expected and metric.metricValue == expected
    replicas = desired_replicas(READING["active_workers"], metric.metricValueFloat, spec.targetSizeFloat,
                                min_replicas=1, max_replicas=50, tolerance=0)
    assert replicas == expected


def test_is_active_is_false_only_at_the_minimum_with_empty_queues(cluster):
    stub = cluster["stub"]
    idle = {**READING, "queue": {"high": 0, "normal": 0, "low": 0}, "arrival_rate": 0.0,
            "active_workers": 1, "utilization": 0.0}
    publish(cluster, 2, idle)
    assert stub.IsActive(ref()).result is False
    publish(cluster, 3, READING)
    assert stub.IsActive(ref()).result is True
    stream = stub.StreamIsActive(ref(streamIntervalSeconds="0.1"))
    assert next(stream).result is True  # the state now, first thing
    publish(cluster, 4, idle)
    assert next(stream).result is False  # then each change
    stream.cancel()


def test_a_query_from_the_trigger_replaces_the_built_in_one(cluster):
    publish(cluster, 5, READING)
    flooded = ref(**{"query.queue": 'sum(prioritymax_pool_queue_tasks{pool="$pool",priority="$priority"}) '
                                    '* 1000000'})
    value = cluster["stub"].GetMetrics(pb.GetMetricsRequest(scaledObjectRef=flooded)).metricValues[0]
    worker = cluster["worker"]
    assert value.metricValueFloat == READING["active_workers"] + max(worker.policy_config().scale_deltas)


def test_bad_triggers_and_readings_get_grpc_errors_that_say_why(cluster):
    stub = cluster["stub"]
    with pytest.raises(grpc.RpcError) as error:
        stub.GetMetricSpec(ref(readings="kafka"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'kafka'" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        stub.IsActive(ref(**{"query.queueLength": "vector(1)"}))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "queueLength" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:  # a pool nobody exports
        stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(pool="ghost")))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no series for" in error.value.details() and "ghost" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:  # a query that answers per-instance series
        stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(**{"query.utilization": "up or vector(1)"})))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "aggregate" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        nowhere = ref(prometheusAddress=f"http://127.0.0.1:{free_port()}")
        stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=nowhere))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    counted = b'keda_requests_total{outcome="prometheus_unavailable",rpc="GetMetrics"} 1.0'
    assert counted in cluster["worker"].metrics.render()


def test_posted_readings_answer_with_the_tenants_latest_decision(cluster):
    stub, worker = cluster["stub"], cluster["worker"]
    posted = ref(readings="posted", tenant="org:posted")
    with pytest.raises(grpc.RpcError) as error:
        stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=posted))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "org:posted" in error.value.details()
    decision = worker.decide(Reading(**{**READING, "tenant": "org:posted"}))
    value = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=posted)).metricValues[0]
    assert value.metricValueFloat == decision.target_workers


def test_one_decision_answers_a_polling_cycle(cluster):
    publish(cluster, 6, READING)
    stub, worker = cluster["stub"], cluster["worker"]
    cached = ref(decisionCacheSeconds="60", pool=POOL)
    before = len(worker.recent)
    stub.IsActive(cached)
    stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=cached))
    stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=cached))
    assert len(worker.recent) == before + 1


@pytest.mark.parametrize(("current", "value", "tolerance", "expected"), [
    (4, 6.0, 0.1, 6),      # ceil(6 / 1)
    (20, 21.0, 0.1, 20),   # within the default tolerance: the HPA keeps 20
    (20, 21.0, 0.0, 21),   # with no tolerance it follows the policy
    (10, 11.0, 0.1, 11),   # |1 - 1.1| is 0.10000000000000009 in binary: above the tolerance
    (3, 60.0, 0.1, 50),    # clamped to maxReplicaCount
    (0, 5.0, 0.1, 0),      # at zero the HPA waits for KEDA's activation
    (7, 2.0004, 0.0, 2),   # KEDA's milli-quantities drop what is below a milli-unit: 2000 m
])
def test_the_hpa_formula(current, value, tolerance, expected):
    replicas = desired_replicas(current, value, 1.0, min_replicas=1, max_replicas=50, tolerance=tolerance)
    assert replicas == expected


def action_for(config, current: int, replicas: int) -> int:
    """The simulator's action that takes a pool of ``current`` to ``replicas``."""
    for index, delta in enumerate(config.scale_deltas):
        if min(max(current + delta, config.min_workers), config.max_workers) == replicas:
            return index
    raise AssertionError(f"no scale step takes {current} workers to {replicas}")


def run_episode(config, seed: int, replicas_for) -> list[int]:
    """One episode of the NASA trace whose pool is set each step to ``replicas_for(step, info)``."""
    env = PriorityMaxVecEnv(1, config, BUNDLED_TRACE)
    try:
        _, info = env.reset(seed=[seed])
        pools = []
        for step in range(config.episode_steps):
            current = int(info["active_workers"][0] + info["warming_workers"][0])
            replicas = replicas_for(step, info)
            pools.append(replicas)
            _, _, _, _, info = env.step(np.array([action_for(config, current, replicas)]))
        return pools
    finally:
        env.close()


def test_a_pool_scaled_by_keda_follows_the_policys_own_decisions(cluster):
    """The closed loop: each simulated minute the pool's state goes to Prometheus, KEDA's GetMetrics
    turns it into a value, and the HPA formula sets the pool's replicas; over an episode of the NASA
    trace the replicas are exactly those the policy chooses in the simulator from the same seed."""
    worker, stub = cluster["worker"], cluster["stub"]
    served = worker.models.policy
    config = dataclasses.replace(served.config, episode_steps=LOOP_STEPS)
    rng = np.random.default_rng(0)  # a residual policy acts greedily: no draw is made

    def policy_in_the_simulator(step, info):
        reading = Reading(**reading_from(info, 0, config, tenant=None))  # as `pmx replay` posts it
        _, delta, _, _ = decide.policy_step(served, reading, rng)
        return decide.target(config, reading, delta)

    trigger = ref()
    spec = stub.GetMetricSpec(trigger).metricSpecs[0]

    def keda_through_prometheus(step, info):
        cluster["exporter"].publish_step(POOL, info, config.class_names, step=1000 + step)
        cluster["prometheus"].wait_for(f'prioritymax_pool_step{{pool="{POOL}"}}', 1000 + step)
        value = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=trigger, metricName=spec.metricName))
        current = int(info["active_workers"][0] + info["warming_workers"][0])
        return desired_replicas(current, value.metricValues[0].metricValueFloat, spec.targetSizeFloat,
                                min_replicas=config.min_workers, max_replicas=config.max_workers, tolerance=0)

    expected = run_episode(config, 11, policy_in_the_simulator)
    assert len(set(expected)) > 3  # the trace moves the pool: the comparison is not of constants
    assert run_episode(config, 11, keda_through_prometheus) == expected
