"""The example task callables in ``workflows.tasks`` and the seed's example spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration.workflows.executors import ExecutorError, execute
from orchestration.workflows.spec import WorkflowSpec
from prioritymax.settings import REPO_ROOT, Settings
from workflows import tasks

META = {"workflow_id": "wf", "version": 1, "run_id": "r1", "node_id": "verify", "attempt": 1,
        "variables": {}, "results": {}}
EXAMPLE = REPO_ROOT / "examples" / "order_workflow.json"


def test_verify_order_prints_and_verifies(capsys):
    assert tasks.verify_order({"order_id": "A-1", "amount": 3}, META) == {"verified": True, "order_id": "A-1"}
    assert capsys.readouterr().out.startswith("Verifying order: {'order_id': 'A-1'")


def test_verify_order_needs_an_order_id():
    with pytest.raises(ValueError, match="no order_id"):
        tasks.verify_order({"amount": 3}, META)


def test_small_callables():
    assert tasks.noop({"x": 1}, META) == {}
    assert tasks.echo({"x": 1}, META) == {"payload": {"x": 1}, "node_id": "verify"}
    assert tasks.sleep({"seconds": 0.01}, META) == {"slept": 0.01}
    with pytest.raises(RuntimeError):
        tasks.fail({}, META)
    with pytest.raises(RuntimeError, match="custom"):
        tasks.fail({"message": "custom"}, META)


def test_flaky_fails_fail_times_attempts():
    with pytest.raises(RuntimeError):
        tasks.flaky({}, {**META, "attempt": 1})
    assert tasks.flaky({}, {**META, "attempt": 2}) == {"attempt": 2}
    assert tasks.flaky({"fail_times": 0}, META) == {"attempt": 1}


def test_example_spec_is_the_seeds_order_workflow(tmp_path: Path):
    data = json.loads(EXAMPLE.read_text())
    spec = WorkflowSpec.model_validate(data)
    assert spec.name == "Order Processing"
    assert [n.node_id for n in spec.nodes] == ["start", "verify", "payment", "end"]
    assert [(e.source, e.target) for e in spec.edges] == [("start", "verify"), ("verify", "payment"),
                                                          ("payment", "end")]
    nodes = {node.node_id: node for node in spec.nodes}
    verify = nodes["verify"]
    assert verify.template.retry_policy.max_retries == 2
    assert nodes["payment"].template.timeout_seconds == 15
    # The verify node's callable runs through the python executor.
    settings = Settings(PRIORITYMAX_HOME=str(tmp_path))
    assert execute(verify.template, {"order_id": 42}, META, settings=settings) == {
        "verified": True, "order_id": 42}
    with pytest.raises(ExecutorError, match="ValueError"):
        execute(verify.template, {}, META, settings=settings)
