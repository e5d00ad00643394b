"""Revocation that bites: a token revoked through the admin API is refused on the very next
request to that replica and its open WebSocket is closed with 4401; one revoked elsewhere (the
``pmx tokens revoke`` CLI, or another replica) is refused once this replica's half-second token
cache lapses, and its WebSocket closed at the next check. Two real uvicorns on one SQLite home."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.api.conftest import REPO_ROOT, start_server, stop_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    home = tmp_path_factory.mktemp("revocation-home")
    first = start_server(home)
    second = start_server(home)
    yield first, second
    stop_server(second)
    stop_server(first)


def new_token(server, name: str) -> str:
    made = subprocess.run([sys.executable, "-m", "pmx.cli", "tokens", "create", "--role", "operator",
                           "--name", name], env=server.env, cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True)
    return json.loads(made.stdout)["token"]


def status_of(server, token: str) -> int:
    answer = httpx.get(f"{server.url}/config", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return answer.status_code


def refused_within(server, token: str, seconds: float) -> bool:
    """Whether requests with ``token`` start being refused (401) before ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if status_of(server, token) == 401:
            return True
        time.sleep(0.05)
    return False


def close_code(socket) -> int:
    """The close code the server sends next (messages before it are skipped)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            socket.recv(timeout=30)
    return closed.value.rcvd.code


def test_revoked_through_the_api_refused_at_once_here_and_soon_on_the_other_replica(replicas):
    first, second = replicas
    token = new_token(first, "revoke-me")
    assert status_of(first, token) == status_of(second, token) == 200  # both have it cached now
    with connect(f"{first.ws_url}?token={token}") as here, connect(f"{second.ws_url}?token={token}") as there:
        assert '"hello"' in here.recv(timeout=10) and '"hello"' in there.recv(timeout=10)
        with first.client("admin") as admin:
            revoked = admin.delete("/admin/tokens/revoke-me")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json() == {"name": "revoke-me", "revoked": 1, "websockets_closed": 1}
        assert status_of(first, token) == 401  # the next request, no waiting
        assert close_code(here) == 4401
        assert refused_within(second, token, seconds=30)
        assert close_code(there) == 4401
    with first.client("admin") as admin:
        assert admin.delete("/admin/tokens/revoke-me").status_code == 200  # already revoked: still 1 row
        missing = admin.delete("/admin/tokens/never-made")
    assert missing.status_code == 404 and "never-made" in missing.json()["detail"]


def test_revoked_by_the_cli_is_refused_by_a_running_replica(replicas):
    first, _ = replicas
    token = new_token(first, "cli-revoked")
    assert status_of(first, token) == 200
    with connect(f"{first.ws_url}?token={token}") as socket:
        assert '"hello"' in socket.recv(timeout=10)
        subprocess.run([sys.executable, "-m", "pmx.cli", "tokens", "revoke", "cli-revoked"],
                       env=first.env, cwd=REPO_ROOT, check=True, capture_output=True)
        assert refused_within(first, token, seconds=30)
        assert close_code(socket) == 4401
