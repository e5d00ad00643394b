"""Several API replicas on one PostgreSQL, with Redis pub/sub between them - real servers.

(a) The config API's own checks (tests/api/test_config_api.py) run again here, against a server
    on PostgreSQL: this module's ``server`` fixture replaces the SQLite one for them.
(b) Two uvicorn replicas on one database with REDIS_URL: a write on A reaches B's WebSocket
    subscribers in milliseconds (not at B's 1 s poll), and a burst of concurrent writes to both
    replicas reaches every subscriber of both as the identical, gapless sequence of revisions.
(c) With Redis stopped, writes still succeed and B still gets them (its poll); when Redis comes
    back, both replicas subscribe again by themselves.

PostgreSQL and redis-server must be installed (``.ci/run`` does it); missing, the tests fail.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from cryptography.fernet import Fernet
from websockets.sync.client import connect

from api.config.fanout import CHANNEL
from tests.api.conftest import Server, start_server, stop_server
from tests.api.services import postgres_server, redis_server

# The config API's checks, collected again in this module, where ``server`` is on PostgreSQL.
from tests.api.test_config_api import (  # noqa: F401
    test_a_secret_never_appears_in_plaintext,
    test_bad_input_is_a_clear_4xx_and_writes_nothing,
    test_flags_per_tenant_and_sticky_rollout,
    test_if_match_tenants_and_resolution,
    test_live_push_in_revision_order_and_resume_with_since,
    test_seed_examples_health_and_status,
    test_unknown_keys_and_versions_are_404,
)

pytestmark = pytest.mark.integration



def pokes_seen(server: Server) -> float:
    """How many Redis pokes made this replica catch up (its fan-out metric): polling does not
    count, so a rise proves the change came over Redis."""
    with server.client("viewer") as viewer:
        text = viewer.get("/config/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("prioritymax_config_fanout_pokes_total"))


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as running:
        yield running


@pytest.fixture(scope="module")
def redis_service():
    with redis_server() as running:
        yield running


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """One API server on PostgreSQL (overrides conftest's SQLite one for the imported checks)."""
    running = start_server(tmp_path_factory.mktemp("pg-home"),
                           {"PRIORITYMAX_DB_URL": postgres.create_database("single")})
    yield running
    output = stop_server(running)
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def replicas(postgres, redis_service, tmp_path_factory):
    """Replicas A and B: one database, one Redis, one Fernet key (a secret written by one must
    open on the other), each its own data home (audit log, tokens file)."""
    env = {"PRIORITYMAX_DB_URL": postgres.create_database("replicas"), "REDIS_URL": redis_service.url,
           "FERNET_KEY": Fernet.generate_key().decode()}
    a = start_server(tmp_path_factory.mktemp("replica-a"), env)
    try:
        b = start_server(tmp_path_factory.mktemp("replica-b"), env)
    except BaseException:
        stop_server(a)
        raise
    wait_for_subscribers(redis_service.url, 2)
    yield a, b
    outputs = [stop_server(a), stop_server(b)]
    for output in outputs:
        assert "Traceback" not in output, output


def wait_for_subscribers(url: str, count: int, timeout: float = 30, channel: str = CHANNEL) -> None:
    """Until ``count`` replicas listen on ``channel`` (each subscribes once it has started)."""
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(url, socket_timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):  # Redis may still be starting
                if dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) >= count:
                    return
            time.sleep(0.05)
    raise AssertionError(f"fewer than {count} replicas subscribed to {channel} within {timeout} s")


class Listener:
    """A WebSocket subscriber whose messages a thread collects, so a burst never waits on us."""

    def __init__(self, server: Server, since: int | None = None) -> None:
        query = f"?token={server.tokens['viewer']}" + (f"&since={since}" if since is not None else "")
        self._stack = contextlib.ExitStack()
        self.socket = self._stack.enter_context(connect(server.ws_url + query, max_queue=None))
        self.hello = json.loads(self.socket.recv(timeout=10))
        assert self.hello["type"] == "hello"
        self.messages: list[dict] = []
        self.arrived = threading.Condition()
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        try:
            for raw in self.socket:
                with self.arrived:
                    self.messages.append(json.loads(raw))
                    self.arrived.notify_all()
        except Exception:  # closed by close(); anything else shows up as missing messages
            pass

    def wait_for(self, count: int, timeout: float = 15) -> list[dict]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self._stack.close()
        self.thread.join(timeout=10)


def revision_of(server: Server) -> int:
    with server.client("viewer") as viewer:
        return viewer.get("/config/snapshot").json()["revision"]


