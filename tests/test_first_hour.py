"""A new user's first hour, for real: ``pmx up`` on a fresh data home (the pipeline on a small
budget), its replay driving the worker, then every dashboard page and JupyterLab opened in headless
Chromium. Each page gets a screenshot (``screenshots/`` in the test's folder) and must show no
exception, draw every chart with data, and say no placeholder ("None", an emoji that renders as an
empty box without an emoji font); the Autoscaler page's charts must grow while it is open (live),
with decisions made by the policy the pipeline promoted."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import httpx
import pytest
import yaml

from tests.dashboard.chromium import Browser
from tests.orchestration.conftest import SMALL_BUDGET
from tests.test_up import port_flags, running_up, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Dashboard pages: path, and the page's title (its h1: the sidebar names every page).
PAGES = [("", "PriorityMax Workbench"), ("runs", "Runs"), ("models", "Models"), ("autoscaler", "Autoscaler"),
         ("config_flags", "Config & Flags"), ("workflows", "Workflows"),
         ("rl", "RL: PPO vs the best tuned rule"), ("predictor", "Predictor: load forecast vs actual")]
#: Pages that must draw at least one chart once the pipeline has run.
CHARTED = {"runs", "models", "autoscaler", "rl", "predictor"}
#: What a page says while Streamlit is still running its script, and what each chart holds.
STATE = """(() => JSON.stringify({
  title: (document.querySelector('h1') || {}).innerText || null,
  running: !!document.querySelector('[data-testid="stStatusWidget"]'),
  exceptions: Array.from(document.querySelectorAll('[data-testid="stException"]')).map(e => e.innerText),
  charts: Array.from(document.querySelectorAll('.js-plotly-plot'))
    .map(p => (p._fullData || []).reduce((n, t) => n + (t._length || 0), 0)),
}))()"""
#: Emoji (and symbols) that need an emoji font; without one they render as empty boxes.
EMOJI = re.compile("[\u2600-\u27bf\U0001f300-\U0001faff]")
PLACEHOLDER = re.compile(r"(?<![\w`'\"])None(?![\w`'\"])")


def page_state(browser: Browser) -> dict:
    result = browser.call("Runtime.evaluate", expression=STATE, returnByValue=True)
    return json.loads(result["result"]["value"])


def opened(browser: Browser, url: str, title: str, charts: bool = False, seconds: float = 180) -> dict:
    """Navigate to a page and wait until it shows its title, its script is not running, (with
    ``charts``) it has drawn a chart, and it looks the same twice in a row a second apart (the
    status widget shows only after a moment, so "not running" alone can come before the script
    starts); the page's state then."""
    browser.call("Page.navigate", url=url)
    seen: list[dict] = []

    def ready():
        state = page_state(browser)
        calm = state["title"] == title and not state["running"] and (state["charts"] or not charts)
        before = seen[-1] if seen else None
        seen.append(state)
        if calm and state == before:
            return state
        time.sleep(0.75)
        return None

    return wait_for(f"{url} to render", ready, seconds)


@pytest.fixture
def workbench(tmp_path):
    """``pmx up`` with the test budget, once its pipeline has succeeded and the worker serves the
    policy it promoted; yields the ports, the home and the process."""
    home = tmp_path / "home"
    budget = tmp_path / "budget.yaml"
    budget.write_text(yaml.safe_dump({"resources": {"budget": {"config": SMALL_BUDGET}}}))
    ports, flags = port_flags()
    with running_up(home, "--pipeline-config", str(budget), *flags) as (process, output, children):
        ended = wait_for("the pipeline to end", lambda: re.search(
            r"full_pipeline_job run \S+: (SUCCESS|FAILURE|CANCELED)", output.read_text()), 900)
        assert ended.group(1) == "SUCCESS", output.read_text()[-3000:]
        worker = f"http://127.0.0.1:{ports['autoscaler']}"
        wait_for("the worker to serve the promoted policy", lambda: any(
            m["name"] == "rl_agent" and m["version"] for m in httpx.get(f"{worker}/autoscaler/health",
                                                                           timeout=10).json()["models"]), 120)
        timeline = home / "replay" / "timeline.jsonl"
        wait_for("a replayed step decided by the policy", lambda: any(
            json.loads(line)["mode"] == "policy" for line in timeline.read_text().splitlines()[-20:]), 120)
        yield ports, home, process, output
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0, output.read_text()[-3000:]
    assert "SIGKILL" not in output.read_text()


def test_every_page_and_jupyterlab_render_with_data(workbench, tmp_path):
    ports, home, _, _ = workbench
    shots = tmp_path / "screenshots"
    shots.mkdir()
    dashboard = f"http://127.0.0.1:{ports['dashboard']}"
    browser = Browser()
    try:
        for path, title in PAGES:
            state = opened(browser, f"{dashboard}/{path}", title, charts=path in CHARTED)
            text = browser.text()
            name = path or "overview"
            browser.screenshot(shots / f"{name}.png")
            assert not state["exceptions"], (name, state["exceptions"])
            assert all(points > 0 for points in state["charts"]), (name, state["charts"])
            assert not EMOJI.findall(text), (name, EMOJI.findall(text))
            placeholder = PLACEHOLDER.search(text)
            assert placeholder is None, (name, text[max(0, placeholder.start() - 200):][:400])

        # Live: the Autoscaler page's load chart gains points while it stays open.
        first = opened(browser, f"{dashboard}/autoscaler", "Autoscaler", charts=True)["charts"][0]
        wait_for("the live chart to grow", lambda: (page_state(browser)["charts"] or [0])[0] > first, 60)
        assert "Decided by" in browser.text()

        token = (home / "secrets" / "jupyter.token").read_text().strip()
        browser.open(f"http://127.0.0.1:{ports['jupyter']}/lab?token={token}",
                     ["01_predictor.ipynb", "02_rl_autoscaler.ipynb"], timeout=120)
        browser.screenshot(shots / "jupyterlab.png")
    finally:
        browser.close()
    assert len(list(shots.glob("*.png"))) == len(PAGES) + 1
