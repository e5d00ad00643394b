"""A real API server for the tests: uvicorn on loopback, its own data home, a token per role."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from prioritymax.settings import REPO_ROOT

ADMIN_TOKEN = "pmx_test_admin_token"


def wait_until_answers(url: str, process: subprocess.Popen, what: str, timeout: float = 90,
                       ok=lambda response: response.status_code == 200, log=lambda: "") -> None:
    """Poll ``url`` until ``ok(response)``; fail with ``log()`` if ``process`` exits first, or after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"{what} exited: {log()}"
        try:
            if ok(httpx.get(url, timeout=2)):
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what} did not answer {url} within {timeout} s: {log()}"
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    home: Path
    tokens: dict[str, str]
    process: subprocess.Popen
    env: dict[str, str]

    def client(self, role: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/config/ws/config"


def start_server(home: Path, extra_env: dict[str, str] | None = None, port: int | None = None,
                 roles: tuple[str, ...] = ("operator", "viewer")) -> Server:
    """uvicorn on loopback with ``home`` as its data home, a token made (``pmx tokens create``)
    for each of ``roles`` besides the admin's; returns once /config/health answers."""
    port = port or free_port()
    env = {**os.environ, "PRIORITYMAX_HOME": str(home), "PRIORITYMAX_ADMIN_TOKEN": ADMIN_TOKEN,
           **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    tokens = {"admin": ADMIN_TOKEN}
    for role in roles:
        made = subprocess.run([sys.executable, "-m", "pmx.cli", "tokens", "create",
                               "--role", role, "--name", f"test-{role}"], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True)
        tokens[role] = json.loads(made.stdout)["token"]
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/config/health", timeout=1.0).status_code == 200:
                return Server(url, home, tokens, process, env)
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("uvicorn did not answer /config/health within 60 s")


def stop_server(server: Server) -> str:
    server.process.terminate()
    try:
        output, _ = server.process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        output, _ = server.process.communicate()
    return output or ""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("api-home"))
    yield running
    stop_server(running)
