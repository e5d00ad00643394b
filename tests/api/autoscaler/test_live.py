"""The loop closed for real: the API (uvicorn) and ``pmx autoscaler`` (its own process, following the
API over the WebSocket) on one data home; promotions through the admin API reach the worker's
decisions, a broken version is refused and alerted to a local Slack receiver, flags steer it, and
the control plane going down leaves it serving."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from prioritymax.settings import REPO_ROOT
from tests.api.autoscaler.support import READING, register_policies
from tests.api.conftest import free_port, start_server, stop_server, wait_until_answers
from tests.api.test_backups_alerts import SlackReceiver

pytestmark = pytest.mark.integration


class Worker:
    def __init__(self, process: subprocess.Popen, url: str) -> None:
        self.process = process
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def decide(self, **changes) -> dict:
        response = self.http.post("/autoscaler/decide", json={**READING, **changes})
        assert response.status_code == 200, response.text
        return response.json()

    def health(self) -> dict:
        return self.http.get("/autoscaler/health").json()

    def wait_for(self, check, what: str, timeout: float = 30) -> dict:
        """Decide until ``check(decision)``; every request in between must succeed."""
        deadline = time.monotonic() + timeout
        while True:
            decision = self.decide()
            if check(decision):
                return decision
            assert time.monotonic() < deadline, f"{what}: last decision {decision}, health {self.health()}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    work = tmp_path_factory.mktemp("live")
    versions = register_policies(work / "home", work)
    slack = SlackReceiver()
    api = start_server(versions.home)
    port, grpc_port = free_port(), free_port()
    env = {**api.env, "SLACK_WEBHOOK_URL": slack.url}
    process = subprocess.Popen(
        [sys.executable, "-m", "pmx.cli", "autoscaler", "--port", str(port), "--grpc-port", str(grpc_port),
         "--api-url", api.url,
         "--token", api.tokens["viewer"], "--name", "live-worker", "--log-level", "warning"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = Worker(process, f"http://127.0.0.1:{port}")
    worker.grpc_port = grpc_port
    try:  # stopped below even when the worker never gets ready
        wait_until_answers(f"{worker.url}/autoscaler/health", process, "the worker",
                           ok=lambda response: response.json()["status"] == "ok", log=process.stdout.read)
        yield versions, api, worker, slack
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        if api.process.poll() is None:
            stop_server(api)
        slack.close()


def test_the_worker_serves_the_champion_and_refuses_bad_readings(live):
    versions, _, worker, _ = live
    decision = worker.decide()
    assert decision["policy_version"] == versions.good[0] and decision["worker"] == "live-worker"
    for bad, field in (({"arrival_rate": "many"}, "arrival_rate"), ({"active_workers": -1}, "active_workers"),
                       ({"queue": {"high": -5, "normal": 1, "low": 1}}, "queue"),
                       ({"utilization": 1.5}, "utilization")):
        response = worker.http.post("/autoscaler/decide", json={**READING, **bad})
        assert response.status_code == 422, (bad, response.text)
        assert field in response.text
    not_finite = worker.http.post("/autoscaler/decide", headers={"content-type": "application/json"},
                                  content=b'{"queue": {"high": 1, "normal": 1, "low": 1}, '
                                          b'"arrival_rate": NaN, "active_workers": 1, "utilization": 0.5}')
    assert not_finite.status_code == 422 and "NaN is not JSON" in not_finite.text
    missing = {k: v for k, v in READING.items() if k != "utilization"}
    response = worker.http.post("/autoscaler/decide", json=missing)
    assert response.status_code == 422 and "utilization" in response.text
    wrong = worker.http.post("/autoscaler/decide", json={**READING, "queue": {"high": 1}})
    assert wrong.status_code == 422 and "lacks ['normal', 'low']" in wrong.json()["detail"]


def test_a_promotion_is_live_on_the_worker_and_a_broken_one_is_refused(live):
    """A version that does not load is refused by the promotion itself (422, the alias stays); one
    written to the control plane by hand is refused by the worker, which keeps serving."""
    versions, api, worker, slack = live
    with api.client("operator") as operator:
        promoted = operator.post("/admin/models/rl_agent/promote", json={"version": int(versions.good[1])})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["published"]["key"] == "autoscaler.policy_version"
        assert promoted.json()["actor"] == "test-operator"
        worker.wait_for(lambda d: d["policy_version"] == versions.good[1], "promotion to live")

        broken = operator.post("/admin/models/rl_agent/promote", json={"version": int(versions.broken)})
        assert broken.status_code == 422, broken.text
        assert "not promoted (workers could not serve it)" in broken.json()["detail"]
        models = operator.get("/admin/models", params={"name": "rl_agent"}).json()
        assert [str(m["version"]) for m in models if "champion" in m["aliases"]] == [versions.good[1]]

        by_hand = operator.post("/config", json={"key": "autoscaler.policy_version",
                                                 "value": int(versions.broken), "comment": "by hand"})
        assert by_hand.status_code in (200, 201), by_hand.text
    text = slack.wait_for(f"rl_agent version {versions.broken} refused", timeout=30)
    assert f"still serving {versions.good[1]}" in text
    assert worker.decide()["policy_version"] == versions.good[1]
    error = worker.health()["last_load_error"]
    assert error["version"] == versions.broken and error["source"] == "control_plane"
    swaps = worker.http.get("/autoscaler/swaps").json()
    assert [s["to"] for s in swaps] == [versions.good[0], versions.good[1]]


def test_keda_asks_the_worker_over_grpc(live):
    """``pmx autoscaler --grpc-port`` serves KEDA's external scaler beside the HTTP routes; a trigger
    with ``readings: posted`` answers with the tenant's latest POSTed decision."""
    import grpc

    from api.autoscaler.keda import externalscaler_pb2 as pb
    from api.autoscaler.keda import externalscaler_pb2_grpc as pb_grpc

    _, _, worker, _ = live
    decision = worker.decide(tenant="org:keda")
    ref = pb.ScaledObjectRef(name="workers", namespace="default",
                             scalerMetadata={"tenant": "org:keda", "readings": "posted"})
    with grpc.insecure_channel(f"127.0.0.1:{worker.grpc_port}") as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        assert stub.GetMetricSpec(ref, timeout=10).metricSpecs[0].metricName == "prioritymax-workers"
        value = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref), timeout=10).metricValues[0]
        assert value.metricValueFloat == decision["target_workers"]
        assert stub.IsActive(ref, timeout=10).result is True


