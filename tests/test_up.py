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

from pmx.up import group_alive
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


def test_up_serves_the_api_and_dagster_and_ctrl_c_stops_every_child(tmp_path):
    home = tmp_path / "up-home"
    api_port, dagster_port, autoscaler_port, dashboard_port = (free_port() for _ in range(4))
    with running_up(home, "--no-pipeline", "--api-port", str(api_port), "--dagster-port", str(dagster_port),
                    "--autoscaler-port", str(autoscaler_port),
                    "--dashboard-port", str(dashboard_port)) as (process, output, children):
        text = output.read_text()
        assert f"http://127.0.0.1:{api_port}/docs" in text
        assert f"http://127.0.0.1:{dagster_port}" in text
        assert str(home / "secrets" / "admin.token") in text
        assert f"http://127.0.0.1:{autoscaler_port}/autoscaler/health" in text
        assert f"http://127.0.0.1:{dashboard_port}" in text
        assert set(children) == {"api", "autoscaler", "dashboard", "dagster-webserver", "dagster-daemon"}

        assert httpx.get(f"http://127.0.0.1:{api_port}/config/health", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{dagster_port}/server_info", timeout=10).status_code == 200
        worker = httpx.get(f"http://127.0.0.1:{autoscaler_port}/autoscaler/health", timeout=10).json()
        assert worker["control_plane"]["url"] == f"http://127.0.0.1:{api_port}"
        assert httpx.get(f"http://127.0.0.1:{dashboard_port}/_stcore/health", timeout=10).text == "ok"
        assert (home / "secrets" / "admin.token").exists()
        assert (home / "dagster" / "dagster.yaml").exists()

        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to a foreground job
        assert process.wait(timeout=60) == 0, output.read_text()
    text = output.read_text()
    assert "stopped: api, autoscaler, dashboard, dagster-webserver, dagster-daemon" in text
    assert not [name for name, pid in children.items() if group_alive(pid)], text
    assert processes_on(home) == []


def test_up_refuses_a_taken_port_and_starts_nothing(tmp_path):
    home = tmp_path / "up-home"
    api_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        dagster_port = taken.getsockname()[1]
        process, output = pmx_up(home, "--api-port", str(api_port), "--dagster-port", str(dagster_port),
                                 "--autoscaler-port", str(free_port()), "--dashboard-port", str(free_port()))
        assert process.wait(timeout=120) == 1
    text = output.read_text()
    assert f"port {dagster_port} on 127.0.0.1 (Dagster UI) is already in use" in text
    assert "--dagster-port" in text
    assert "started" not in text
    assert processes_on(home) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", api_port)) != 0


def test_up_names_a_service_that_dies_and_exits_1(tmp_path):
    home = tmp_path / "up-home"
    with running_up(home, "--no-dagster", "--api-port", str(free_port()),
                    "--autoscaler-port", str(free_port()),
                    "--dashboard-port", str(free_port())) as (process, output, children):
        assert list(children) == ["api", "autoscaler", "dashboard"] and "Dagster" not in output.read_text()
        os.killpg(children["api"], signal.SIGKILL)
        assert process.wait(timeout=60) == 1, output.read_text()
    assert "api exited on its own (exit status -9)" in output.read_text()
    assert processes_on(home) == []