def test_a_write_on_one_replica_reaches_the_other_in_milliseconds(replicas):
    a, b = replicas
    on_b = Listener(b)
    pokes_before = pokes_seen(b)
    try:
        with a.client("operator") as operator:
            for value in range(8):
                response = operator.post("/config", json={"key": "fanout.latency", "value": value})
                assert response.status_code == 200, response.text
                message = on_b.wait_for(value + 1, timeout=10)[value]
                assert (message["key"], message["value"]) == ("fanout.latency", value)
    finally:
        on_b.close()
    # B's 1 s poll may take one now and then; Redis must have delivered some of them.
    assert pokes_seen(b) > pokes_before
    with b.client("viewer") as viewer:
        assert viewer.get("/config/fanout.latency").json()["value"] == 7


def test_a_burst_on_both_replicas_reaches_every_subscriber_in_the_same_order(replicas):
    a, b = replicas
    since = revision_of(a)
    listeners = [Listener(server, since) for server in (a, a, b, b)]
    writers, writes_each = 6, 12

    def write(writer: int) -> list[int]:
        """Half the writes to a key every writer shares, half to the writer's own; shared-key
        versions returned show whether writers on both replicas were serialized."""
        server = (a, b)[writer % 2]
        shared_versions = []
        with server.client("operator") as operator:
            for n in range(writes_each):
                if n % 2:
                    response = operator.post("/config", json={"key": "burst.shared", "value": [writer, n]})
                    shared_versions.append(response.json()["version"])
                elif n % 4 == 0:
                    response = operator.put(f"/config/features/burst_flag_{writer}",
                                            json={"enabled": n % 8 == 0})
                else:
                    response = operator.post("/config", json={"key": f"burst.w{writer}", "value": n})
                assert response.status_code == 200, response.text
        return shared_versions

    try:
        with ThreadPoolExecutor(writers) as pool:
            shared = [v for versions in pool.map(write, range(writers)) for v in versions]
        total = writers * writes_each
        sequences = [listener.wait_for(total) for listener in listeners]
    finally:
        for listener in listeners:
            listener.close()
    expected = list(range(since + 1, since + total + 1))
    for sequence in sequences:
        assert [m["revision"] for m in sequence] == expected  # in order, no gap, no duplicate
    as_seen = [[(m["revision"], m["key"], m["version"], m["value"]) for m in s] for s in sequences]
    assert all(seen == as_seen[0] for seen in as_seen)
    assert sorted(shared) == list(range(1, len(shared) + 1))  # each version written once
    shared_in_order = [m["version"] for m in sequences[0] if m["key"] == "burst.shared"]
    assert shared_in_order == sorted(shared_in_order)
    last = sequences[0][-1]
    for server in (a, b):
        deadline = time.monotonic() + 5
        while revision_of(server) < last["revision"] and time.monotonic() < deadline:
            time.sleep(0.05)
        with server.client("viewer") as viewer:
            assert viewer.get("/config/snapshot").json()["revision"] == last["revision"]
            assert viewer.get("/config/burst.shared").json()["version"] == len(shared)


def test_secrets_written_on_one_replica_are_masked_and_usable_on_the_other(replicas):
    a, b = replicas
    with a.client("admin") as on_a, b.client("admin") as on_b:
        assert on_a.post("/config/secrets/replica_secret", json={"secret_value": "t0p"}).status_code == 200
        deadline = time.monotonic() + 5
        while on_b.get("/config/replica_secret").status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert on_b.get("/config/replica_secret").json()["value"] == "********"
        backup = on_b.get("/config/backup").json()
        token = next(i["value"] for i in backup["items"] if i["key"] == "replica_secret")
        assert "t0p" not in json.dumps(backup) and token.startswith("gAAAA")


def test_without_redis_writes_succeed_and_polling_delivers(replicas, redis_service):
    a, b = replicas
    on_b = Listener(b)
    redis_service.stop()
    try:
        with a.client("operator") as operator:
            for value in range(4):
                response = operator.post("/config", json={"key": "fanout.down", "value": value})
                assert response.status_code == 200, response.text
        received = on_b.wait_for(4, timeout=10)
        assert [(m["key"], m["value"]) for m in received] == [("fanout.down", v) for v in range(4)]
    finally:
        redis_service.start()
    try:
        wait_for_subscribers(redis_service.url, 2)  # both replicas came back by themselves
        pokes_before = pokes_seen(b)
        with a.client("operator") as operator:
            for value in range(3):
                operator.post("/config", json={"key": "fanout.back", "value": value})
                assert on_b.wait_for(5 + value, timeout=10)[-1]["value"] == value
        assert pokes_seen(b) > pokes_before  # over Redis again, not only by polling
    finally:
        on_b.close()
