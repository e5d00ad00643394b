"""examples/order_workflow_local.json end to end on a real uvicorn server: created and run through the
API as a new user would, its payment step POSTs to the API's own mock route (api/mock_payments.py)
and the run ends COMPLETED with the mock's payment record as that node's result."""

from __future__ import annotations

import json

import pytest

from orchestration.workflows.executors import idempotency_key
from prioritymax.settings import REPO_ROOT
from tests.api.conftest import start_server, stop_server
from tests.api.workflows.support import create, run_to_end

pytestmark = pytest.mark.integration

LOCAL_EXAMPLE = REPO_ROOT / "examples" / "order_workflow_local.json"
#: Where the example expects the API: `pmx api`'s default address.
DEFAULT_API = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("local-example"), roles=("operator",))
    yield running
    output = stop_server(running)
    assert "Traceback" not in output, output


def the_example_on(server) -> dict:
    """The example as written, but for the API's port: the test server cannot hold 8000."""
    spec = json.loads(LOCAL_EXAMPLE.read_text())
    payment = next(n for n in spec["nodes"] if n["node_id"] == "payment")["template"]["config"]
    assert payment["url"] == f"{DEFAULT_API}/mock/payments"
    payment["url"] = payment["url"].replace(DEFAULT_API, server.url)
    return spec


def test_the_local_example_runs_green_and_pays_with_the_mock(server):
    spec = the_example_on(server)
    with server.client("operator") as operator:
        run = run_to_end(operator, create(operator, spec), {"order_id": 123})
        assert run["status"] == "COMPLETED", run
        assert run["results"]["verify"] == {"verified": True, "order_id": 123}
        paid = run["results"]["payment"]
        assert paid["status_code"] == 201, paid
        record = paid["body"]
        assert record["status"] == "captured" and record["mock"] is True
        assert record["payment_id"].startswith("pay_")
        assert (record["order_id"], record["amount"], record["currency"]) == (
            123, spec["variables"]["amount"], spec["variables"]["currency"])
        # The node's Idempotency-Key reached the mock: a repeat of its call charges nothing again.
        assert record["idempotency_key"] == idempotency_key(run["run_id"], "payment")
    with server.client(None) as anonymous:  # as the http node calls it: no token
        repeat = anonymous.post("/mock/payments", headers={"Idempotency-Key": record["idempotency_key"]},
                                json={"order_id": 123, **spec["variables"]})
    assert repeat.status_code == 200, repeat.text
    assert repeat.json() == record


def test_a_run_without_an_amount_fails_at_the_payment_with_the_mocks_reason(server):
    spec = the_example_on(server)
    spec["variables"].pop("amount")
    with server.client("operator") as operator:
        run = run_to_end(operator, create(operator, spec), {"order_id": 123})
    assert run["status"] == "FAILED", run
    payment = next(n for n in run["nodes"] if n["node_id"] == "payment")
    assert "HTTP 422" in payment["error"] and "amount" in payment["error"], payment
