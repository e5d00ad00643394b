"""The Python client and the OpenFeature provider against a real control plane (uvicorn on
loopback): bootstrap and tenant resolution, live updates in revision order, serving the last
snapshot while the server is down, resuming with ?since= (or a snapshot, across a gap) after it
comes back on the same port and data home, and OpenFeature's events, reasons and sticky splits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from openfeature import api as openfeature
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

from api.openfeature_provider import ConfigFeatureProvider
from client.control_plane import ConfigClient
from tests.api.conftest import ADMIN_TOKEN, free_port, start_server, stop_server

pytestmark = pytest.mark.integration

FAST = {"backoff": (0.05, 0.5), "timeout": 5.0}  # reconnect quickly: tests wait on a deadline


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll until ``predicate()`` holds; fail with ``what`` at the deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def server_revision(server) -> int:
    with server.client("admin") as admin:
        return admin.get("/config/snapshot").json()["revision"]


class Events:
    """OpenFeature events of one client, collected from the SDK's handler threads."""

    def __init__(self, client) -> None:
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []
        self._lock = threading.Lock()
        for event in ProviderEvent:
            client.add_handler(event, lambda details, event=event: self._record(event, details))

    def _record(self, event: ProviderEvent, details: EventDetails) -> None:
        with self._lock:
            self.seen.append((event, details))

    def count(self, event: ProviderEvent) -> int:
        with self._lock:
            return sum(1 for seen, _ in self.seen if seen == event)

    def changed(self) -> list[str]:
        with self._lock:
            return [key for seen, details in self.seen if seen == ProviderEvent.PROVIDER_CONFIGURATION_CHANGED
                    for key in details.flags_changed or ()]


@pytest.fixture
def fresh_openfeature():
    yield
    openfeature.clear_providers()


def test_bootstrap_and_tenant_resolution(server):
    with server.client("operator") as operator, server.client("admin") as admin:
        operator.post("/config", json={"key": "client.limit", "value": 100})
        operator.post("/config", json={"key": "client.limit", "value": 7, "tenant": "org:acme"})
        operator.put("/config/features/client_loop", json={"enabled": True})
        operator.put("/config/features/client_loop", json={"enabled": False, "tenant": "org:acme"})
        admin.post("/config/secrets/client_password", json={"secret_value": "not-for-clients"})
    with ConfigClient(server.url, server.tokens["viewer"], **FAST) as client:
        assert client.wait_ready(20)
        assert client.revision == server_revision(server)
        assert client.get("client.limit") == 100
        assert client.get("client.limit", tenant="org:acme") == 7
        assert client.get("client.limit", tenant="org:other") == 100  # tenant -> global
        assert client.get("client.nothing", tenant="org:acme", default=3) == 3
        assert client.get("client_password") == "********"  # secrets stay masked
        item, layer = client.lookup("config", "client.limit", "org:acme")
        assert (item["value"], layer) == (7, "tenant")
        with server.client("viewer") as viewer:  # the client decides flags as the server does
            for tenant in (None, "org:acme", "org:other"):
                params = {"tenant": tenant} if tenant else {}
                expected = viewer.get("/config/features/client_loop/evaluate", params=params).json()
                assert client.flag("client_loop", tenant=tenant).to_dict() == expected
        assert client.is_enabled("client_loop") and not client.is_enabled("client_loop", tenant="org:acme")
        assert client.is_enabled("no_such_flag", default=True)
        assert client.flag("no_such_flag").reason == "DEFAULT"
        wait_for(lambda: client.connected, "the WebSocket")
        assert client.state == "ready" and not client.stale


