"""The config control plane against a real uvicorn on loopback: versions, If-Match, rollback,
tenants, flags, secrets never in plaintext, live push, roles, bad input."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.integration


def test_seed_examples_health_and_status(server):
    with server.client(None) as anonymous:
        for path in ("/config/health", "/config/status"):
            body = anonymous.get(path).json()
            assert set(body) == {"ok", "uptime_seconds", "config_items_cached", "ws_connections"}
            assert body["ok"] is True
    with server.client("operator") as operator, server.client("admin") as admin:
        created = operator.post("/config", json={"key": "autoscaler.max_workers", "value": 25,
                                                 "is_secret": False,
                                                 "comment": "Increased max worker limit"})
        assert created.status_code == 200, created.text
        assert created.json()["version"] == 1 and created.json()["namespace"] == "autoscaler"
        secret = admin.post("/config/secrets/redis_password", json={"secret_value": "s3cr3tpass"})
        assert secret.status_code == 200 and secret.json()["value"] == "********"
        flag = operator.put("/config/features/chaos_mode", json={
            "name": "chaos_mode", "enabled": True, "description": "Enable chaos testing globally"})
        assert flag.status_code == 200 and flag.json()["value"]["enabled"] is True
        for version in (26, 27):
            operator.post("/config", json={"key": "autoscaler.max_workers", "value": version})
        rolled = admin.post("/config/autoscaler.max_workers/rollback/1")
        assert rolled.status_code == 200 and rolled.json()["value"] == 25
        assert rolled.json()["version"] == 4
        versions = admin.get("/config/autoscaler.max_workers/versions").json()
        assert [v["value"] for v in versions] == [25, 26, 27, 25]
        assert versions[-1]["operation"] == "rollback" and versions[-1]["previous_version"] == 3
        assert operator.post("/config/reload").json()["reloaded"] is True
        assert admin.get("/config/status").json()["config_items_cached"] >= 3


def test_if_match_tenants_and_resolution(server):
    with server.client("operator") as operator:
        first = operator.post("/config", json={"key": "queue.limit", "value": 100}).json()
        stale = operator.post("/config", json={"key": "queue.limit", "value": 5},
                              headers={"If-Match": str(first["version"] - 1)})
        assert stale.status_code == 409
        ok = operator.post("/config", json={"key": "queue.limit", "value": 120},
                           headers={"If-Match": f'"{first["version"]}"'})
        assert ok.status_code == 200 and ok.json()["version"] == first["version"] + 1
        operator.post("/config", json={"key": "queue.limit", "value": 7, "tenant": "org:acme"})
        acme = operator.get("/config/queue.limit/resolve", params={"tenant": "org:acme"}).json()
        assert acme["value"] == 7 and acme["layer"] == "tenant"
        other = operator.get("/config/queue.limit/resolve", params={"tenant": "org:other"}).json()
        assert other["value"] == 120 and other["layer"] == "global"
        listed = operator.get("/config", params={"prefix": "queue.", "tenant": "org:acme"}).json()
        assert [(i["key"], i["tenant"]) for i in listed] == [("queue.limit", "org:acme")]
        assert operator.delete("/config/queue.limit", params={"tenant": "org:acme"}).status_code == 200
        assert operator.get("/config/queue.limit/resolve",
                            params={"tenant": "org:acme"}).json()["layer"] == "global"


def test_flags_per_tenant_and_sticky_rollout(server):
    with server.client("operator") as operator:
        operator.put("/config/features/autoscaler_loop", json={"enabled": True})
        operator.put("/config/features/autoscaler_loop", json={"enabled": False, "tenant": "org:acme"})
        glob = operator.get("/config/features/autoscaler_loop/evaluate").json()
        assert (glob["enabled"], glob["reason"]) == (True, "STATIC")
        acme = operator.get("/config/features/autoscaler_loop/evaluate",
                            params={"tenant": "org:acme"}).json()
        assert (acme["enabled"], acme["reason"], acme["chain"]) == (
            False, "TARGETING_MATCH", ["tenant:org:acme", "global"])
        operator.put("/config/features/new_policy", json={"enabled": True, "rollout_percent": 30,
                                                          "context_key": "worker"})
        answers = [operator.get("/config/features/new_policy/evaluate", params={
            "context_key": "worker", "context_value": f"w{i}"}).json() for i in range(200)]
        share = sum(a["enabled"] for a in answers) / len(answers)
        assert 0.2 < share < 0.4 and {a["reason"] for a in answers} == {"SPLIT"}
        again = operator.get("/config/features/new_policy/evaluate",
                             params={"context_key": "worker", "context_value": "w7"}).json()
        assert again["enabled"] == answers[7]["enabled"]  # sticky
        missing = operator.get("/config/features/nope/evaluate").json()
        assert (missing["enabled"], missing["reason"]) == (False, "DEFAULT")


def test_live_push_in_revision_order_and_resume_with_since(server):
    with server.client("operator") as operator, \
            connect(f"{server.ws_url}?token={server.tokens['viewer']}") as socket:
        hello = json.loads(socket.recv(timeout=10))
        assert hello["type"] == "hello"
        for value in range(5):
            operator.post("/config", json={"key": "push.test", "value": value})
        messages = [json.loads(socket.recv(timeout=10)) for _ in range(5)]
        assert [m["value"] for m in messages] == list(range(5))
        revisions = [m["revision"] for m in messages]
        assert revisions == sorted(revisions) and revisions[0] > hello["revision"]
        assert set(messages[0]) >= {"type", "key", "tenant", "version", "revision", "value"}
    with connect(f"{server.ws_url}?token={server.tokens['viewer']}&since={revisions[1]}") as late:
        json.loads(late.recv(timeout=10))
        replayed = [json.loads(late.recv(timeout=10))["value"] for _ in range(3)]
        assert replayed == [2, 3, 4]


def test_a_secret_never_appears_in_plaintext(server):
    plaintext = "PLAINTEXT-canary-8c1f0b"
    with server.client("admin") as admin, \
            connect(f"{server.ws_url}?token={server.tokens['admin']}") as socket:
        json.loads(socket.recv(timeout=10))
        assert admin.post("/config/secrets/db_password", json={"secret_value": plaintext}).status_code == 200
        pushed = socket.recv(timeout=10)
        bodies = [pushed,
                  admin.get("/config/db_password").text,
                  admin.get("/config/secrets").text,
                  admin.get("/config", params={"prefix": "db"}).text,
                  admin.get("/config/db_password/versions").text,
                  admin.get("/config/snapshot").text,
                  admin.get("/config/metrics").text]
        rotated = admin.post("/config/rotate_fernet_key")
        assert rotated.status_code == 200 and rotated.json()["secrets"] >= 1
        backup = admin.get("/config/backup")
        bodies += [rotated.text, backup.text, socket.recv(timeout=10)]
        assert json.loads(bodies[-1])["type"] == "system.rotate_fernet_key"
    audit = (server.home / "logs" / "config_audit.jsonl").read_text()
    for text in (*bodies, audit):
        assert plaintext not in text
    secret_item = next(i for i in backup.json()["items"] if i["key"] == "db_password")
    from cryptography.fernet import Fernet, MultiFernet

    keys = (server.home / "secrets" / "fernet.key").read_text().split()
    assert len(keys) == 1  # the old key is retired
    assert MultiFernet([Fernet(k) for k in keys]).decrypt(secret_item["value"].encode()).decode() == plaintext


def test_metrics_use_the_seed_names(server):
    with server.client("viewer") as viewer:
        text = viewer.get("/config/metrics").text
    for name in ("prioritymax_config_changes_total", "prioritymax_config_rollbacks_total",
                 "prioritymax_config_active_keys", "prioritymax_config_request_duration_seconds_bucket"):
        assert name in text


@pytest.mark.parametrize("payload,status", [
    ({"key": "../etc", "value": 1}, 422),
    ({"key": "a" * 201, "value": 1}, 422),
    ({"key": "status", "value": 1}, 422),
    ({"key": "ok.key", "value": 1, "tenant": "acme"}, 422),
    ({"key": "ok.key"}, 422),
    ({"key": "ok.key", "value": "x" * 70_000}, 413),
    ({"key": "ok.key", "value": 1, "unknown": True}, 422),
])
def test_bad_input_is_a_clear_4xx_and_writes_nothing(server, payload, status):
    with server.client("admin") as admin:
        before = admin.get("/config/snapshot").json()["revision"]
        response = admin.post("/config", json=payload)
        assert response.status_code == status, response.text
        assert response.json()["detail"]
        assert admin.get("/config/snapshot").json()["revision"] == before


def test_unknown_keys_and_versions_are_404(server):
    with server.client("admin") as admin:
        assert admin.get("/config/no.such.key").status_code == 404
        admin.post("/config", json={"key": "v.key", "value": 1})
        assert admin.post("/config/v.key/rollback/99").status_code == 404
        assert admin.delete("/config/no.such.key").status_code == 404
