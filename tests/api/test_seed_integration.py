"""The seed's own integration of the config control plane, verbatim, served by a real uvicorn: an
app module that only does ``include_router`` plus the two loop starters in a startup hook (no
lifespan of ours), so the plane has to come up lazily and the starters must be idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from prioritymax.settings import REPO_ROOT
from tests.api.conftest import ADMIN_TOKEN, free_port

pytestmark = pytest.mark.integration

SEED_APP = textwrap.dedent('''
    from fastapi import FastAPI

    from api import config
    from api.config import start_config_background_loop, start_prometheus_metrics_loop

    app = FastAPI(title="PriorityMax API")
    app.include_router(config.router)
    calls = {}


    @app.on_event("startup")
    async def start_config_loops():
        calls["first"] = [start_config_background_loop(app), start_prometheus_metrics_loop(app)]
        calls["second"] = [start_config_background_loop(app), start_prometheus_metrics_loop(app)]


    # Not the seed's: a probe so the test can see what the startup hook got back.
    @app.get("/seed/loops")
    async def loops():
        plane = app.state.control_plane
        return {**calls, "tasks": plane.tasks.running(),
                "verified": plane.last_verification is not None}
''')


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory):
    app_dir = tmp_path_factory.mktemp("seed-app")
    (app_dir / "seed_app.py").write_text(SEED_APP)
    home = tmp_path_factory.mktemp("seed-home")
    port = free_port()
    env = {**os.environ, "PRIORITYMAX_HOME": str(home),
           "PRIORITYMAX_ADMIN_TOKEN": ADMIN_TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "seed_app:app", "--app-dir", str(app_dir),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {process.stdout.read()}")
            try:
                if httpx.get(f"{url}/config/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the seed app did not answer /config/health within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_the_seed_integration_serves_health_status_and_writes(seed_server):
    for path in ("/config/health", "/config/status"):
        body = httpx.get(seed_server + path).json()
        assert set(body) == {"ok", "uptime_seconds", "config_items_cached", "ws_connections"}
        assert body["ok"] is True

    deadline = time.monotonic() + 10
    while not (loops := httpx.get(seed_server + "/seed/loops").json())["verified"]:
        assert time.monotonic() < deadline, loops
        time.sleep(0.1)
    assert loops["first"] == [True, True]
    assert loops["second"] == [False, False]  # idempotent: nothing started twice
    assert loops["tasks"] == ["audit", "metrics", "poll", "sockets", "verify"]
    assert loops["verified"] is True  # the verification loop ran its first pass

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.post(seed_server + "/config", json={"key": "seed.k", "value": 1}).status_code == 401
    written = httpx.post(seed_server + "/config", headers=admin,
                         json={"key": "autoscaler.max_workers", "value": 25, "is_secret": False,
                               "comment": "Increased max worker limit"})
    assert written.status_code == 200, written.text
    assert (written.json()["version"], written.json()["value"]) == (1, 25)
    assert httpx.get(seed_server + "/config/autoscaler.max_workers", headers=admin).json()["value"] == 25
    assert httpx.get(seed_server + "/config/status").json()["config_items_cached"] == 1
