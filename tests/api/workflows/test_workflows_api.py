"""The workflows API end to end on a real uvicorn server: the seed's cURL quick test (a run that is a
Dagster run), validation listing every problem, versions, export/import, templates, every node type
(switch, parallel/join, timer, subworkflow), retries, timeouts, cancel, the concurrency limit, logs,
replay, metrics, the WebSocket feed, SLA alerts to Slack and retention cleanup.

Two servers: ``server`` (SLA checks every second, Slack and the WebSocket token set) for most tests,
and ``limited`` (WORKFLOW_MAX_CONCURRENT_RUNS=1, WORKFLOW_RETENTION_DAYS=0) for the queue and cleanup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from itertools import pairwise

import pytest
from websockets.sync.client import connect

from prioritymax.settings import REPO_ROOT
from tests.api.conftest import start_server
from tests.api.workflows.support import (
    FINISHED,
    Receiver,
    chain,
    create,
    events,
    graph,
    metric,
    node,
    nodes_by_id,
    of_type,
    run_to_end,
    start,
    task,
    wait_for,
    wait_run,
    ws_outcome,
)

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "order_workflow.json"
WS_SHARED_TOKEN = "abc"


def _stop(running) -> None:
    """Stop a server; one that does not stop on SIGTERM within 10 s is killed."""
    running.process.terminate()
    try:
        running.process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.communicate()


@pytest.fixture(scope="module")
def receiver():
    """Plays the payment service (/api/pay) and Slack (/slack)."""
    recording = Receiver()
    yield recording
    recording.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, receiver):
    running = start_server(tmp_path_factory.mktemp("wf-api-home"), {
        "WORKFLOW_MAINTENANCE_INTERVAL": "1",
        "SLACK_WEBHOOK_URL": f"{receiver.url}/slack",
        "WORKFLOWS_WS_AUTH_TOKEN": WS_SHARED_TOKEN,
    })
    yield running
    _stop(running)


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("wf-limited-home"), {
        "WORKFLOW_MAX_CONCURRENT_RUNS": "1",
        "WORKFLOW_RETENTION_DAYS": "0",
        "WORKFLOW_MAINTENANCE_INTERVAL": "3600",  # cleanup only when the test asks
    })
    yield running
    _stop(running)


@pytest.fixture(scope="module")
def operator(server):
    with server.client("operator") as client:
        yield client


def example_spec(receiver: Receiver) -> dict:
    spec = json.loads(EXAMPLE.read_text())
    payment = next(n for n in spec["nodes"] if n["node_id"] == "payment")
    payment["template"]["config"]["url"] = f"{receiver.url}/api/pay"
    return spec


def workflow_ids(client) -> list[str]:
    response = client.get("/workflows/")
    assert response.status_code == 200, response.text
    return [w["workflow_id"] for w in response.json()["workflows"]]


def ws_url(running, **query) -> str:
    base = running.url.replace("http://", "ws://") + "/workflows/ws/workflows"
    return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


# ---------------------------------------------------------------------------- the quick test
def test_seed_quick_test_runs_as_a_dagster_run(server, operator, receiver):
    workflow_id = create(operator, example_spec(receiver))
    run = run_to_end(operator, workflow_id, {"order_id": 123})
    assert run["status"] == "COMPLETED", run
    assert run["results"]["verify"] == {"verified": True, "order_id": 123}
    assert run["results"]["payment"]["status_code"] == 200
    assert run["results"]["payment"]["body"] == {"ok": True}
    assert {n["node_id"]: n["status"] for n in run["nodes"]} == {
        "start": "COMPLETED", "verify": "COMPLETED", "payment": "COMPLETED", "end": "COMPLETED"}

    paid = receiver.received("/api/pay")
    assert len(paid) == 1
    assert paid[0]["method"] == "POST"
    assert paid[0]["body"]["order_id"] == 123
    assert paid[0]["body"]["upstream"]["verify"] == {"verified": True, "order_id": 123}

    env = {**os.environ, "DAGSTER_HOME": str(server.home / "dagster")}
    listed = subprocess.run([sys.executable, "-m", "dagster", "run", "list"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert run["run_id"] in listed.stdout
    assert run["job_name"] in listed.stdout

    audit_log = server.home / "logs" / "workflows_audit.jsonl"
    audit = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert any(r.get("action") == "workflow_created" and r.get("workflow_id") == workflow_id for r in audit)
    kinds = [r["type"] for r in audit if r.get("run_id") == run["run_id"] and "type" in r]
    assert kinds[0] == "run_started" and kinds[-1] == "run_completed"
    assert kinds.count("node_end") == 4


def test_validate_and_preview_the_example(operator, receiver):
    spec = example_spec(receiver)
    validated = operator.post("/workflows/validate", json=spec)
    assert validated.status_code == 200
    assert validated.json() == {"valid": True, "problems": []}

    previewed = operator.post("/workflows/preview", json=spec)
    assert previewed.status_code == 200, previewed.text
    layout = previewed.json()
    assert {n["node_id"] for n in layout["nodes"]} == {"start", "verify", "payment", "end"}
    assert {(e["source"], e["target"]) for e in layout["edges"]} == {
        ("start", "verify"), ("verify", "payment"), ("payment", "end")}
    layers = {n["node_id"]: n["layer"] for n in layout["nodes"]}
    assert layers["start"] < layers["verify"] < layers["payment"] < layers["end"]

    workflow_id = create(operator, spec)
    stored = operator.get(f"/workflows/{workflow_id}/preview")
    assert stored.status_code == 200
    assert {n["node_id"] for n in stored.json()["nodes"]} == {n["node_id"] for n in layout["nodes"]}


# ----------------------------------------------------------------------------- validation
BROKEN = graph("broken", [
    node("start", "start"),
    task("a", "noop"),
    task("b", "noop"),
    node("weird", "banana"),
    node("teleport", "task", template={"executor": "teleporter", "config": {}}),
    task("missing", "no_such_function"),
    node("nocallable", "task", template={"executor": "python", "config": {}}),
    node("evil", "task", template={"executor": "python", "config": {"callable": "os:system"}}),
    node("end", "end"),
], [("start", "a"), ("a", "b"), ("b", "a"), ("b", "end"), ("a", "ghost"),
    ("start", "weird"), ("start", "teleport"), ("start", "missing"), ("start", "nocallable"),
    ("start", "evil"), ("weird", "end"), ("teleport", "end"), ("missing", "end"), ("nocallable", "end"),
    ("evil", "end")])
#: node id -> words its problem's message must contain
EXPECTED_PROBLEMS = {
    "a": [("cycle",), ("ghost",)],
    "weird": [("unknown node type", "banana")],
    "teleport": [("unknown executor", "teleporter")],
    "missing": [("no_such_function",)],
    "nocallable": [("callable",)],
    "evil": [("os", "allowed")],
}


def test_a_broken_spec_is_refused_with_every_problem_and_nothing_is_stored(operator):
    before = workflow_ids(operator)
    response = operator.post("/workflows/", json=BROKEN)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["message"]
    problems = detail["problems"]
    for node_id, wanted in EXPECTED_PROBLEMS.items():
        messages = [p["message"].lower() for p in problems if p["node_id"] == node_id]
        for words in wanted:
            assert any(all(w in m for w in words) for m in messages), (node_id, words, problems)
    cycle = next(p["message"] for p in problems if "cycle" in p["message"])
    assert "a -> b -> a" in cycle
    assert not any(p["node_id"] in ("start", "end", "b") for p in problems), problems

    validated = operator.post("/workflows/validate", json=BROKEN)
    assert validated.status_code == 200
    assert validated.json()["valid"] is False
    assert validated.json()["problems"] == problems
    assert operator.post("/workflows/preview", json=BROKEN).status_code == 422
    shapeless = operator.post("/workflows/validate", json={"nodes": "no"})
    assert shapeless.status_code == 200 and shapeless.json()["valid"] is False
    assert any("name" in p["message"] for p in shapeless.json()["problems"])
    assert operator.post("/workflows/import", json=BROKEN).status_code == 422

    oversized = chain("huge", task("work", "noop"), variables={"blob": "x" * (300 * 1024)})
    response = operator.post("/workflows/", json=oversized)
    assert response.status_code == 422, response.text[:500]
    assert any("limit" in p["message"] for p in response.json()["detail"]["problems"])
    assert operator.post("/workflows/validate", json=oversized).json()["valid"] is False

    assert workflow_ids(operator) == before


# ------------------------------------------------------------------------------- versions
def test_versions_stay_runnable_and_a_stale_if_match_is_409(operator):
    def version(tag: str) -> dict:
        return chain(f"versioned {tag}", task("show", "echo"), variables={"tag": tag})

    workflow_id = create(operator, version("v1"))
    second = operator.put(f"/workflows/{workflow_id}", json=version("v2"), headers={"If-Match": '"1"'})
    assert second.status_code == 200, second.text
    assert second.json()["version"] == 2
    stale = operator.put(f"/workflows/{workflow_id}", json=version("stale"), headers={"If-Match": '"1"'})
    assert stale.status_code == 409, stale.text
    invalid = operator.put(f"/workflows/{workflow_id}", json=BROKEN)
    assert invalid.status_code == 422
    third = operator.put(f"/workflows/{workflow_id}", json=version("v3"))
    assert third.status_code == 200 and third.json()["version"] == 3

    versions = operator.get(f"/workflows/{workflow_id}/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["name"] for v in versions] == ["versioned v1", "versioned v2", "versioned v3"]
    first = operator.get(f"/workflows/{workflow_id}", params={"version": 1}).json()
    assert first["spec"]["variables"] == {"tag": "v1"} and first["latest_version"] == 3
    assert operator.get(f"/workflows/{workflow_id}", params={"version": 9}).status_code == 404

    old = run_to_end(operator, workflow_id, version=1)
    assert old["status"] == "COMPLETED" and old["version"] == 1
    assert old["results"]["show"]["payload"]["tag"] == "v1"
    latest = run_to_end(operator, workflow_id)
    assert latest["version"] == 3 and latest["results"]["show"]["payload"]["tag"] == "v3"
    listed = operator.get("/workflows/runs", params={"workflow_id": workflow_id}).json()["runs"]
    assert [r["run_id"] for r in listed] == [latest["run_id"], old["run_id"]]  # newest first
    unknown = operator.post("/workflows/run/start", json={"workflow_id": workflow_id, "version": 9})
    assert unknown.status_code == 404

    assert operator.delete(f"/workflows/{workflow_id}").status_code == 200
    assert operator.get(f"/workflows/{workflow_id}").status_code == 404
    assert operator.post("/workflows/run/start", json={"workflow_id": workflow_id}).status_code == 404
    assert operator.get(f"/workflows/run/{old['run_id']}").status_code == 200  # history stays


def test_export_then_import_round_trips(operator):
    workflow_id = create(operator, chain("exported", task("one", "noop")))
    assert operator.put(f"/workflows/{workflow_id}",
                        json=chain("exported", task("one", "noop"), task("two", "echo"))).status_code == 200
    exported = operator.get(f"/workflows/{workflow_id}/export")
    assert exported.status_code == 200
    document = exported.json()
    assert [v["version"] for v in document["versions"]] == [1, 2]

    imported = operator.post("/workflows/import", json=document)
    assert imported.status_code == 201, imported.text
    copy_id = imported.json()["workflow_id"]
    assert copy_id != workflow_id
    assert imported.json()["latest_version"] == 2
    again = operator.get(f"/workflows/{copy_id}/export").json()
    assert [v["spec"] for v in again["versions"]] == [v["spec"] for v in document["versions"]]
    assert run_to_end(operator, copy_id)["status"] == "COMPLETED"

    bare = operator.post("/workflows/import", json=chain("bare", task("one", "noop")))
    assert bare.status_code == 201 and bare.json()["latest_version"] == 1


def test_a_template_ref_node_runs_the_stored_template(operator):
    template = {"executor": "python", "config": {"callable": "workflows.tasks:echo"}}
    saved = operator.post("/workflows/templates", json={"name": "echo_tpl", "template": template,
                                                        "description": "echo what came in"})
    assert saved.status_code == 201, saved.text
    assert "echo_tpl" in {t["name"] for t in operator.get("/workflows/templates").json()["templates"]}
    assert operator.get("/workflows/templates/echo_tpl").json()["template"] == template

    spec = chain("templated", node("greet", "task", template_ref="echo_tpl"), variables={"who": "x"})
    workflow_id = create(operator, spec)
    run = run_to_end(operator, workflow_id, {"who": "templates"})
    assert run["status"] == "COMPLETED", run
    assert run["results"]["greet"]["node_id"] == "greet"
    assert run["results"]["greet"]["payload"]["who"] == "templates"

    assert operator.delete("/workflows/templates/echo_tpl").status_code == 200
    assert operator.get("/workflows/templates/echo_tpl").status_code == 404
    refused = operator.post("/workflows/", json=spec)
    assert refused.status_code == 422
    problems = refused.json()["detail"]["problems"]
    assert any(p["node_id"] == "greet" and "echo_tpl" in p["message"] for p in problems), problems


# ----------------------------------------------------------------------------- node types
def test_switch_takes_one_branch_and_the_join_after_it_runs(operator):
    spec = graph("switch", [
        node("start", "start"), task("verify", "verify_order"), node("check", "switch"),
        task("big", "echo"), task("small", "echo"), node("merge", "join"), task("after", "echo"),
        node("end", "end"),
    ], [("start", "verify"), ("verify", "check"),
        {"source": "check", "target": "big",
         "condition": "input.amount > 100 and results.verify.verified == True"},
        {"source": "check", "target": "small", "default": True},
        ("big", "merge"), ("small", "merge"), ("merge", "after"), ("after", "end")])
    workflow_id = create(operator, spec)
    for amount, taken, skipped in ((500, "big", "small"), (5, "small", "big")):
        run = run_to_end(operator, workflow_id, {"order_id": 1, "amount": amount})
        assert run["status"] == "COMPLETED", run
        assert run["results"]["check"]["chosen"] == taken
        assert taken in run["results"] and skipped not in run["results"]
        states = {n["node_id"]: n["status"] for n in run["nodes"]}
        assert skipped not in states
        assert states[taken] == states["merge"] == states["after"] == states["end"] == "COMPLETED"
        assert set(run["results"]["after"]["payload"]["upstream"]) >= {"verify", "check", taken}
        assert not of_type(events(operator, run["run_id"]), "node_start", skipped)


def test_parallel_fans_out_and_the_join_waits_for_every_branch(operator):
    spec = graph("fan", [
        node("start", "start"), node("fan", "parallel"), task("a", "echo"), task("b", "echo"),
        task("c", "echo"), node("merge", "join"), task("report", "echo"), node("end", "end"),
    ], [("start", "fan"), ("fan", "a"), ("fan", "b"), ("fan", "c"), ("a", "merge"), ("b", "merge"),
        ("c", "merge"), ("merge", "report"), ("report", "end")])
    run = run_to_end(operator, create(operator, spec))
    assert run["status"] == "COMPLETED", run
    assert {"a", "b", "c", "report"} <= set(run["results"])
    assert set(run["results"]["report"]["payload"]["upstream"]) >= {"a", "b", "c"}
    timeline = events(operator, run["run_id"])
    merge_start = of_type(timeline, "node_start", "merge")[0]["seq"]
    for branch in ("a", "b", "c"):
        assert of_type(timeline, "node_end", branch)[0]["seq"] < merge_start


def test_timer_runs_in_line(operator):
    spec = chain("timer", node("wait", "timer", config={"seconds": 0.3}))
    run = run_to_end(operator, create(operator, spec))
    assert run["status"] == "COMPLETED", run
    assert run["results"]["wait"] == {"waited_seconds": 0.3}
    wait = nodes_by_id(run)["wait"]
    assert wait["node_type"] == "timer" and wait["status"] == "COMPLETED"
    timeline = events(operator, run["run_id"])
    assert of_type(timeline, "node_end", "wait")[0]["seq"] < of_type(timeline, "node_start", "end")[0]["seq"]


def test_subworkflow_runs_nested_and_a_cross_workflow_cycle_is_refused(operator):
    inner_spec = chain("inner", task("inner_task", "echo"))
    inner_id = create(operator, inner_spec)
    outer_id = create(operator, chain("outer", node("sub", "subworkflow", config={"workflow_id": inner_id}),
                                      task("after", "echo")))
    run = run_to_end(operator, outer_id, {"x": 1})
    assert run["status"] == "COMPLETED", run
    ran = {e["node_id"] for e in of_type(events(operator, run["run_id"]), "node_end")}
    assert {"sub.start", "sub.inner_task", "sub.end", "after"} <= ran
    assert run["results"]["sub.inner_task"]["node_id"] == "sub.inner_task"
    assert run["results"]["sub.inner_task"]["payload"]["x"] == 1
    assert "sub.inner_task" in run["results"]["after"]["payload"]["upstream"]

    looping = chain("inner", node("back", "subworkflow", config={"workflow_id": outer_id}))
    refused = operator.put(f"/workflows/{inner_id}", json=looping)
    assert refused.status_code == 422, refused.text
    problems = refused.json()["detail"]["problems"]
    assert any(p["node_id"] == "back" and "cycle" in p["message"] for p in problems), problems
    itself = operator.put(f"/workflows/{outer_id}",
                          json=chain("outer", node("me", "subworkflow", config={"workflow_id": outer_id})))
    assert itself.status_code == 422
    assert [v["version"] for v in operator.get(f"/workflows/{inner_id}/versions").json()["versions"]] == [1]
    assert operator.get(f"/workflows/{outer_id}").json()["latest_version"] == 1


def test_retries_recover_or_fail_with_the_error_kept(operator):
    def flaky_spec(max_retries: int) -> dict:
        return chain("flaky", task("first", "echo"),
                     task("shaky", "flaky", retry_policy={"max_retries": max_retries, "backoff_seconds": 0}))

    workflow_id = create(operator, flaky_spec(2))
    run = run_to_end(operator, workflow_id, {"fail_times": 2})
    assert run["status"] == "COMPLETED", run
    assert run["results"]["shaky"] == {"attempt": 3}
    timeline = events(operator, run["run_id"])
    retries = of_type(timeline, "node_retry", "shaky")
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all("flaky" in r["error"] and r["delay_seconds"] == 0 for r in retries)
    assert [e["status"] for e in of_type(timeline, "node_end", "shaky")] == ["FAILED", "FAILED", "COMPLETED"]
    assert nodes_by_id(run)["shaky"]["attempts"] == 3

    assert operator.put(f"/workflows/{workflow_id}", json=flaky_spec(1)).status_code == 200
    failed = run_to_end(operator, workflow_id, {"fail_times": 2})
    assert failed["status"] == "FAILED", failed
    assert "shaky" in failed["error"] and "attempt 2" in failed["error"]
    assert failed["results"]["first"]["node_id"] == "first"  # earlier results are kept
    assert nodes_by_id(failed)["shaky"]["status"] == "FAILED"
    assert "end" not in nodes_by_id(failed)
    timeline = events(operator, failed["run_id"])
    assert len(of_type(timeline, "node_retry", "shaky")) == 1
    assert timeline[-1]["type"] == "run_failed" and timeline[-1]["error"] == failed["error"]


def test_a_node_past_its_timeout_fails_the_run(operator):
    spec = chain("slow", task("nap", "sleep", timeout_seconds=0.5))
    run = run_to_end(operator, create(operator, spec), {"seconds": 5})
    assert run["status"] == "FAILED", run
    assert "timeout" in run["error"] and "nap" in run["error"]
    assert "timeout" in nodes_by_id(run)["nap"]["error"]


def test_cancel_stops_a_running_timer(operator):
    run_id = start(operator, create(operator, chain("long", node("wait", "timer", config={"seconds": 30}),
                                                    task("never", "noop"))))
    wait_for(lambda: of_type(events(operator, run_id), "node_start", "wait"), what="the timer starting")
    cancelled = operator.post(f"/workflows/run/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    run = wait_run(operator, run_id, timeout=15)
    assert run["status"] == "CANCELLED", run
    assert nodes_by_id(run)["wait"]["status"] == "CANCELLED"
    assert "never" not in nodes_by_id(run)
    assert events(operator, run_id)[-1]["type"] == "run_cancelled"
    again = operator.post(f"/workflows/run/{run_id}/cancel")
    assert again.status_code == 409
    assert operator.post("/workflows/run/no-such-run/cancel").status_code == 404


# ------------------------------------------------------------------------ logs and replay
def test_logs_download_and_stream(server, operator):
    spec = chain("logged", task("one", "echo"), node("wait", "timer", config={"seconds": 0.5}))
    workflow_id = create(operator, spec)
    finished = run_to_end(operator, workflow_id)
    response = operator.get(f"/workflows/run/{finished['run_id']}/logs")
    assert response.status_code == 200
    assert finished["run_id"] in response.headers["content-disposition"]
    lines = [json.loads(line) for line in response.text.splitlines()]
    kinds = [e["type"] for e in lines]
    assert kinds[0] == "run_started" and kinds[-1] == "run_completed"
    seqs = [e["seq"] for e in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for node_id in ("start", "one", "wait", "end"):
        begin = next(i for i, e in enumerate(lines) if e["type"] == "node_start" and e["node_id"] == node_id)
        end = next(i for i, e in enumerate(lines) if e["type"] == "node_end" and e["node_id"] == node_id)
        assert begin < end
    assert (server.home / "logs" / "runs" / f"{finished['run_id']}.jsonl").exists()

    run_id = start(operator, workflow_id)
    with operator.stream("GET", f"/workflows/run/{run_id}/logs", params={"stream": "true"}) as streamed:
        assert streamed.status_code == 200
        followed = [json.loads(line) for line in streamed.iter_lines() if line.strip()]
    assert [e["type"] for e in followed][0] == "run_started"
    assert followed[-1]["type"] == "run_completed"
    assert [e["seq"] for e in followed] == sorted({e["seq"] for e in followed})
    assert len(of_type(followed, "node_end")) == 4
    assert operator.get("/workflows/run/no-such-run/logs").status_code == 404


def test_replay_orders_events_with_offsets_and_spans(operator):
    run = run_to_end(operator, create(operator, chain("replayed", task("one", "noop"), task("two", "echo"))))
    response = operator.get(f"/workflows/trace/replay/{run['run_id']}")
    assert response.status_code == 200
    replay = response.json()
    assert replay["status"] == "COMPLETED" and replay["run_id"] == run["run_id"]
    timeline = replay["events"]
    assert [e["seq"] for e in timeline] == sorted(e["seq"] for e in timeline)
    offsets = [e["offset_ms"] for e in timeline]
    assert offsets[0] == 0 and all(a <= b for a, b in pairwise(offsets))
    assert timeline[0]["type"] == "run_started" and timeline[-1]["type"] == "run_completed"
    spans = {s["node_id"]: s for s in replay["spans"]}
    assert set(spans) == {"start", "one", "two", "end"}
    for span in spans.values():
        assert span["status"] == "COMPLETED" and span["attempt"] == 1
        assert 0 <= span["start_ms"] <= span["end_ms"] <= replay["duration_ms"]
    assert spans["one"]["end_ms"] <= spans["two"]["start_ms"]
    assert operator.get("/workflows/trace/replay/no-such-run").status_code == 404


def test_metrics_count_runs(operator):
    def scrape() -> str:
        response = operator.get("/workflows/metrics")
        assert response.status_code == 200
        return response.text

    names = ("prioritymax_workflow_runs_started_total", "prioritymax_workflow_runs_failed_total",
             "prioritymax_workflow_runs_completed_total")
    before = scrape()
    assert metric(before, "prioritymax_workflow_runs_active") == 0
    ok_id = create(operator, chain("metric ok", task("one", "noop")))
    bad_id = create(operator, chain("metric bad", task("one", "fail")))
    assert run_to_end(operator, ok_id)["status"] == "COMPLETED"
    assert run_to_end(operator, bad_id)["status"] == "FAILED"
    timer_spec = chain("metric timer", node("wait", "timer", config={"seconds": 1}))
    timer_run = start(operator, create(operator, timer_spec))
    wait_run(operator, timer_run, statuses=("RUNNING",))
    during = scrape()
    assert metric(during, "prioritymax_workflow_runs_active") == 1
    wait_run(operator, timer_run)
    # The run's status is committed with its end event; the counters count that event in the hooks
    # that run right after the commit, so a scrape may come a moment early.
    expected = {"prioritymax_workflow_runs_started_total": 3, "prioritymax_workflow_runs_failed_total": 1,
                "prioritymax_workflow_runs_completed_total": 2}
    deadline = time.monotonic() + 10
    while True:
        after = scrape()
        delta = {name: metric(after, name) - metric(before, name) for name in names}
        if delta == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert delta == expected
    assert metric(after, "prioritymax_workflow_runs_active") == 0


# ------------------------------------------------------------------------------ websocket
def run_messages(socket, run_id: str) -> list[dict]:
    """The messages of one run, read until its run_* end event (messages of other runs skipped)."""
    seen: list[dict] = []
    while not seen or seen[-1]["type"] not in ("run_completed", "run_failed", "run_cancelled"):
        message = json.loads(socket.recv(timeout=30))
        if message.get("run_id") == run_id:
            seen.append(message)
    return seen


def test_websocket_streams_a_run_in_order_and_replays_since(server, operator):
    workflow_id = create(operator, chain("watched", task("one", "noop"), task("two", "noop")))
    with connect(ws_url(server, token=server.tokens["viewer"]), open_timeout=10) as socket:
        hello = json.loads(socket.recv(timeout=10))
        assert hello["type"] == "hello" and isinstance(hello["seq"], int)
        run_id = start(operator, workflow_id)
        seen = run_messages(socket, run_id)
    kinds = [m["type"] for m in seen]
    assert kinds[0] == "run_started" and kinds[-1] == "run_completed", kinds
    assert kinds.count("node_start") == kinds.count("node_end") == 4
    seqs = [m["seq"] for m in seen]
    assert all(a < b for a, b in pairwise(seqs)) and seqs[0] > hello["seq"]
    assert seqs == [e["seq"] for e in events(operator, run_id)]

    with connect(ws_url(server, token=server.tokens["viewer"], since=seqs[0] - 1), open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "hello"
        replayed = run_messages(socket, run_id)
    assert [m["seq"] for m in replayed] == seqs
    assert [m["type"] for m in replayed] == kinds


def test_websocket_shared_token(server):
    accepted = ws_outcome(ws_url(server, token=WS_SHARED_TOKEN))
    assert accepted[0] == "accepted" and accepted[1]["type"] == "hello", accepted
    assert ws_outcome(ws_url(server, token="wrong")) == 4401
    assert ws_outcome(ws_url(server)) == 4401


# ------------------------------------------------------------------------------------ SLA
def test_sla_violation_is_an_event_a_metric_and_a_slack_message(operator, receiver):
    spec = chain("sla", node("wait", "timer", config={"seconds": 1}, sla_seconds=0.1), sla_seconds=0.2)
    run = run_to_end(operator, create(operator, spec))
    assert run["status"] == "COMPLETED"

    def violations():
        found = of_type(events(operator, run["run_id"]), "sla_violation")
        return found if len(found) == 2 else None

    found = wait_for(violations, timeout=20, what="two sla_violation events (workflow and node)")
    by_scope = {v["node_id"]: v for v in found}
    assert set(by_scope) == {None, "wait"}
    assert by_scope[None]["sla_seconds"] == 0.2 and by_scope[None]["elapsed_seconds"] > 0.2
    assert by_scope["wait"]["sla_seconds"] == 0.1 and by_scope["wait"]["elapsed_seconds"] > 0.1

    text = operator.get("/workflows/metrics").text
    assert metric(text, "prioritymax_workflow_sla_violations_total", scope="workflow") >= 1
    assert metric(text, "prioritymax_workflow_sla_violations_total", scope="node") >= 1
    def slack_messages():  # both: the run's and its node's (they may arrive in either order)
        found = [r for r in receiver.received("/slack") if run["run_id"] in r["body"]["text"]]
        return found if any("wait" in m["body"]["text"] for m in found) else None

    messages = wait_for(slack_messages, what="the Slack message of the node's SLA")
    assert all("SLA" in m["body"]["text"] for m in messages)


# -------------------------------------------------------------- concurrency limit, cleanup
def test_runs_past_the_concurrency_limit_wait_pending(limited):
    with limited.client("operator") as client:
        workflow_id = create(client, chain("queued", node("wait", "timer", config={"seconds": 1})))
        first, second, third = (start(client, workflow_id) for _ in range(3))
        assert metric(client.get("/workflows/metrics").text, "prioritymax_workflow_runs_active") == 3
        assert client.post(f"/workflows/run/{third}/cancel").status_code == 200  # still queued
        assert wait_run(client, third, timeout=5)["status"] == "CANCELLED"
        snapshots = []  # (first, second) statuses, each pair read in one query
        while not snapshots or snapshots[-1][1] not in FINISHED:
            listed = client.get("/workflows/runs", params={"workflow_id": workflow_id}).json()["runs"]
            statuses = {r["run_id"]: r["status"] for r in listed}
            snapshots.append((statuses[first], statuses[second]))
            time.sleep(0.05)
        assert ("RUNNING", "PENDING") in snapshots
        assert ("RUNNING", "RUNNING") not in snapshots
        done_first, done_second = wait_run(client, first), wait_run(client, second)
        assert done_first["status"] == done_second["status"] == "COMPLETED"
        assert done_second["started_at"] >= done_first["finished_at"]
        assert not of_type(events(client, third), "run_started")
        assert events(client, third)[-1]["type"] == "run_cancelled"


def test_cleanup_deletes_finished_runs_and_their_logs(limited):
    with limited.client("operator") as client:
        finished = run_to_end(client, create(client, chain("old", task("one", "noop"))))
        running = start(client, create(client, chain("going", node("wait", "timer", config={"seconds": 30}))))
        wait_run(client, running, statuses=("RUNNING",))
    log_file = limited.home / "logs" / "runs" / f"{finished['run_id']}.jsonl"
    assert log_file.exists()
    with limited.client("admin") as admin:
        cleaned = admin.post("/workflows/admin/cleanup")
        assert cleaned.status_code == 200, cleaned.text
        assert cleaned.json()["retention_days"] == 0 and cleaned.json()["runs_deleted"] >= 1
        assert admin.get(f"/workflows/run/{finished['run_id']}").status_code == 404
        assert admin.get(f"/workflows/trace/replay/{finished['run_id']}").status_code == 404
        assert not log_file.exists()
        assert admin.get(f"/workflows/run/{running}").json()["status"] == "RUNNING"  # active runs stay
        assert admin.post(f"/workflows/run/{running}/cancel").status_code == 200
        assert wait_run(admin, running, timeout=15)["status"] == "CANCELLED"
    audit = (limited.home / "logs" / "workflows_audit.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("action") == "cleanup" for line in audit)


# ------------------------------------------------------------- compiled jobs and the store
def test_a_run_names_the_deleted_template_its_node_needs(operator):
    template = {"executor": "python", "config": {"callable": "workflows.tasks:echo"}}
    saved = operator.post("/workflows/templates", json={"name": "gone_tpl", "template": template})
    assert saved.status_code == 201
    workflow_id = create(operator, chain("orphan", node("greet", "task", template_ref="gone_tpl")))
    assert operator.delete("/workflows/templates/gone_tpl").status_code == 200
    started = operator.post("/workflows/run/start", json={"workflow_id": workflow_id})
    assert started.status_code == 422 and "gone_tpl" in started.text, started.text


def test_an_unpinned_subworkflow_runs_the_inner_workflows_latest_version(operator):
    inner_id = create(operator, chain("inner", task("old_step", "echo")))
    outer_id = create(operator, chain("outer", node("sub", "subworkflow", config={"workflow_id": inner_id})))
    assert "sub.old_step" in run_to_end(operator, outer_id)["results"]
    updated = operator.put(f"/workflows/{inner_id}", json=chain("inner", task("new_step", "echo")))
    assert updated.status_code == 200
    again = run_to_end(operator, outer_id)
    assert again["status"] == "COMPLETED", again
    assert "sub.new_step" in again["results"], sorted(again["results"])


# ------------------------------------------------------------------------- concurrent runs
def test_concurrent_runs_all_complete(server, operator):
    """Several runs at once on one process (they once deadlocked in Dagster's per-run
    logging.dictConfig and wedged the whole server; last in the module for that reason)."""
    workflow_id = create(operator, chain("together", task("one", "noop"), task("two", "noop")))
    run_ids = [start(operator, workflow_id) for _ in range(4)]
    for run_id in run_ids:
        assert wait_run(operator, run_id, timeout=20)["status"] == "COMPLETED"
