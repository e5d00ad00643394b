"""The seed's "Quick Test via cURL" of the workflows API, run with curl exactly as written (no
token), against a server that gives token-less requests the operator role
(PRIORITYMAX_ANONYMOUS_ROLE=operator); the example's payment URL points at a local server. Without
that setting the same commands get 401 (tests/api/workflows/test_roles.py)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from websockets.sync.client import connect

from prioritymax.settings import REPO_ROOT
from tests.api.conftest import start_server, stop_server
from tests.api.workflows.support import Receiver, wait_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("seed-curl"), {"PRIORITYMAX_ANONYMOUS_ROLE": "operator"})
    yield server
    output = stop_server(server)
    assert "Traceback" not in output, output


def curl(*args: str, cwd) -> dict:
    curl_bin = shutil.which("curl")
    assert curl_bin, "curl is needed (.ci/run installs it)"
    done = subprocess.run([curl_bin, "-sS", "--fail-with-body", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_the_seed_curl_quick_test_as_written(open_server, tmp_path):
    payment = Receiver()
    try:
        spec = json.loads((REPO_ROOT / "examples" / "order_workflow.json").read_text())
        spec["nodes"][2]["template"]["config"]["url"] = f"{payment.url}/api/pay"
        (tmp_path / "examples").mkdir()
        (tmp_path / "examples" / "order_workflow.json").write_text(json.dumps(spec))
        base = open_server.url.replace("127.0.0.1", "localhost")
        ws_url = base.replace("http://", "ws://") + "/workflows/ws/workflows"
        with connect(ws_url) as events:  # 3. Stream events (wscat -c ws://localhost:8000/workflows/ws/workflows)
            assert json.loads(events.recv(timeout=10))["type"] == "hello"
            # 1. Create workflow
            created = curl("-X", "POST", f"{base}/workflows/", "-H", "Content-Type: application/json",
                           "-d", "@examples/order_workflow.json", cwd=tmp_path)
            # 2. Start a run
            body = '{"workflow_id":"wf_xxx","input_variables":{"order_id":123}}'.replace(
                "wf_xxx", created["workflow_id"])
            run = curl("-X", "POST", f"{base}/workflows/run/start", "-H", "Content-Type: application/json",
                       "-d", body, cwd=tmp_path)
            seen = []
            while not seen or seen[-1] != "run_completed":
                event = json.loads(events.recv(timeout=30))
                if event.get("run_id") == run["run_id"]:
                    seen.append(event["type"])
        assert seen[0] == "run_started" and seen.count("node_end") == 4
        with open_server.client(None) as anonymous:
            finished = wait_run(anonymous, run["run_id"])
        assert finished["status"] == "COMPLETED" and finished["actor"] == "anonymous"
        assert finished["results"]["verify"] == {"verified": True, "order_id": 123}
        assert payment.received("/api/pay")[0]["body"]["order_id"] == 123
        with open_server.client(None) as anonymous:  # never more than operator without a token
            assert anonymous.post("/workflows/admin/cleanup").status_code == 401
    finally:
        payment.close()
