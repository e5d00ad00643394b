"""Run leases, reclaim and resume on the test's SQLite data home, with real runners (no mocks): the
store's lease rules (who is an orphan, who may take one over), a runner reclaiming the runs of a
process that died, one stopping a run whose lease it lost, resume reusing completed nodes, and the
http nodes' Idempotency-Key.

A dead process is a lease nobody renews: its runs are recorded the way its runner recorded them,
and "later" is a ``now`` past the expiry, so nothing here waits for a lease to run out."""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestration.workflows import executors
from orchestration.workflows.runner import NotResumable, WorkflowRunner
from orchestration.workflows.runtime import WorkflowRecorder
from orchestration.workflows.spec import TaskTemplate
from orchestration.workflows.store import WorkflowStore
from prioritymax.settings import get_settings

HERE = __name__  # python tasks below are called through the allowlist by this module's name
START, END = {"node_id": "start", "type": "start"}, {"node_id": "end", "type": "end"}


# ------------------------------------------------------------------- tasks the workflows call
def counted(payload: dict, meta: dict) -> dict:
    """Append ``<run_id> <node_id>`` to ``payload["ledger"]``: how often a node really executed."""
    with open(payload["ledger"], "a") as ledger:
        ledger.write(f"{meta['run_id']} {meta['node_id']}\n")
    return {"node": meta["node_id"]}


def gate(payload: dict, meta: dict) -> dict:
    """Fail until the file ``payload["gate"]`` exists (a fault fixed between a run and its resume)."""
    counted(payload, meta)
    if not Path(payload["gate"]).exists():
        raise RuntimeError("the gate is closed")
    return {"passed": True}


def task(node_id: str, function: str) -> dict:
    return {"node_id": node_id, "type": "task",
            "template": {"executor": "python", "config": {"callable": f"{HERE}:{function}"}}}


def chain(*nodes: dict) -> dict:
    ids = [n["node_id"] for n in nodes]
    return {"name": "chain", "nodes": list(nodes),
            "edges": [{"source": a, "target": b} for a, b in zip(ids, ids[1:], strict=False)]}


def event(run_id: str, kind: str, **fields) -> dict:
    return {"type": kind, "run_id": run_id, "workflow_id": "wf", "version": 1, "job_name": "wf_v1",
            "at": time.time(), **fields}


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setenv("PRIORITYMAX_WORKFLOW_PYTHON_MODULES", f"workflows,{HERE}")
    monkeypatch.setenv("PRIORITYMAX_WORKFLOW_LEASE_SECONDS", "30")
    monkeypatch.setenv("PRIORITYMAX_WORKFLOW_LEASE_RENEW_SECONDS", "0.05")
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def store(settings) -> WorkflowStore:
    return WorkflowStore.from_settings(settings)


@pytest.fixture
def runner(store, settings):
    made = WorkflowRunner(store, WorkflowRecorder(store, settings), settings)
    yield made
    made.shutdown()


def wait_for(predicate, timeout: float = 60.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout} s"
        time.sleep(0.02)
    return value


# ------------------------------------------------------------------------------- the store
def test_a_lease_is_taken_with_the_run_and_dropped_with_its_end(store):
    store.create_run("r", "wf", 1, "wf_v1", {}, "api", owner="p1", lease_seconds=30)
    lease = store.lease("r")
    assert lease["owner"] == "p1" and lease["expires_at"] - lease["renewed_at"] == pytest.approx(30)
    assert store.orphaned_runs() == []
    store.append_event(event("r", "run_started"), status="RUNNING")
    store.append_event(event("r", "run_completed"), status="COMPLETED")
    assert store.lease("r") is None
    assert store.orphaned_runs(now=time.time() + 3600) == []


def test_only_an_expired_lease_is_taken_over_and_only_once(store):
    store.create_run("r", "wf", 1, "wf_v1", {}, "api", owner="dead", lease_seconds=10)
    later = time.time() + 11
    assert not store.take_lease("r", "p2", 10)  # still the dead process's for a while
    assert [r["run_id"] for r in store.orphaned_runs(now=later)] == ["r"]
    assert store.take_lease("r", "p2", 10, now=later)
    assert not store.take_lease("r", "p3", 10, now=later)  # p2 got it first
    assert store.lease("r")["owner"] == "p2"
    assert store.renew_leases("dead", ["r"], 10) == set()  # the old owner learns it lost the run
    assert store.renew_leases("p2", ["r"], 10) == {"r"}


