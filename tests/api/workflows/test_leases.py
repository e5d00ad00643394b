"""Runs survive their process, on real uvicorn servers: an API is killed with SIGKILL while a run waits
in an http node and another run waits in its queue; the API started again on the same data home
reclaims them (the running one FAILED "interrupted", the queued one started), cancel answers
without a 409, the runs_active gauge comes back to 0, and ``POST /workflows/run/{id}/resume``
completes the run without re-sending the http call that had completed, while the call that was cut
off is sent again with the same Idempotency-Key.

The receiver is a loopback HTTP server: ``/slow`` holds its answer until the test opens a gate, so
"mid-run" is a state the test observes (the call arrived), not a moment it guesses."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestration.workflows.executors import idempotency_key
from tests.api.conftest import start_server, stop_server
from tests.api.workflows.support import (
    chain,
    create,
    metric,
    node,
    nodes_by_id,
    start,
    task,
    wait_for,
    wait_run,
)

pytestmark = pytest.mark.integration

LEASE_ENV = {"PRIORITYMAX_WORKFLOW_LEASE_SECONDS": "2", "PRIORITYMAX_WORKFLOW_LEASE_RENEW_SECONDS": "0.3",
             "WORKFLOW_MAINTENANCE_INTERVAL": "1", "WORKFLOW_MAX_CONCURRENT_RUNS": "1"}


class GatedReceiver:
    """Records (path, Idempotency-Key) of every POST; ``/slow`` answers only once :attr:`gate` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.gate = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.calls.append((self.path, self.headers.get("Idempotency-Key")))
                if self.path == "/slow":
                    receiver.gate.wait(120)
                with contextlib.suppress(OSError):  # the caller may have been killed meanwhile
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def keys(self, path: str) -> list[str | None]:
        return [key for called, key in list(self.calls) if called == path]

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    made = GatedReceiver()
    yield made
    made.close()


def http(node_id: str, url: str) -> dict:
    return node(node_id, "task", template={"executor": "http", "timeout_seconds": 120,
                                           "config": {"url": url, "method": "POST", "body": {}}})


def test_a_run_killed_with_its_api_is_reclaimed_and_resumed(tmp_path, receiver):
    home = tmp_path / "home"
    first = start_server(home, LEASE_ENV)
    servers = [first]
    try:
        with first.client("operator") as operator:
            slow = create(operator, chain("calls", http("notify", f"{receiver.url}/notify"),
                                          http("slow", f"{receiver.url}/slow"),
                                          http("after", f"{receiver.url}/after")))
            quick = create(operator, chain("quick", task("one", "echo")))
            interrupted = start(operator, slow)
            wait_for(lambda: receiver.keys("/slow"), timeout=60, what="the slow call to arrive")
            refused = operator.post(f"/workflows/run/{interrupted}/resume")
            assert refused.status_code == 409 and "still RUNNING" in refused.json()["detail"]
            queued = start(operator, quick)  # behind the running one: one run at a time
        first.process.kill()  # SIGKILL: no shutdown, no end events, leases left to expire
        first.process.communicate(timeout=30)

        second = start_server(home, LEASE_ENV)
        servers.append(second)
        with second.client("operator") as operator, second.client("viewer") as viewer:
            run = wait_run(operator, interrupted, timeout=60)
            assert run["status"] == "FAILED" and run["error"].startswith("interrupted"), run
            nodes = nodes_by_id(run)
            assert nodes["notify"]["status"] == "COMPLETED"
            assert nodes["slow"]["status"] == "FAILED" and nodes["slow"]["error"].startswith("interrupted")
            assert wait_run(operator, queued, timeout=120)["status"] == "COMPLETED"

            cancelled = operator.post(f"/workflows/run/{interrupted}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["cancel_requested"] is False
            wait_for(lambda: metric(viewer.get("/workflows/metrics").text,
                                    "prioritymax_workflow_runs_active") == 0, what="runs_active to be 0")

            assert viewer.post(f"/workflows/run/{interrupted}/resume").status_code == 403
            assert operator.post("/workflows/run/no-such-run/resume").status_code == 404
            receiver.gate.set()  # the receiver of /slow answers now
            resumed = operator.post(f"/workflows/run/{interrupted}/resume")
            assert resumed.status_code == 202, resumed.text
            child = resumed.json()
            assert child["run_id"] != interrupted
            assert (child["parent_run_id"], child["root_run_id"]) == (interrupted, interrupted)
            done = wait_run(operator, child["run_id"], timeout=120)
            assert done["status"] == "COMPLETED", done
            again = operator.post(f"/workflows/run/{child['run_id']}/resume")
            assert again.status_code == 409 and "COMPLETED" in again.json()["detail"]

        # notify completed before the kill: reused, never sent again. slow was cut off: sent again
        # with the key of its first call. Every key is the (root run, node) one.
        assert receiver.keys("/notify") == [idempotency_key(interrupted, "notify")]
        assert receiver.keys("/slow") == [idempotency_key(interrupted, "slow")] * 2
        assert receiver.keys("/after") == [idempotency_key(interrupted, "after")]
    finally:
        for server in servers:
            if server.process.poll() is None:
                stop_server(server)
