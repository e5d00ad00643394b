"""POST /config/batch: several items in one transaction, each its own version, event and audit
line as POST /config writes it; all or nothing unless ``atomic`` is false. A real server of this
module's own (the ``server`` fixture is module-scoped)."""

from __future__ import annotations

import json
import re

import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.integration


def _audit(server) -> list[dict]:
    path = server.home / "logs" / "config_audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _changes_total(client) -> float:
    text = client.get("/config/metrics").text
    found = re.search(r'^prioritymax_config_changes_total\{kind="config",operation="set"\} (\S+)$', text,
                      re.M)
    return float(found.group(1)) if found else 0.0


def _next_message(socket) -> dict:
    return json.loads(socket.recv(timeout=10))


def test_atomic_batch_writes_each_item_as_a_version_event_and_audit_line(server):
    items = [{"key": "batch.a", "value": 1, "comment": "first"},
             {"key": "batch.b", "value": {"nested": [1, 2]}, "tenant": "org:acme"},
             {"key": "batch.a", "value": 2, "expected_version": 1},  # sees the item before it
             {"key": "batch.c", "value": "x", "namespace": "custom"}]
    with server.client("operator") as operator, \
            connect(f"{server.ws_url}?token={server.tokens['viewer']}") as socket:
        hello = _next_message(socket)
        counted = _changes_total(operator)
        response = operator.post("/config/batch", json={"items": items})
        assert response.status_code == 200, response.text
        body = response.json()
        pushed = [_next_message(socket) for _ in items]
        assert _changes_total(operator) == counted + len(items)
    written = body["written"]
    assert body["refused"] == []
    assert [(w["index"], w["key"], w["version"]) for w in written] == [
        (0, "batch.a", 1), (1, "batch.b", 1), (2, "batch.a", 2), (3, "batch.c", 1)]
    revisions = [w["revision"] for w in written]
    assert revisions == list(range(revisions[0], revisions[0] + len(items)))
    assert revisions[0] == hello["revision"] + 1
    assert written[0]["comment"] == "first" and written[0]["updated_by"] == "test-operator"
    assert written[1]["tenant"] == "org:acme" and written[1]["value"] == {"nested": [1, 2]}
    assert written[3]["namespace"] == "custom" and written[0]["namespace"] == "batch"
    # The subscribers get every change, in order, as POST /config would push it.
    assert [(m["key"], m["value"], m["version"], m["revision"]) for m in pushed] == [
        (w["key"], w["value"], w["version"], w["revision"]) for w in written]
    assert all(m["type"] == "config.set" for m in pushed)
    # The same shape POST /config returns, and stored: current items, history, audit lines.
    with server.client("viewer") as viewer:
        assert viewer.get("/config/batch.a").json()["value"] == 2
        assert viewer.get("/config/batch.b", params={"tenant": "org:acme"}).json()["version"] == 1
        history = viewer.get("/config/batch.a/versions").json()
        single = viewer.get("/config/batch.c").json()
    assert [(v["version"], v["value"], v["previous_version"], v["operation"]) for v in history] == [
        (1, 1, None, "set"), (2, 2, 1, "set")]
    assert single == {k: v for k, v in written[3].items()
                      if k not in ("index", "revision")} | {"deleted": False}
    audit = [line for line in _audit(server) if line.get("revision") in revisions]
    assert [(a["revision"], a["key"], a["version"], a["operation"], a["actor"]) for a in audit] == [
        (w["revision"], w["key"], w["version"], "set", "test-operator") for w in written]


