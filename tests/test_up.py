"""``pmx up`` for real: it starts the API, the Dagster webserver and daemon, says where they are,
and stops every child on Ctrl-C; a taken port stops it before anything starts."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pmx.processes import group_alive
from prioritymax.settings import REPO_ROOT
from tests.api.conftest import free_port
from tests.processes import processes_on

pytestmark = pytest.mark.integration

#: How long ``pmx up`` may take to say everything is up (its own start timeout is 300 s).
START_SECONDS = 300


def pmx_up(home: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """``pmx up`` in its own process group, as a shell starts a foreground job; output to a file."""
    env = {**os.environ, "PRIORITYMAX_HOME": str(home)}
    for name in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "PRIORITYMAX_ADMIN_TOKEN"):
        env.pop(name, None)
    home.mkdir(parents=True, exist_ok=True)
    output = home.parent / f"{home.name}-up.out"
    with output.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "pmx.cli", "up", *args], cwd=REPO_ROOT,
                                   env=env, stdout=sink, stderr=subprocess.STDOUT, process_group=0)
    return process, output


@contextlib.contextmanager
def running_up(home: Path, *args: str) -> Iterator[tuple[subprocess.Popen, Path, dict[str, int]]]:
    """``pmx up`` until it says everything "is up": yields the process, its output file and the
    children it started (name -> pid); whatever is still running at the end is killed."""
    process, output = pmx_up(home, *args)
    try:
        deadline = time.monotonic() + START_SECONDS
        while "is up" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.5)
        children = {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)",
                                                                output.read_text())}
        yield process, output, children
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def port_flags(**given: int) -> tuple[dict[str, int], list[str]]:
    """A free port for each service of ``pmx up`` (``given`` ones kept), and their flags."""
    names = ("api", "autoscaler", "dashboard", "jupyter", "code-server", "dagster")
    ports = {name: given.get(name.replace("-", "_")) or free_port() for name in names}
    return ports, [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]


def wait_for(what: str, check, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.25)
    return found


def dagster_locations(port: int) -> list[dict]:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10).json()
    return answer["data"]["workspaceOrError"]["locationEntries"]


def test_up_serves_every_face_and_ctrl_c_stops_every_child(tmp_path):
    home = tmp_path / "up-home"
    ports, flags = port_flags()
    with running_up(home, "--no-pipeline", *flags) as (process, output, children):
        text = output.read_text()
        assert f"http://127.0.0.1:{ports['api']}/docs" in text
        assert f"http://127.0.0.1:{ports['dagster']}" in text
        assert str(home / "secrets" / "admin.token") in text
        assert f"http://127.0.0.1:{ports['autoscaler']}/autoscaler/health" in text
        assert f"http://127.0.0.1:{ports['dashboard']}" in text
        assert f"grpc://127.0.0.1:{ports['code-server']}" in text
        # Each title is followed by spaces, whatever its length (a long one ran into its URL).
        assert re.search(r"Autoscaler worker +http://", text) and re.search(r"JupyterLab +http://", text)
        assert set(children) == {"api", "autoscaler", "replay", "dashboard", "jupyter", "code-server",
                                 "dagster-webserver", "dagster-daemon"}

        assert httpx.get(f"http://127.0.0.1:{ports['api']}/config/health", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['dagster']}/server_info", timeout=10).status_code == 200
        worker = httpx.get(f"http://127.0.0.1:{ports['autoscaler']}/autoscaler/health", timeout=10).json()
        assert worker["control_plane"]["url"] == f"http://127.0.0.1:{ports['api']}"
        assert httpx.get(f"http://127.0.0.1:{ports['dashboard']}/_stcore/health", timeout=10).text == "ok"
        assert (home / "secrets" / "admin.token").exists()
        assert (home / "dagster" / "dagster.yaml").exists()

        # JupyterLab, rooted at notebooks/, behind the token printed in the link.
        token = (home / "secrets" / "jupyter.token").read_text().strip()
        assert f"http://127.0.0.1:{ports['jupyter']}/lab?token={token}" in text
        contents = f"http://127.0.0.1:{ports['jupyter']}/api/contents"
        assert httpx.get(contents, timeout=10).status_code == 403
        listed = httpx.get(contents, params={"token": token}, timeout=10).json()
        assert any(entry["name"].endswith(".ipynb") for entry in listed["content"])

        # The UI and the daemon load the one code server pmx up runs (no code server of their own).
        workspace = (home / "dagster" / "workspace.yaml").read_text()
        assert f"port: {ports['code-server']}" in workspace
        assert dagster_locations(ports["dagster"]) == [{"name": "orchestration.definitions",
                                                        "loadStatus": "LOADED"}]

        # The replay drives the worker: its timeline grows, and the worker logged its decisions.
        timeline = home / "replay" / "timeline.jsonl"
        wait_for("two replayed steps",
                 lambda: timeline.exists() and len(timeline.read_text().splitlines()) >= 2)
        worker_url = f"http://127.0.0.1:{ports['autoscaler']}"
        decisions = httpx.get(f"{worker_url}/autoscaler/decisions", timeout=10).json()
        assert {decision["tenant"] for decision in decisions} == {"replay"}

        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to a foreground job
        assert process.wait(timeout=60) == 0, output.read_text()
    text = output.read_text()
    assert ("stopped: api, autoscaler, replay, dashboard, jupyter, code-server, dagster-webserver, "
            "dagster-daemon") in text
    assert "SIGKILL" not in text
    assert not [name for name, pid in children.items() if group_alive(pid)], text
    assert processes_on(home) == []


def test_up_refuses_a_taken_port_and_starts_nothing(tmp_path):
    home = tmp_path / "up-home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        dagster_port = taken.getsockname()[1]
        ports, flags = port_flags(dagster=dagster_port)
        process, output = pmx_up(home, *flags)
        assert process.wait(timeout=120) == 1
    text = output.read_text()
    assert f"port {dagster_port} on 127.0.0.1 (Dagster UI) is already in use" in text
    assert "--dagster-port" in text
    assert "started" not in text
    assert processes_on(home) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", ports["api"])) != 0


def test_up_names_a_service_that_dies_and_exits_1(tmp_path):
    home = tmp_path / "up-home"
    _, flags = port_flags()
    with running_up(home, "--no-dagster", "--no-jupyter", "--no-replay",
                    *flags) as (process, output, children):
        assert list(children) == ["api", "autoscaler", "dashboard"] and "Dagster" not in output.read_text()
        os.killpg(children["api"], signal.SIGKILL)
        assert process.wait(timeout=60) == 1, output.read_text()
    assert "api exited on its own (exit status -9)" in output.read_text()
    assert processes_on(home) == []
