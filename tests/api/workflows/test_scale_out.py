"""Two API replicas on one PostgreSQL with Redis between them - real servers: a workflow run on
replica A reaches the WebSocket subscribers of replica B, in order, over the Redis poke (B's fan-out
metric rises: the 1 s poll alone would not count), and B serves the run's record and replay."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from websockets.sync.client import connect

from api.workflows.plane import CHANNEL
from tests.api.conftest import Server, start_server, stop_server
from tests.api.services import postgres_server, redis_server
from tests.api.test_scale_out import wait_for_subscribers
from tests.api.workflows.support import chain, create, start, task, wait_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    with postgres_server() as postgres, redis_server() as redis_service:
        env = {"PRIORITYMAX_DB_URL": postgres.create_database("workflow_replicas"),
               "REDIS_URL": redis_service.url, "FERNET_KEY": Fernet.generate_key().decode()}
        a = start_server(tmp_path_factory.mktemp("wf-replica-a"), env)
        try:
            b = start_server(tmp_path_factory.mktemp("wf-replica-b"), env)
        except BaseException:
            stop_server(a)
            raise
        try:
            wait_for_subscribers(redis_service.url, 2, channel=CHANNEL)
            yield a, b
        finally:
            outputs = [stop_server(a), stop_server(b)]
        for output in outputs:
            assert "Traceback" not in output, output


def pokes_seen(server: Server) -> float:
    with server.client("viewer") as viewer:
        text = viewer.get("/workflows/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("prioritymax_workflow_fanout_pokes_total"))


def test_a_run_on_one_replica_streams_to_the_other_replicas_subscribers(replicas):
    a, b = replicas
    url = b.url.replace("http://", "ws://") + f"/workflows/ws/workflows?token={b.tokens['viewer']}"
    with a.client("operator") as on_a, b.client("viewer") as on_b, connect(url) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "hello"
        before = pokes_seen(b)
        workflow_id = create(on_a, chain("replicated", task("one", "echo"), task("two", "echo")))
        run_id = start(on_a, workflow_id, {"x": 1})
        events = []
        while not events or events[-1]["type"] != "run_completed":
            event = json.loads(socket.recv(timeout=30))
            if event.get("run_id") == run_id:
                events.append(event)
        expected = ["run_started", *["node_start", "node_end"] * 4, "run_completed"]
        assert [e["type"] for e in events] == expected
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        assert pokes_seen(b) > before  # it came over Redis, not only at B's poll
        assert wait_run(on_b, run_id)["status"] == "COMPLETED"
        replay = on_b.get(f"/workflows/trace/replay/{run_id}").json()
        assert [e["seq"] for e in replay["events"]] == [e["seq"] for e in events]