def test_a_refused_item_refuses_the_whole_atomic_batch(server):
    with server.client("operator") as operator:
        assert operator.post("/config", json={"key": "atomic.kept", "value": "before"}).status_code == 200
        before = operator.get("/config/snapshot").json()
        audit_lines = len(_audit(server))
        counted = _changes_total(operator)
        with connect(f"{server.ws_url}?token={server.tokens['viewer']}") as socket:
            _next_message(socket)
            response = operator.post("/config/batch", json={"items": [
                {"key": "atomic.kept", "value": "after", "expected_version": 1},  # fine on its own
                {"key": "atomic.new", "value": 1},
                {"key": "atomic.kept", "value": "stale", "expected_version": 1},  # 409: now at 2
                {"key": "bad..key", "value": 1},  # 422
                {"key": "atomic.big", "value": "x" * 70_000},  # 413
            ]})
            # The next change a subscriber gets is this marker, not one of the batch.
            assert operator.post("/config", json={"key": "atomic.marker", "value": 1}).status_code == 200
            assert _next_message(socket)["key"] == "atomic.marker"
        assert response.status_code == 422, response.text  # mixed statuses
        detail = response.json()["detail"]
        assert "nothing was written" in detail["message"]
        assert [(r["index"], r["key"], r["status"]) for r in detail["refused"]] == [
            (2, "atomic.kept", 409), (3, "bad..key", 422), (4, "atomic.big", 413)]
        after = operator.get("/config/snapshot").json()
        assert after["revision"] == before["revision"] + 1  # the marker only
        assert operator.get("/config/atomic.kept").json()["value"] == "before"
        assert operator.get("/config/atomic.kept/versions").json()[-1]["version"] == 1
        assert operator.get("/config/atomic.new").status_code == 404
        assert len(_audit(server)) == audit_lines + 1
        assert _changes_total(operator) == counted + 1
        # One kind of refusal: its status.
        stale = operator.post("/config/batch", json={"items": [
            {"key": "atomic.kept", "value": 0, "expected_version": 7}]})
        assert stale.status_code == 409, stale.text
        assert stale.json()["detail"]["refused"][0]["index"] == 0


def test_non_atomic_batch_applies_each_item_on_its_own(server):
    with server.client("operator") as operator:
        response = operator.post("/config/batch", json={"atomic": False, "items": [
            {"key": "partial.a", "value": 1},
            {"key": "partial.a", "value": 2, "expected_version": 0},  # 409: the item before made it 1
            {"key": "features", "value": 1},  # 422: reserved
            {"key": "partial.a", "value": 3, "expected_version": 1},
            {"key": "partial.b", "value": 4, "tenant": "org:x"},
        ]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert [(w["index"], w["key"], w["version"], w["value"]) for w in body["written"]] == [
            (0, "partial.a", 1, 1), (3, "partial.a", 2, 3), (4, "partial.b", 1, 4)]
        revisions = [w["revision"] for w in body["written"]]
        assert revisions == list(range(revisions[0], revisions[0] + 3))
        assert [(r["index"], r["key"], r["status"]) for r in body["refused"]] == [
            (1, "partial.a", 409), (2, "features", 422)]
        assert operator.get("/config/partial.a").json()["value"] == 3
        # Everything refused: still a 200 that lists the refusals.
        none = operator.post("/config/batch", json={"atomic": False, "items": [{"key": "..", "value": 1}]})
        assert none.status_code == 200 and none.json()["written"] == []
        assert none.json()["refused"][0]["status"] == 422


@pytest.mark.parametrize("count", [0, 501])
def test_batch_size_is_1_to_500_items(server, count):
    with server.client("operator") as operator:
        response = operator.post("/config/batch", json={"items": [
            {"key": f"size.k{i}", "value": i} for i in range(count)]})
        assert response.status_code == 422, response.text
        assert operator.get("/config/size.k0").status_code == 404


def test_secrets_cannot_be_batched(server):
    with server.client("admin") as admin:
        secret = admin.post("/config/batch", json={"items": [
            {"key": "batch.secret", "value": "s3cret-canary", "is_secret": True}]})
        assert secret.status_code == 422, secret.text
        assert admin.get("/config/batch.secret").status_code == 404
        # Nor can a batch overwrite an existing secret with a plain value.
        assert admin.post("/config/secrets/batch.existing", json={"secret_value": "v"}).status_code == 200
        plain = admin.post("/config/batch", json={"items": [{"key": "batch.existing", "value": "plain"}]})
        assert plain.status_code == 409, plain.text
        assert admin.get("/config/batch.existing").json()["is_secret"] is True
        # is_secret false is allowed (the shape POST /config takes).
        ok = admin.post("/config/batch", json={"items": [{"key": "batch.plain", "value": 1,
                                                          "is_secret": False}]})
        assert ok.status_code == 200, ok.text
    assert "s3cret-canary" not in (server.home / "logs" / "config_audit.jsonl").read_text()


def test_viewer_cannot_write_a_batch(server):
    with server.client("viewer") as viewer:
        response = viewer.post("/config/batch", json={"items": [{"key": "viewer.key", "value": 1}]})
        assert response.status_code == 403
        assert viewer.get("/config/viewer.key").status_code == 404