def test_live_updates_are_applied_in_revision_order(server):
    with ConfigClient(server.url, server.tokens["viewer"], **FAST) as client:
        seen: list[dict] = []
        client.on_change(seen.append)
        assert client.wait_ready(20)
        wait_for(lambda: client.connected, "the WebSocket")
        start = client.revision
        with server.client("operator") as operator:
            for value in range(20):
                operator.post("/config", json={"key": "live.counter", "value": value})
            operator.post("/config", json={"key": "live.counter", "value": -1, "tenant": "org:acme"})
            operator.put("/config/features/live_flag", json={"enabled": True})
            operator.put("/config/features/live_flag", json={"enabled": False})
            operator.delete("/config/live.counter", params={"tenant": "org:acme"})
        last = server_revision(server)
        wait_for(lambda: client.revision == last, f"revision {last}")
        revisions = [message["revision"] for message in seen]
        assert revisions == list(range(start + 1, last + 1))  # each once, in order, no gaps
        counter = [m["value"] for m in seen if m["key"] == "live.counter" and m["tenant"] is None]
        assert counter == list(range(20))
        assert client.get("live.counter", tenant="org:acme") == 19  # the override's deletion arrived
        assert not client.is_enabled("live_flag")
        assert client.stats["snapshots"] == 1 and client.stats["gaps"] == 0

        # A duplicate (at or below the client's revision) is ignored...
        client._apply({**seen[0], "value": "stale", "item": {**seen[0]["item"], "value": "stale"}})
        assert client.get("live.counter") == 19 and client.revision == last
        # ...and a message beyond the next revision is a gap, repaired from a fresh snapshot.
        with server.client("operator") as operator:
            operator.post("/config", json={"key": "live.counter", "value": 20})
        wait_for(lambda: client.revision == last + 1, "the next change")
        client._apply({"type": "config.set", "kind": "config", "key": "live.counter", "tenant": None,
                       "version": 999, "revision": client.revision + 5, "value": "bogus",
                       "item": {"value": "bogus"}, "at": 0})
        assert client.stats["gaps"] == 1 and client.stats["snapshots"] == 2
        assert client.get("live.counter") == 20 and client.revision == server_revision(server)


def test_server_down_stale_snapshot_then_resume_with_since(tmp_path, fresh_openfeature):
    home, port = tmp_path / "home", free_port()
    first = start_server(home, port=port)
    with first.client("operator") as operator:
        operator.post("/config", json={"key": "down.limit", "value": 1})
        operator.put("/config/features/down_flag", json={"enabled": True})
    viewer_token = first.tokens["viewer"]  # kept in the store across restarts
    client = ConfigClient(first.url, viewer_token, **FAST)
    provider = ConfigFeatureProvider(client, close_client=True)
    openfeature.set_provider(provider, domain="down")
    features = openfeature.get_client("down")
    events = Events(features)
    try:
        wait_for(lambda: features.get_provider_status() == ProviderStatus.READY and client.connected,
                 "READY and connected")
        assert features.get_boolean_details("down_flag", False).reason == Reason.STATIC
        seen_before = client.revision

        stop_server(first)
        wait_for(lambda: client.stale, "the client to notice the server is gone")
        assert client.state == "stale" and not client.connected
        assert client.get("down.limit") == 1 and client.is_enabled("down_flag")  # the last snapshot
        wait_for(lambda: events.count(ProviderEvent.PROVIDER_STALE) == 1, "PROVIDER_STALE")
        assert features.get_provider_status() == ProviderStatus.STALE
        cached = features.get_boolean_details("down_flag", False)
        assert (cached.value, cached.reason) == (True, Reason.CACHED)
        assert cached.flag_metadata["evaluation_reason"] == "STATIC"
        ready_before = events.count(ProviderEvent.PROVIDER_READY)

        # Changes the client cannot see: the same data home served on another port meanwhile.
        elsewhere = start_server(home)
        try:
            with elsewhere.client("operator") as operator:
                operator.post("/config", json={"key": "down.limit", "value": 2})
                operator.post("/config", json={"key": "down.limit", "value": 3, "tenant": "org:acme"})
                operator.put("/config/features/down_flag", json={"enabled": False})
        finally:
            stop_server(elsewhere)
        assert client.revision == seen_before and client.stale

        again = start_server(home, port=port)  # back on the same port and data home
        try:
            last = server_revision(again)
            wait_for(lambda: client.revision == last and client.connected, f"revision {last} after restart")
            assert client.get("down.limit") == 2 and client.get("down.limit", tenant="org:acme") == 3
            assert not client.is_enabled("down_flag") and not client.stale
            assert client.stats["snapshots"] == 1  # resumed with ?since=, no snapshot needed
            wait_for(lambda: events.count(ProviderEvent.PROVIDER_READY) > ready_before, "READY again")
            assert features.get_provider_status() == ProviderStatus.READY
            wait_for(lambda: {"down.limit", "down_flag"} <= set(events.changed()), "the replayed changes")
            fresh = features.get_boolean_details("down_flag", True)
            assert (fresh.value, fresh.reason) == (False, Reason.STATIC)
        finally:
            client.close()
            stop_server(again)
    finally:
        client.close()
        stop_server(first)


