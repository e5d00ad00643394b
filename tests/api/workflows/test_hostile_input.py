"""Hostile input to the workflows API (a real uvicorn): refused with a 4xx that says why, nothing
stored, nothing broken for the readers after it."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.api.conftest import ADMIN_TOKEN, start_server, stop_server
from tests.api.workflows.support import chain, create, task

pytestmark = pytest.mark.integration

READERS = ("/workflows/runs", "/workflows/", "/workflows/templates", "/workflows/health")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("wf-hostile-home"))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def workflow_id(server):
    with server.client("operator") as operator:
        return create(operator, chain("hostile", task("one", "noop")))


def runs(client) -> list:
    return client.get("/workflows/runs").json()["runs"]


@pytest.mark.parametrize("variables, why", [
    (b'{"x": 1e400}', "out of range"),
    (b'{"x": [' + b"[" * 300 + b"]" * 300 + b"]}", "nested"),
    (b'{"x": ' + b"[" * 80 + b"]" * 80 + b"}", "nested more than 64"),
    (json.dumps({"x": "y" * 300_000}).encode(), "at most 262144"),
])
def test_run_variables_out_of_range_too_deep_or_too_big_are_a_422_and_start_nothing(server, workflow_id,
                                                                                   variables, why):
    body = b'{"workflow_id": "' + workflow_id.encode() + b'", "input_variables": ' + variables + b"}"
    with server.client("operator") as operator:
        before = runs(operator)
        refused = operator.post("/workflows/run/start", content=body,
                                headers={"Content-Type": "application/json"})
        assert refused.status_code == 422 and why in refused.text, refused.text[:500]
        assert runs(operator) == before
        for reader in READERS:
            assert operator.get(reader).status_code == 200, reader


@pytest.mark.parametrize("template, why", [
    ({"executor": "shell", "config": {"command": "rm -rf /"}}, "unknown executor 'shell'"),
    ({"executor": "http", "config": {"url": "file:///etc/passwd"}}, "must use http or https"),
    ({"executor": "python", "config": {"callable": "os:system"}}, "module 'os' is not allowed"),
])
def test_a_template_is_checked_like_a_spec_task(server, template, why):
    with server.client("operator") as operator:
        refused = operator.post("/workflows/templates", json={"name": "bad_tpl", "template": template})
        assert refused.status_code == 422 and why in refused.text, refused.text
        assert operator.get("/workflows/templates/bad_tpl").status_code == 404


def test_health_is_open_and_shows_no_server_path(server):
    with server.client(None) as anyone:
        health = anyone.get("/workflows/health")
    assert health.status_code == 200 and health.json()["ok"] is True
    assert str(server.home) not in health.text and "/" not in json.dumps(
        {k: v for k, v in health.json().items() if isinstance(v, str)})


def test_a_websocket_since_that_is_not_a_number_closes_with_4422(server):
    url = f"{server.url.replace('http', 'ws')}/workflows/ws/workflows?token={ADMIN_TOKEN}&since=abc"
    with pytest.raises(ConnectionClosed) as refused, connect(url) as ws:
        ws.recv(timeout=5)
    assert refused.value.rcvd.code == 4422
