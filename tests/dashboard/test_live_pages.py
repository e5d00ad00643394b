"""Autoscaler, Config & Flags and Workflows pages: empty (every service down) and populated (the
API, its config items, flags and workflow run, and a worker that made decisions); and the config
page's writes, made through its widgets, reaching the API with the dashboard token's name."""

from __future__ import annotations

import base64
import json
import re
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import frame_with, open_page, texts

pytestmark = pytest.mark.integration

OPERATOR = "test-operator"  # the name of the fixture's operator token, the dashboard's token


def charts(page: AppTest) -> list[dict]:
    """The page's plotly figures, as dicts."""
    return [json.loads(element.proto.spec) for element in page.get("plotly_chart")]


# ------------------------------------------------------------------------------- empty home
def test_config_page_on_an_empty_home_says_the_api_is_down(on_empty):
    page = open_page("config_flags")
    shown = texts(page)
    assert "API is unavailable" in shown and "does not answer" in shown
    assert "No change recorded in the audit log yet." in shown
    assert not page.tabs  # nothing to edit without the API


def test_workflows_page_on_an_empty_home_says_the_api_is_down(on_empty):
    page = open_page("workflows")
    assert "API is unavailable" in texts(page)
    assert not page.get("plotly_chart")


def test_autoscaler_page_on_an_empty_home_says_the_worker_is_down(on_empty):
    page = open_page("autoscaler")
    shown = texts(page)
    assert "Autoscaler worker is unavailable" in shown and "does not answer" in shown
    assert frame_with(page, "url", "up")["up"].tolist() == ["down"]
    assert not page.get("plotly_chart")


# --------------------------------------------------------------------------- populated home
def test_config_page_lists_items_versions_flags_and_the_audit(on_populated):
    page = open_page("config_flags")
    shown = texts(page)
    items = frame_with(page, "key", "tenant", "value", "version")
    row = items[items["key"] == "autoscaler.max_workers"].iloc[0]
    assert (row["tenant"], row["value"], row["version"]) == ("global", "50", 2)

    # The history tab opens on the first item: its versions, newest first, and their diff.
    versions = frame_with(page, "version", "operation", "actor")
    assert versions["version"].tolist() == [2, 1]
    assert versions["comment"].tolist() == ["more", "first"]
    assert set(versions["actor"]) == {OPERATOR}
    diff = page.code[0].value
    assert "-40" in diff and "+50" in diff

    matrix = frame_with(page, "flag", "global").set_index("flag")
    assert matrix.at["chaos_mode", "global"] == "off" and matrix.at["chaos_mode", "org:acme"] == "on"

    per_key = frame_with(page, "kind", "key", "layer", "changes").set_index(["key", "layer"])
    assert per_key.at[("autoscaler.max_workers", "global"), "changes"] == 2
    assert per_key.at[("chaos_mode", "org:acme"), "actors"] == OPERATOR
    assert OPERATOR in frame_with(page, "actor", "changes", "keys")["actor"].tolist()

    assert "Connection ready" in shown  # the live follower got its snapshot


def test_workflows_page_draws_the_dag_and_the_runs_gantt(on_populated):
    page = open_page("workflows")
    assert frame_with(page, "workflow_id", "name")["workflow_id"].tolist() == [on_populated.workflow_id]
    assert on_populated.run_id in frame_with(page, "run_id", "status")["run_id"].tolist()

    dag, gantt = charts(page)
    node_traces = [t for t in dag["data"] if t.get("mode") == "markers+text"]
    assert {t["name"] for t in node_traces} == {"start", "task", "end"}
    labels = {label for t in node_traces for label in t["text"]}
    assert {"Verify Order", "Process Payment"} <= labels
    assert any(t.get("mode") == "lines" for t in dag["data"])  # the edges

    drawn = {label for t in gantt["data"] for label in t["y"]}
    assert {"start", "verify", "payment"} <= drawn
    statuses = {t["name"] for t in gantt["data"]}
    assert "COMPLETED" in statuses and "FAILED" in statuses  # payment.example.com does not exist
    assert "Node payment failed" in texts(page)
    # Every node has a bar at least 1% of the run's span wide, labelled with its true duration.
    bars = [(float(w), float(b), text) for t in gantt["data"]
            for w, b, text in zip(_numbers(t["x"]), _numbers(t["base"]), t["text"], strict=True)]
    span = max(b + w for w, b, _ in bars) - min(b for _, b, _ in bars)
    assert all(w >= 0.0099 * span for w, _, _ in bars), bars
    assert all(re.fullmatch(r"[\d.]+ (µs|ms|s)", text) for _, _, text in bars), bars