def test_events_pruned_while_disconnected_are_a_gap_repaired_by_a_snapshot(tmp_path):
    home, port = tmp_path / "home", free_port()
    first = start_server(home, port=port)
    client = ConfigClient(first.url, ADMIN_TOKEN, **FAST)
    try:
        assert client.wait_ready(20)
        wait_for(lambda: client.connected, "the WebSocket")
        stop_server(first)
        wait_for(lambda: client.stale, "stale")
        elsewhere = start_server(home)
        try:
            with elsewhere.client("admin") as admin:
                for value in range(3):
                    admin.post("/config", json={"key": "gap.value", "value": value})
                pruned = admin.post("/config/cleanup", params={"event_days": 0}).json()
                assert pruned["removed_events"] >= 2  # only the newest event survives
        finally:
            stop_server(elsewhere)
        again = start_server(home, port=port)
        try:
            last = server_revision(again)
            wait_for(lambda: client.revision == last and client.connected, f"revision {last}")
            assert client.get("gap.value") == 2
            assert client.stats["gaps"] == 1 and client.stats["snapshots"] == 2
        finally:
            stop_server(again)
    finally:
        client.close()
        stop_server(first)


def test_openfeature_reasons_metadata_and_sticky_split(server, fresh_openfeature):
    with server.client("operator") as operator:
        operator.put("/config/features/of_loop", json={"enabled": True})
        operator.put("/config/features/of_loop", json={"enabled": False, "tenant": "org:acme"})
        operator.put("/config/features/of_rollout", json={"enabled": True, "rollout_percent": 50})
        operator.put("/config/features/of_workers", json={"enabled": True, "rollout_percent": 50,
                                                          "context_key": "worker"})
        operator.post("/config", json={"key": "of.limit", "value": 5})
        operator.post("/config", json={"key": "of.limit", "value": 9, "tenant": "org:acme"})
        operator.post("/config", json={"key": "of.name", "value": "prioritymax"})
    client = ConfigClient(server.url, server.tokens["viewer"], **FAST)
    openfeature.set_provider(ConfigFeatureProvider(client, close_client=True), domain="reasons")
    features = openfeature.get_client("reasons")
    events = Events(features)
    wait_for(lambda: features.get_provider_status() == ProviderStatus.READY, "READY")
    wait_for(lambda: events.count(ProviderEvent.PROVIDER_READY), "the READY event")  # handlers run async
    acme = EvaluationContext(attributes={"tenant": "org:acme"})

    glob = features.get_boolean_details("of_loop", False)
    assert (glob.value, glob.reason) == (True, Reason.STATIC)
    assert glob.flag_metadata["chain"] == "global" and glob.flag_metadata["layer"] == "global"
    tenant = features.get_boolean_details("of_loop", True, acme)
    assert (tenant.value, tenant.reason) == (False, Reason.TARGETING_MATCH)
    assert tenant.flag_metadata["chain"] == "tenant:org:acme,global"
    assert tenant.flag_metadata["version"] == 1 and tenant.flag_metadata["tenant"] == "org:acme"
    other = features.get_boolean_details("of_loop", False, EvaluationContext(attributes={"tenant": "org:x"}))
    assert (other.value, other.reason, other.flag_metadata["layer"]) == (True, Reason.STATIC, "global")

    keys = [f"user-{i}" for i in range(200)]
    first = [features.get_boolean_details("of_rollout", False, EvaluationContext(key, {"tenant": "org:acme"}))
             for key in keys]
    assert {d.reason for d in first} == {Reason.SPLIT}
    assert 0.3 < sum(d.value for d in first) / len(first) < 0.7
    again = [features.get_boolean_value("of_rollout", False, EvaluationContext(key)) for key in keys]
    assert again == [d.value for d in first]  # sticky, and the same for every tenant without an override
    with server.client("viewer") as viewer:  # and the same as the server's answer
        for key, details in list(zip(keys, first, strict=True))[:25]:
            served = viewer.get("/config/features/of_rollout/evaluate", params={"targeting_key": key}).json()
            assert served["enabled"] == details.value
    by_worker = [EvaluationContext(attributes={"worker": f"w{i}"}) for i in range(50)]
    workers = [features.get_boolean_value("of_workers", False, context) for context in by_worker]
    assert workers == [client.is_enabled("of_workers", context={"worker": f"w{i}"}) for i in range(50)]

    no_key = features.get_boolean_details("of_rollout", True)
    assert (no_key.value, no_key.reason, no_key.error_code) == (True, Reason.DEFAULT,
                                                               ErrorCode.TARGETING_KEY_MISSING)
    missing = features.get_boolean_details("of_nothing", True)
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    bad = features.get_boolean_details("of_loop", False, EvaluationContext(attributes={"tenant": "acme"}))
    assert bad.error_code == ErrorCode.INVALID_CONTEXT

    assert features.get_integer_details("of.limit", 0, acme).value == 9
    assert features.get_integer_details("of.limit", 0, acme).reason == Reason.TARGETING_MATCH
    assert features.get_float_value("of.limit", 0.0) == 5.0
    assert features.get_string_value("of.name", "") == "prioritymax"
    assert features.get_string_details("of.limit", "x").error_code == ErrorCode.TYPE_MISMATCH

    with server.client("operator") as operator:
        operator.put("/config/features/of_loop", json={"enabled": False})
    wait_for(lambda: "of_loop" in events.changed(), "PROVIDER_CONFIGURATION_CHANGED for of_loop")
    assert features.get_boolean_value("of_loop", True) is False


