"""The Autoscaler page's champion-vs-challenger section, on a real worker (``pmx autoscaler``) that
holds the registry's challenger in the shadow and has decided on a few readings."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from prioritymax.settings import REPO_ROOT, get_settings
from tests.api.autoscaler.support import READING, register_policies
from tests.api.conftest import free_port, wait_until_answers
from tests.dashboard.conftest import _fresh_caches, open_page, texts
from tests.dashboard.test_live_pages import charts, frame_with

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shadowing_worker(tmp_path_factory):
    """A worker serving rl_agent v1 with v2, the registry's challenger, in the shadow; four
    decisions made, each scored by the challenger."""
    from ml import registry

    work = tmp_path_factory.mktemp("shadow-page")
    versions = register_policies(work / "home", work)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIORITYMAX_HOME", str(versions.home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # one left by another test's MLflow
        get_settings.cache_clear()
        registry.set_challenger("rl_agent", versions.good[1])
    get_settings.cache_clear()
    port = free_port()
    env = {**os.environ, "PRIORITYMAX_HOME": str(versions.home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PRIORITYMAX_SHADOW_REFRESH_SECONDS", None)
    log = work / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pmx.cli", "autoscaler", "--port", str(port), "--no-follow",
             "--name", "shadow-page-worker", "--log-level", "info"],
            env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        return "\n".join(log.read_text(errors="replace").splitlines()[-30:])

    try:
        wait_until_answers(f"{url}/autoscaler/health", worker, "the worker", timeout=120, log=tail,
                           ok=lambda response: (response.json().get("challenger") or {}).get("version")
                           == versions.good[1])
        for workers in (4, 8, 12, 16):
            httpx.post(f"{url}/autoscaler/decide", json={**READING, "active_workers": workers},
                       timeout=10).raise_for_status()
        wait_until_answers(f"{url}/autoscaler/decisions", worker, "the shadow decisions", log=tail,
                           ok=lambda response: all(d["shadow"] for d in response.json()))
        yield url, versions
    finally:
        worker.terminate()
        worker.wait(20)


def test_the_page_sets_the_challenger_beside_the_champion(shadowing_worker, data_home, monkeypatch):
    url, versions = shadowing_worker
    monkeypatch.setenv("PRIORITYMAX_AUTOSCALER_URL", url)
    _fresh_caches()
    try:
        page = open_page("autoscaler")
    finally:
        _fresh_caches()
    shown = texts(page)
    assert "Champion vs challenger" in shown
    assert f"Challenger rl_agent v{versions.good[1]}" in shown and "Shadow decisions 4" in shown
    decisions = frame_with(page, "target_workers", "shadow_target", "shadow_agreed")
    assert len(decisions) == 4 and decisions["shadow_target"].notna().all()
    assert set(decisions["shadow_version"]) == {versions.good[1]}
    agreed = int((decisions["shadow_target"] == decisions["target_workers"]).sum())
    assert f"Agreement {agreed / 4:.0%}" in shown
    sides = {trace["name"].split(",")[0] for trace in charts(page)[1]["data"]}
    assert sides == {"served (champion)", f"challenger {versions.good[1]}"}
