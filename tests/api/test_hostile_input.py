"""Hostile input against a real uvicorn: nothing a client sends turns into a 5xx, a refused request
writes nothing, and one bad value already in the store never breaks a read.

The fuzz takes a valid body of every JSON write the API has (config, flags, secrets, restore,
admin, workflows, templates, runs) and puts one hostile JSON fragment
(out-of-range and non-finite numbers, lone surrogates, deep nesting, strings where booleans and
numbers belong, huge strings) at one of its places, chosen by Hypothesis. schemathesis
(test_schemathesis.py) fuzzes from the OpenAPI document; this one starts from bodies that pass
validation, so the hostile part reaches as far into the handlers as it can.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.api.conftest import ADMIN_TOKEN
from tests.api.workflows.support import chain, create, task

pytestmark = pytest.mark.integration

#: Raw JSON fragments that Python's parser takes and JSON cannot carry back, or that a lax
#: validator coerces into something the client did not send.
HOSTILE = [b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b'"\\ud800"', b'"\\udfff x"',
           b"[" * 300 + b"]" * 300, b'{"a":' * 300 + b"1" + b"}" * 300, b'"yes"', b'"11.5"', b'"1"',
           b"123456789012345678901234567890", b"-0.0", b"1e-400", b'"' + b"x" * 70_000 + b'"', b"{}",
           b"[]", b"null", b"true"]

#: A valid body of each JSON write (method, path, body): the fuzz's starting points.
WRITES = [
    ("POST", "/config", {"key": "fuzz.item", "value": {"n": 1, "l": [1.5, "s"]}, "comment": "c",
                         "tenant": "org:fuzz", "expected_version": None}),
    ("POST", "/config/batch", {"items": [{"key": "fuzz.batch", "value": [1, {"x": 2}], "comment": "c"}]}),
    ("PUT", "/config/features/fuzz_flag", {"enabled": True, "rollout_percent": 50, "description": "d",
                                           "context_key": "userId", "tenant": "org:fuzz"}),
    ("POST", "/config/secrets/fuzz_secret", {"secret_value": "s3cret", "comment": "c"}),
    ("POST", "/config/backup/restore", {"format": 1, "items": [
        {"kind": "config", "key": "fuzz.restored", "value": {"a": [1, 2]}, "comment": "c"}]}),
    ("POST", "/admin/models/rl_agent/promote", {"version": 1, "force": False, "reason": "r"}),
    ("POST", "/admin/models/rl_agent/archive", {"version": 1}),
    ("POST", "/workflows/", chain("fuzz", task("one", "noop"), variables={"a": 1, "b": [True, "x"]})),
    ("POST", "/workflows/validate", chain("fuzz_check", task("one", "noop"))),
    ("POST", "/workflows/templates", {"name": "fuzz_tpl", "description": "d", "template": {
        "executor": "python", "config": {"callable": "workflows.tasks:noop"}, "timeout_seconds": 5}}),
    ("POST", "/workflows/run/start", {"workflow_id": "{workflow}",  # the module's workflow
                                      "input_variables": {"n": 1, "l": [1, "s"]}}),
]


def places(body: Any, where: tuple = ()) -> list[tuple]:
    """Every place in ``body`` a value can be replaced: each key's value and each list element."""
    found = [where] if where else []
    if isinstance(body, dict):
        for key, value in body.items():
            found += places(value, (*where, key))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found += places(value, (*where, index))
    return found


def with_fragment(body: Any, where: tuple, fragment: bytes) -> bytes:
    """``body`` as JSON bytes with the raw ``fragment`` at ``where``."""
    marker = "\u2603fuzz\u2603"
    copy = json.loads(json.dumps(body))
    node = copy
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = marker
    return json.dumps(copy).encode().replace(json.dumps(marker).encode(), fragment)


@st.composite
def hostile_requests(draw):
    method, path, body = draw(st.sampled_from(WRITES))
    where = draw(st.sampled_from(places(body)))
    return method, path, with_fragment(body, where, draw(st.sampled_from(HOSTILE)))


def revision(client) -> int:
    return client.get("/config/snapshot").json()["revision"]


def state(client) -> tuple:
    """What a refused request must leave as it was: the config revision, the workflows, their
    runs and the templates."""
    return (revision(client), len(client.get("/workflows/").json()["workflows"]),
            len(client.get("/workflows/runs", params={"limit": 1000}).json()["runs"]),
            len(client.get("/workflows/templates").json()["templates"]))


READERS = ("/config", "/config/features", "/config/snapshot", "/config/backup", "/workflows/",
           "/workflows/runs", "/workflows/templates", "/workflows/health")