def test_an_api_run_without_a_lease_is_an_orphan_a_dagster_one_is_not(store):
    store.create_run("legacy", "wf", 1, "wf_v1", {}, "api")  # recorded before leases existed
    store.ensure_run("from-dagster", "wf", 1, "wf_v1", {})  # Dagster's run monitoring owns it
    assert [r["run_id"] for r in store.orphaned_runs()] == ["legacy"]
    assert store.take_lease("legacy", "p2", 10)
    assert store.orphaned_runs() == []


def test_a_run_that_ended_meanwhile_is_not_taken_and_keeps_no_lease(store):
    store.create_run("r", "wf", 1, "wf_v1", {}, "api")
    store.append_event(event("r", "run_failed", error="x"), status="FAILED")
    assert not store.take_lease("r", "p2", 10)
    assert store.lease("r") is None


def test_unfinished_nodes_are_the_starts_without_an_end(store):
    store.append_event(event("r", "node_start", node_id="a", attempt=1))
    store.append_event(event("r", "node_end", node_id="a", attempt=1, status="FAILED"))
    store.append_event(event("r", "node_start", node_id="a", attempt=2))
    store.append_event(event("r", "node_start", node_id="b", attempt=1))
    store.append_event(event("r", "node_end", node_id="b", attempt=1, status="COMPLETED"))
    assert [(e["node_id"], e["attempt"]) for e in store.unfinished_nodes("r")] == [("a", 2)]


# ------------------------------------------------------------------------------ the runner
def test_reclaim_fails_a_dead_processes_running_run_and_starts_its_queued_one(runner, store, tmp_path):
    workflow = store.create(chain(START, task("one", "counted"), END), "test")
    variables = {"ledger": str(tmp_path / "ledger")}
    running, queued = str(uuid.uuid4()), str(uuid.uuid4())  # Dagster run ids are UUIDs
    # What a process that died left: one run mid-node, one still in its queue, leases not renewed.
    for run_id in (running, queued):
        store.create_run(run_id, workflow["workflow_id"], 1, "x", variables, "api", owner="dead",
                         lease_seconds=0)
    store.append_event(event(running, "run_started"), status="RUNNING")
    store.append_event(event(running, "node_start", node_id="one", node_type="task", attempt=1))

    done = runner.reclaim()

    assert done == {"interrupted": [running], "adopted": [queued]}
    failed = store.run(running)
    assert failed["status"] == "FAILED" and failed["error"].startswith("interrupted")
    node_end = [e for e in store.run_events(running) if e["type"] == "node_end"]
    assert [(e["node_id"], e["status"]) for e in node_end] == [("one", "FAILED")]
    assert node_end[0]["error"].startswith("interrupted")
    assert store.lease(running) is None
    assert runner.wait(queued, timeout=120)["status"] == "COMPLETED"
    assert store.count_active() == 0
    assert runner.reclaim() == {"interrupted": [], "adopted": []}  # nothing left to reclaim


def test_a_live_runs_lease_is_renewed_and_it_is_never_reclaimed(runner, store):
    timer = {"node_id": "wait", "type": "timer", "config": {"seconds": 60}}
    workflow = store.create(chain(START, timer, END), "test")
    run = runner.start(workflow["workflow_id"], 1, {}, "test")
    first = store.lease(run["run_id"])["renewed_at"]
    wait_for(lambda: store.lease(run["run_id"])["renewed_at"] > first, what="a renewal")
    assert runner.reclaim() == {"interrupted": [], "adopted": []}
    assert runner.cancel(run["run_id"])
    assert runner.wait(run["run_id"], timeout=60)["status"] == "CANCELLED"


def test_a_run_whose_lease_was_taken_over_stops_and_records_no_end(runner, store):
    timer = {"node_id": "wait", "type": "timer", "config": {"seconds": 60}}
    workflow = store.create(chain(START, timer, END), "test")
    run_id = runner.start(workflow["workflow_id"], 1, {}, "test")["run_id"]
    wait_for(lambda: any(e["type"] == "node_start" and e["node_id"] == "wait"
                         for e in store.run_events(run_id)), what="the timer to start")
    # This process stalls past its expiry; another one takes the run over.
    assert store.take_lease(run_id, "other", 30, now=time.time() + 3600)
    runner.wait(run_id, timeout=60)  # the next renewal finds the lease gone and stops the run
    assert not any(e["type"].startswith("run_") and e["type"] != "run_started"
                   for e in store.run_events(run_id))
    assert store.lease(run_id)["owner"] == "other"
    assert runner.futures == {}