def _numbers(values) -> list[float]:
    """A plotly figure's numbers as JSON gives them: a list, or typed binary (``bdata``)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return [float(v) for v in values]


def test_a_sub_millisecond_node_gets_a_visible_bar_labelled_with_its_duration():
    from dashboard.data import workflows

    trace = {"started_at": 1_700_000_000.0, "duration_ms": 2000.0, "spans": [
        {"node_id": "start", "node_type": "start", "start_ms": 0.0, "end_ms": 0.05, "status": "COMPLETED"},
        {"node_id": "fetch", "node_type": "task", "start_ms": 0.05, "end_ms": 1999.0, "status": "COMPLETED"},
        {"node_id": "end", "node_type": "end", "start_ms": 1999.0, "end_ms": 1999.4, "status": "COMPLETED"}]}
    bars = workflows.timeline_bars(workflows.spans(trace)).set_index("node_id")
    assert bars.loc["start", "duration_ms"] == 0.05 and bars.loc["start", "duration"] == "50 µs"
    assert bars.loc["start", "bar_ms"] == pytest.approx(0.01 * 1999.4)  # 1% of the run, not 0.05 ms
    assert bars.loc["end", "duration"] == "400 µs" and bars.loc["fetch", "duration"] == "2.00 s"
    assert bars.loc["fetch", "bar_ms"] == pytest.approx(1998.95)  # a long node keeps its own width


def test_autoscaler_page_shows_the_worker_its_versions_and_decisions(on_populated):
    page = open_page("autoscaler")
    shown = texts(page)
    assert "Worker dashboard-worker" in shown
    assert "rl_agent version 1" in shown and "Status ok" in shown
    workers = frame_with(page, "url", "up", "rl_agent")
    assert workers[["worker", "up", "rl_agent"]].values.tolist() == [["dashboard-worker", "up", "1"]]
    models = frame_with(page, "name", "version", "source").set_index("name")
    assert models.at["rl_agent", "version"] == "1"

    decisions = frame_with(page, "target_workers", "mode", "reason")
    assert len(decisions) == 3
    assert sorted(decisions["tenant"]) == ["global", "global", "org:acme"]
    assert set(decisions["policy_version"]) == {"1"}
    summary = frame_with(page, "decisions", "mean_target").set_index("tenant")
    assert summary.at["global", "decisions"] == 2
    assert len(page.get("plotly_chart")) == 1  # target workers over time
    assert "rl_agent" in set(frame_with(page, "model", "from", "to")["model"])  # loaded at start


# ------------------------------------------------------------------------------ interactions
def test_a_tenant_flag_toggled_on_the_page_is_written_as_the_operator_and_seen_live(on_populated):
    page = open_page("config_flags")
    page.selectbox(key="cf_flag").set_value("chaos_mode")
    page.text_input(key="cf_flag_tenant").set_value("org:globex")
    page.run()
    toggle = page.toggle(key="cf_flag_on::chaos_mode::org:globex")
    assert toggle.value is False  # no entry for the tenant yet
    toggle.set_value(True)
    page.button(key="cf_flag_apply").click().run()
    assert not page.exception
    assert "chaos_mode is now on for org:globex (version 1)." in [s.value for s in page.success]

    with on_populated.api.client("admin") as admin:
        flag = admin.get("/config/features/chaos_mode", params={"tenant": "org:globex"}).json()
        assert flag["value"]["enabled"] is True and flag["updated_by"] == OPERATOR
        assert admin.get("/config/features/chaos_mode").json()["value"]["enabled"] is False  # global kept

    # The WS pushed the change to the page's live follower.
    deadline = time.monotonic() + 15
    while True:
        live = frame_with(page, "revision", "received") if "Changes seen 0" not in texts(page) else None
        if live is not None and ((live["key"] == "chaos_mode") & (live["tenant"] == "org:globex")).any():
            break
        assert time.monotonic() < deadline, "the change did not reach the live panel"
        time.sleep(0.3)
        page.run()


def test_a_value_saved_on_the_page_is_written_as_the_operator_and_a_rollback_is_refused(on_populated):
    page = open_page("config_flags")
    page.selectbox(key="cf_key").set_value("+ new…").run()
    page.text_input(key="cf_new_key").set_value("dashboard.batch")
    page.text_area(key="cf_value").set_value('{"size": 7, "queues": ["high", "low"]}')
    page.text_input(key="cf_comment").set_value("from the dashboard")
    page.button(key="cf_save").click().run()
    assert not page.exception
    assert "Saved dashboard.batch: version 1." in [s.value for s in page.success]

    with on_populated.api.client("admin") as admin:
        versions = admin.get("/config/dashboard.batch/versions").json()
        assert [(v["value"], v["actor"], v["comment"]) for v in versions] == [
            ({"size": 7, "queues": ["high", "low"]}, OPERATOR, "from the dashboard")]

        # Rolling back is an admin route: the operator's token is refused, said plainly, and
        # nothing is written.
        page.selectbox(key="cf_history_item").set_value("config · autoscaler.max_workers").run()
        page.button(key="cf_rollback").click().run()
        assert not page.exception
        refusal = " ".join(e.value for e in page.error)
        assert "refused the rollback (HTTP 403)" in refusal and "admin" in refusal
        assert len(admin.get("/config/autoscaler.max_workers/versions").json()) == 2

    # Not JSON: said, not sent.
    page.selectbox(key="cf_key").set_value("dashboard.batch").run()
    page.text_area(key="cf_value").set_value("{not json")
    page.button(key="cf_save").click().run()
    assert any("not JSON" in e.value for e in page.error)