def test_flags_steer_the_worker_per_tenant(live):
    _, api, worker, _ = live
    with api.client("operator") as operator:
        assert operator.put("/config/features/autoscaler_loop", json={"enabled": False}).status_code == 200
        held = worker.wait_for(lambda d: d["mode"] == "hold", "autoscaler_loop off")
        assert held["delta"] == 0 and held["target_workers"] == held["current_workers"]
        assert operator.put("/config/features/autoscaler_loop",
                            json={"enabled": True, "tenant": "org:acme"}).status_code == 200
        deadline = time.monotonic() + 30
        while worker.decide(tenant="org:acme")["mode"] != "policy":
            assert time.monotonic() < deadline, "the tenant override did not reach the worker"
            time.sleep(0.05)
        assert worker.decide()["mode"] == "hold"  # the global layer is still off
        assert operator.post("/config", json={"key": "autoscaler.mode", "value": "hpa",
                                              "tenant": "org:acme"}).status_code == 200
        deadline = time.monotonic() + 30
        while worker.decide(tenant="org:acme")["mode"] != "hpa":
            assert time.monotonic() < deadline, "autoscaler.mode did not reach the worker"
            time.sleep(0.05)
        assert operator.put("/config/features/autoscaler_loop", json={"enabled": True}).status_code == 200
    worker.wait_for(lambda d: d["mode"] == "policy", "autoscaler_loop back on")


def test_pmx_models_promote_publishes_to_the_control_plane_too(live):
    versions, api, worker, _ = live
    with api.client("operator") as operator:
        listed = operator.get("/admin/models", params={"name": "rl_agent"}).json()
    champion = next((str(v["version"]) for v in listed if "champion" in v["aliases"].split(",")), None)
    target = next(v for v in versions.good if v != champion and v != worker.decide()["policy_version"])
    env = {**api.env, "PRIORITYMAX_API_URL": api.url, "PRIORITYMAX_API_TOKEN": api.tokens["operator"]}
    done = subprocess.run([sys.executable, "-m", "pmx.cli", "models", "promote", "rl_agent",
                           target, "--actor", "carol"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"published autoscaler.policy_version={target}" in done.stdout
    worker.wait_for(lambda d: d["policy_version"] == target, "pmx models promote to live")


def test_with_the_control_plane_down_the_worker_keeps_serving(live):
    versions, api, worker, _ = live
    serving = worker.decide()["policy_version"]
    stop_server(api)
    deadline = time.monotonic() + 30
    while worker.health()["control_plane"]["connected"]:
        assert time.monotonic() < deadline, "the worker did not notice the control plane went down"
        time.sleep(0.1)
    health = worker.health()
    assert health["status"] == "degraded" and "unreachable" in health["problems"][0]
    for _ in range(20):
        assert worker.decide()["policy_version"] == serving