def test_cancel_of_an_orphan_reclaims_it_cancelled(runner, store):
    store.create_run("r", "wf", 1, "wf_v1", {}, "api", owner="dead", lease_seconds=0)
    store.append_event(event("r", "run_started"), status="RUNNING")
    assert not runner.cancel("r")  # not this process's run
    assert runner.cancel_orphan("r", "ops")
    run = store.run("r")
    assert run["status"] == "CANCELLED" and run["error"].startswith("interrupted: cancelled by ops")
    assert not runner.cancel_orphan("r", "ops")


def test_resume_reuses_completed_nodes_and_keeps_the_root(runner, store, tmp_path):
    gate_file, ledger = tmp_path / "gate", tmp_path / "ledger"
    spec = chain(START, task("before", "counted"), task("check", "gate"), task("after", "counted"), END)
    workflow = store.create(spec, "test")
    first = runner.start(workflow["workflow_id"], 1, {"gate": str(gate_file), "ledger": str(ledger)}, "t")
    assert runner.wait(first["run_id"], timeout=120)["status"] == "FAILED"
    second = runner.resume(first["run_id"], "t")  # still failing: the chain keeps its root
    assert runner.wait(second["run_id"], timeout=120)["status"] == "FAILED"
    gate_file.touch()
    third = runner.resume(second["run_id"], "t")
    done = runner.wait(third["run_id"], timeout=120)

    assert done["status"] == "COMPLETED"
    assert (third["parent_run_id"], third["root_run_id"]) == (second["run_id"], first["run_id"])
    assert (second["parent_run_id"], second["root_run_id"]) == (first["run_id"], first["run_id"])
    executed = ledger.read_text().split("\n")[:-1]
    assert executed == [f"{first['run_id']} before", f"{first['run_id']} check",
                        f"{second['run_id']} check", f"{third['run_id']} check", f"{third['run_id']} after"]
    reused = {e["node_id"]: e["reused_from"] for e in store.run_events(third["run_id"])
              if e["type"] == "node_end" and "reused_from" in e}
    assert reused == {"start": first["run_id"], "before": first["run_id"]}
    assert done["results"]["before"] == {"node": "before"}  # the reused output flowed on
    with pytest.raises(NotResumable, match="COMPLETED"):
        runner.resume(third["run_id"], "t")
    with pytest.raises(KeyError):
        runner.resume("no-such-run", "t")


def test_resume_of_an_active_run_is_refused(runner, store):
    timer = {"node_id": "wait", "type": "timer", "config": {"seconds": 60}}
    workflow = store.create(chain(START, timer, END), "test")
    run_id = runner.start(workflow["workflow_id"], 1, {}, "test")["run_id"]
    with pytest.raises(NotResumable, match="still"):
        runner.resume(run_id, "t")
    runner.cancel(run_id)
    assert runner.wait(run_id, timeout=60)["status"] == "CANCELLED"


# ---------------------------------------------------------------------- the idempotency key
def test_the_idempotency_key_depends_on_the_root_run_and_node_only():
    key = executors.idempotency_key("root", "notify")
    assert key == executors.idempotency_key("root", "notify")
    assert key != executors.idempotency_key("root", "other")
    assert key != executors.idempotency_key("another-root", "notify")


@pytest.fixture
def receiver():
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_http_calls_carry_the_key_of_the_root_run_unless_the_node_sets_one(receiver, settings):
    url, seen = receiver
    meta = {"run_id": "resumed", "root_run_id": "root", "node_id": "notify", "attempt": 2}
    executors.execute(TaskTemplate(executor="http", config={"url": url}), {}, meta, settings=settings)
    own = TaskTemplate(executor="external", config={"url": url, "headers": {"idempotency-key": "mine"}})
    executors.execute(own, {}, meta, settings=settings)
    assert seen[0]["Idempotency-Key"] == executors.idempotency_key("root", "notify")
    assert seen[1]["idempotency-key"] == "mine" and "Idempotency-Key" not in seen[1]
