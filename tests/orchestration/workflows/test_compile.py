"""Specs compiled to Dagster jobs and run by the runner in-process, on the test's data home: the job's
structure (ops, fan-ins, retry policies, nested graphs), runs of each node type, several runs at
once on one instance, and the stored workflows in the code location."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from orchestration.workflows.compile import compile_workflow, job_name
from orchestration.workflows.runner import WorkflowRunner
from orchestration.workflows.runtime import WorkflowRecorder
from orchestration.workflows.spec import WorkflowSpec
from orchestration.workflows.store import WorkflowStore
from prioritymax.settings import get_settings


def task(node_id: str, callable_: str = "workflows.tasks:echo", **template) -> dict:
    return {"node_id": node_id, "type": "task",
            "template": {"executor": "python", "config": {"callable": callable_}, **template}}


def chain(*nodes: dict) -> dict:
    ids = [n["node_id"] for n in nodes]
    return {"name": "chain", "nodes": list(nodes),
            "edges": [{"source": a, "target": b} for a, b in zip(ids, ids[1:], strict=False)]}


START, END = {"node_id": "start", "type": "start"}, {"node_id": "end", "type": "end"}
SWITCH = {
    "name": "switch", "nodes": [START, {"node_id": "route", "type": "switch"}, task("big"), task("small"),
                                {"node_id": "merge", "type": "join"}, END],
    "edges": [{"source": "start", "target": "route"},
              {"source": "route", "target": "big", "condition": "input.amount > 100"},
              {"source": "route", "target": "small", "default": True},
              {"source": "big", "target": "merge"}, {"source": "small", "target": "merge"},
              {"source": "merge", "target": "end"}]}


@pytest.fixture
def runner():
    settings = get_settings()
    store = WorkflowStore.from_settings(settings)
    runner = WorkflowRunner(store, WorkflowRecorder(store, settings), settings)
    yield runner
    runner.shutdown()


def run(runner: WorkflowRunner, spec: dict, variables: dict | None = None) -> tuple[dict, list[dict]]:
    workflow = runner.store.create(spec, "test")
    started = runner.start(workflow["workflow_id"], 1, variables or {}, "test")
    finished = runner.wait(started["run_id"], timeout=120)
    return finished, runner.store.run_events(started["run_id"])


def test_the_job_mirrors_the_spec():
    spec = WorkflowSpec.model_validate(SWITCH | {"nodes": [*SWITCH["nodes"][:2],
                                                           task("big", retry_policy={"max_retries": 2,
                                                                                     "backoff_seconds": 1}),
                                                           *SWITCH["nodes"][3:]]})
    job = compile_workflow(spec, workflow_id="wf_x", version=3)
    assert job.name == job_name("wf_x", 3) == "wf_x_v3"
    assert {node.name for node in job.graph.nodes} == {"start", "route", "big", "small", "merge", "end"}
    route = job.graph.node_named("route").definition
    assert set(route.output_dict) == {"to_big", "to_small"}
    assert not any(out.is_required for out in route.output_defs)
    assert job.graph.node_named("big").definition.retry_policy == dg.RetryPolicy(
        max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL)
    merge_input = job.graph.dependency_structure.get_deps_list(
        job.graph.node_named("merge").get_input("upstream"))
    assert len(merge_input) == 2  # a fan-in over both branches
    assert job.tags["workflow/id"] == "wf_x"


def test_a_switch_takes_one_branch_and_the_join_still_runs(runner):
    finished, events = run(runner, SWITCH, {"amount": 250})
    assert finished["status"] == "COMPLETED"
    started = [e["node_id"] for e in events if e["type"] == "node_start"]
    assert started == ["start", "route", "big", "merge", "end"]
    assert finished["results"]["route"]["chosen"] == "big"
    assert finished["results"]["big"]["payload"]["amount"] == 250
    finished, events = run(runner, SWITCH, {"amount": 5})
    assert [e["node_id"] for e in events if e["type"] == "node_start"] == ["start", "route", "small", "merge",
                                                                          "end"]


def test_upstream_results_reach_downstream_nodes(runner):
    spec = chain(START, task("verify", "workflows.tasks:verify_order"), task("after"), END)
    finished, _ = run(runner, spec, {"order_id": 7})
    assert finished["results"]["after"]["payload"]["upstream"]["verify"] == {"verified": True, "order_id": 7}


def test_a_subworkflow_runs_as_a_nested_graph(runner):
    inner = runner.store.create(chain(START, task("inner"), END), "test")
    outer = chain(START, {"node_id": "sub", "type": "subworkflow",
                          "config": {"workflow_id": inner["workflow_id"]}}, task("after"), END)
    finished, events = run(runner, outer, {"x": 1})
    assert finished["status"] == "COMPLETED"
    started = [e["node_id"] for e in events if e["type"] == "node_start"]
    assert started == ["start", "sub.start", "sub.inner", "sub.end", "after", "end"]
    assert "sub.inner" in finished["results"]["after"]["payload"]["upstream"]


def test_retries_follow_the_policy_and_a_failure_keeps_earlier_results(runner):
    flaky = task("flaky", "workflows.tasks:flaky", retry_policy={"max_retries": 2, "backoff_seconds": 0})
    finished, events = run(runner, chain(START, task("first"), flaky, END), {"fail_times": 2})
    assert finished["status"] == "COMPLETED"
    assert [e["attempt"] for e in events if e["type"] == "node_retry"] == [1, 2]
    finished, events = run(runner, chain(START, task("first"), flaky, END), {"fail_times": 5})
    assert finished["status"] == "FAILED"
    assert "flaky" in finished["error"] and "first" in finished["results"]
    flaky_ends = [e["status"] for e in events if e["type"] == "node_end" and e["node_id"] == "flaky"]
    assert flaky_ends == ["FAILED"] * 3


def test_several_runs_share_one_instance_at_once(runner):
    timer = {"node_id": "wait", "type": "timer", "config": {"seconds": 0.3}}
    workflow = runner.store.create(chain(START, timer, task("after"), END), "test")
    runs = [runner.start(workflow["workflow_id"], 1, {"i": i}, "test") for i in range(4)]
    finished = [runner.wait(r["run_id"], timeout=120) for r in runs]
    assert [f["status"] for f in finished] == ["COMPLETED"] * 4
    dagster_runs = {r.run_id: r for r in runner.instance.get_runs()}
    for r in runs:
        assert dagster_runs[r["run_id"]].status == dg.DagsterRunStatus.SUCCESS
        assert dagster_runs[r["run_id"]].job_name == workflow_job(workflow)


def test_a_cancelled_run_stops_and_says_so(runner):
    timer = {"node_id": "wait", "type": "timer", "config": {"seconds": 30}}
    workflow = runner.store.create(chain(START, timer, task("never"), END), "test")
    started = runner.start(workflow["workflow_id"], 1, {}, "test")
    events, deadline = [], time.monotonic() + 120
    while not any(e["type"] == "node_start" and e["node_id"] == "wait" for e in events):
        assert time.monotonic() < deadline, events  # a run that failed early must not hang the test
        time.sleep(0.02)
        events = runner.store.run_events(started["run_id"])
    assert runner.cancel(started["run_id"])
    finished = runner.wait(started["run_id"], timeout=120)
    assert finished["status"] == "CANCELLED", runner.store.run_events(started["run_id"])
    assert "never" not in [e["node_id"] for e in runner.store.run_events(started["run_id"])
                           if e["type"] == "node_start"]
    assert not runner.cancel(started["run_id"])


def test_the_code_location_exposes_stored_workflows_as_jobs(runner):
    workflow = runner.store.create(chain(START, task("only"), END), "test")
    runner.store.update(workflow["workflow_id"], chain(START, task("only"), task("second"), END), "test")
    from orchestration.workflows.location import workflow_jobs, workflow_runs_sensor

    jobs = {job.name: job for job in workflow_jobs()}
    assert workflow_job(workflow, version=2) in jobs  # the latest version
    instance = dg.DagsterInstance.ephemeral()
    result = jobs[workflow_job(workflow, version=2)].execute_in_process(
        run_config={"ops": {"start": {"config": {"variables": {"k": 1}}}}}, instance=instance)
    assert result.success
    recorded = runner.store.run(result.run_id)  # a run launched outside the API is recorded too
    assert recorded["workflow_id"] == workflow["workflow_id"] and recorded["status"] == "RUNNING"
    assert [e["node_id"] for e in runner.store.run_events(result.run_id) if e["type"] == "node_start"] == [
        "start", "only", "second", "end"]
    # No API runner saw it end: the sensor closes the record, with the results its nodes recorded.
    workflow_runs_sensor(dg.build_sensor_context(instance=instance))
    closed = runner.store.run(result.run_id)
    assert closed["status"] == "COMPLETED"
    assert closed["results"]["second"]["payload"]["k"] == 1


def test_a_changed_template_recompiles_the_versions_that_use_it(runner):
    runner.store.put_template("greeting", {"executor": "python",
                                           "config": {"callable": "workflows.tasks:echo"}}, "test")
    workflow = runner.store.create(chain(START, {"node_id": "hi", "type": "task", "template_ref": "greeting"},
                                         END), "test")
    _, first = runner.job(workflow["workflow_id"], 1)
    assert runner.job(workflow["workflow_id"], 1)[1] is first  # cached while nothing changed
    # Saved through the store, as another replica would: this runner must notice on its own.
    runner.store.put_template("greeting", {"executor": "python",
                                           "config": {"callable": "workflows.tasks:fail"}}, "test")
    greet = {"node_id": "hi", "type": "task", "template_ref": "greeting"}
    finished, _ = run(runner, chain(START, greet, END))
    assert finished["status"] == "FAILED" and "failed on purpose" in finished["error"]
    assert runner.job(workflow["workflow_id"], 1)[1] is not first


def test_shutdown_ends_queued_runs_cancelled(monkeypatch):
    monkeypatch.setenv("WORKFLOW_MAX_CONCURRENT_RUNS", "1")
    get_settings.cache_clear()
    settings = get_settings()
    store = WorkflowStore.from_settings(settings)
    one_at_a_time = WorkflowRunner(store, WorkflowRecorder(store, settings), settings)
    timer = {"node_id": "wait", "type": "timer", "config": {"seconds": 30}}
    workflow = store.create(chain(START, timer, END), "test")
    first, queued = (one_at_a_time.start(workflow["workflow_id"], 1, {}, "test") for _ in range(2))
    assert store.run(queued["run_id"])["status"] == "PENDING"
    one_at_a_time.shutdown()
    assert store.run(first["run_id"])["status"] == "CANCELLED"
    assert store.run(queued["run_id"])["status"] == "CANCELLED"
    assert one_at_a_time.futures == {}


def workflow_job(workflow: dict, version: int = 1) -> str:
    return job_name(workflow["workflow_id"], version)
