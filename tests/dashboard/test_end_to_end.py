"""The dashboard for real: ``streamlit run dashboard/app.py`` and the API on loopback, the Models
and Runs pages opened in headless Chromium, screenshots saved, the expected text rendered."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prioritymax.settings import REPO_ROOT
from tests.api.conftest import free_port, wait_until_answers
from tests.dashboard.chromium import Browser
from tests.dashboard.conftest import CLOSED

pytestmark = pytest.mark.integration


@pytest.fixture
def dashboard(populated, tmp_path):
    port = free_port()
    env = {**populated.api.env, "PRIORITYMAX_API_URL": populated.api.url,
           "PRIORITYMAX_API_TOKEN": populated.api.tokens["operator"],
           "PRIORITYMAX_AUTOSCALER_URL": populated.worker_url, "PRIORITYMAX_DAGSTER_URL": CLOSED}
    log = (tmp_path / "streamlit.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    browser = None
    try:  # stopped below even when streamlit never answers
        wait_until_answers(f"{url}/_stcore/health", process, "streamlit", 60,
                           log=(tmp_path / "streamlit.log").read_text)
        browser = Browser()
        yield url, browser
    finally:
        if browser is not None:
            browser.close()
        process.terminate()
        process.wait(20)
        log.close()


def test_models_and_runs_pages_render_in_chromium(dashboard, tmp_path):
    url, browser = dashboard
    models = browser.open(f"{url}/models",
                          ["Models", "champion v1", "Roll back predictor", "Roll back rl_agent",
                           "Promotion timeline"])
    assert "predictor" in models and "rl_agent" in models
    shot = browser.screenshot(tmp_path / "models.png")
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank skeleton

    # The chosen runs (the RL experiment's, by default) and the default metric's curve (its axis
    # title) render after the page's headings: wait for them too, not only for the headings
    # (asserting on the first text seen failed on a busy machine).
    runs = browser.open(f"{url}/runs", ["MLflow runs", "Metric curves", "Compare parameters", "Dagster runs",
                                        "ppo-4envs", "charts/eval_reward"])
    assert "ppo-4envs" in runs and "charts/eval_reward" in runs
    assert browser.screenshot(tmp_path / "runs.png").stat().st_size > 20_000