@pytest.fixture(scope="module")
def workflow(server) -> str:
    with server.client("operator") as operator:
        return create(operator, chain("fuzz_target", task("one", "noop")))


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=hostile_requests())
def test_no_hostile_body_is_a_server_error_and_a_refused_one_writes_nothing(server, workflow, request):
    method, path, content = request
    content = content.replace(b'"{workflow}"', json.dumps(workflow).encode())
    with server.client("admin") as admin:
        before = state(admin)
        response = admin.request(method, path, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code < 500, (method, path, content[:200], response.text[:500])
        if response.status_code >= 400:
            assert state(admin) == before, (method, path, content[:200], response.text[:300])
        for reader in READERS:
            assert admin.get(reader).status_code == 200, (reader, method, path, content[:200])


@pytest.mark.parametrize("method,path,content", [
    ("POST", "/config", b'{"key": "big.number", "value": 1e400}'),
    ("POST", "/config", b'{"key": "big.number", "value": {"deep": [1, -1e400]}}'),
    ("POST", "/config/batch", b'{"items": [{"key": "big.batch", "value": 1e400}]}'),
    ("POST", "/config/backup/restore", b'{"format": 1, "items": [{"kind": "config", "key": "big.r", '
                                       b'"value": 1e400}]}'),
    ("PUT", "/config/features/big_flag", b'{"enabled": true, "rollout_percent": 1e400}'),
])
def test_a_number_out_of_range_is_a_422_that_says_where(server, method, path, content):
    with server.client("admin") as admin:
        before = revision(admin)
        response = admin.request(method, path, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert "out of range" in response.text and "$." in response.text
        assert revision(admin) == before


@pytest.mark.parametrize("body", [
    {"key": "lax.secret", "value": "v", "is_secret": "yes"},
    {"key": "lax.version", "value": "v", "expected_version": "1"},
])
def test_booleans_and_numbers_are_json_booleans_and_numbers(server, body):
    with server.client("admin") as admin:
        assert admin.post("/config", json=body).status_code == 422
        assert admin.put("/config/features/lax_flag", json={"enabled": "yes"}).status_code == 422
        assert admin.put("/config/features/lax_flag", json={"enabled": 1}).status_code == 422
        assert admin.put("/config/features/lax_flag",
                         json={"enabled": True, "rollout_percent": "50"}).status_code == 422
        fine = admin.put("/config/features/lax_flag", json={"enabled": True, "rollout_percent": 50})
        assert fine.is_success, fine.text


def test_a_refused_secret_is_never_echoed(server):
    plaintext = "hunter2-" * 3000  # over the 16,384 characters a secret may have
    with server.client("admin") as admin:
        too_long = admin.post("/config/secrets/echo_me", json={"secret_value": plaintext})
        deep = admin.post("/config", json={"key": "echo.me", "is_secret": True,
                                           "value": {"pw": "hunter2"} | {"x": [[[[[[[[1]]]]]]]]} | {
                                               "too": "hunter2" * 10, "n": json.loads("[" * 70 + "]" * 70)}})
    assert too_long.status_code == 422 and "hunter2" not in too_long.text
    assert too_long.json()["detail"][0]["loc"] == ["body", "secret_value"]
    assert deep.status_code == 422 and "hunter2" not in deep.text


def test_a_stored_value_json_cannot_carry_is_read_as_null_not_a_500(server):
    """A row written before the API refused non-finite numbers (here: by hand) holds Infinity."""
    with server.client("admin") as admin:
        assert admin.post("/config", json={"key": "legacy.inf", "value": 1}).is_success
        with sqlite3.connect(server.home / "prioritymax.db") as db:
            changed = db.execute("UPDATE config_items SET value = 'Infinity' "
                                 "WHERE key = 'legacy.inf'").rowcount
        assert changed == 1
        assert admin.post("/config/reload").is_success
        for reader in ("/config", "/config/snapshot", "/config/backup", "/config/legacy.inf"):
            answer = admin.get(reader)
            assert answer.status_code == 200, (reader, answer.text)
        assert admin.get("/config/legacy.inf").json()["value"] is None


def test_a_websocket_since_that_is_not_a_number_closes_with_4422(server):
    for since in ("abc", "-1", "1.5", "%C2%B2"):
        with pytest.raises(ConnectionClosed) as refused, \
                connect(f"{server.ws_url}?token={ADMIN_TOKEN}&since={since}") as socket:
            socket.recv(timeout=5)
        assert refused.value.rcvd.code == 4422, since
