"""The workflow store on the test's SQLite data home: event sequence numbers, results from events."""

from __future__ import annotations

import time

from orchestration.workflows.store import WorkflowStore
from prioritymax.settings import get_settings


def event(run_id: str, kind: str, **fields) -> dict:
    return {"type": kind, "run_id": run_id, "workflow_id": "wf", "version": 1, "at": time.time(), **fields}


def test_a_seq_is_never_reused_after_retention_deletes_the_newest_events():
    store = WorkflowStore.from_settings(get_settings())
    store.create_run("old", "wf", 1, "wf_v1", {}, "test")
    seqs = [store.append_event(event("old", "run_started", at=time.time() - 20), status="RUNNING"),
            store.append_event(event("old", "run_completed", at=time.time() - 10), status="COMPLETED")]
    assert store.cleanup(older_than=time.time())["events_deleted"] == 2
    assert store.latest_seq() == 0
    # A subscriber at seq 2 must see the next event as new: its seq comes after every seq handed out.
    assert store.append_event(event("new", "run_started")) > max(seqs)


def test_node_results_come_from_completed_node_ends_in_order():
    store = WorkflowStore.from_settings(get_settings())
    store.append_event(event("r", "node_end", node_id="a", status="COMPLETED", result={"v": 1}))
    store.append_event(event("r", "node_end", node_id="b", status="FAILED", error="no"))
    store.append_event(event("r", "node_end", node_id="a", status="COMPLETED", result={"v": 2}))
    store.append_event(event("r", "node_end", node_id="c", status="COMPLETED"))  # no result
    assert store.node_results("r") == {"a": {"v": 2}}