def test_openfeature_error_without_a_first_snapshot_then_ready(tmp_path, fresh_openfeature):
    port = free_port()  # nothing listens here yet
    client = ConfigClient(f"http://127.0.0.1:{port}", ADMIN_TOKEN, **FAST)
    openfeature.set_provider(ConfigFeatureProvider(client, init_timeout=0.5, close_client=True),
                             domain="error")
    features = openfeature.get_client("error")
    events = Events(features)
    wait_for(lambda: features.get_provider_status() == ProviderStatus.ERROR, "ERROR")
    wait_for(lambda: events.count(ProviderEvent.PROVIDER_ERROR), "the ERROR event")  # handlers run async
    assert client.state == "error" and not client.loaded
    assert client.get("anything", default=4) == 4 and not client.is_enabled("anything")  # reads never raise
    early = features.get_boolean_details("anything", True)
    assert (early.value, early.error_code) == (True, ErrorCode.PROVIDER_NOT_READY)

    server = start_server(tmp_path / "home", port=port)
    try:
        with server.client("operator") as operator:
            operator.put("/config/features/late_flag", json={"enabled": True})
        wait_for(lambda: features.get_provider_status() == ProviderStatus.READY, "READY once it is up")
        wait_for(lambda: client.is_enabled("late_flag"), "late_flag")
        assert features.get_boolean_details("late_flag", False).value is True
    finally:
        openfeature.clear_providers()
        stop_server(server)
