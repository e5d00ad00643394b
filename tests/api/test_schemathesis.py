"""Property-based fuzzing of every /config operation in the live server's OpenAPI document with
schemathesis 4: valid and invalid requests, sent with the admin token so the handlers (not just
the auth check) run, must never be answered with a 5xx (the ``not_a_server_error`` check).

Why the ``st run`` command and not ``schemathesis.pytest.from_fixture(...).parametrize()``: that
pytest integration (4.32.5) reads and rewrites ``request.node._nodeid``, which pytest 9 no longer
has, so every such test dies with ``AttributeError: 'Function' object has no attribute
'_nodeid'``. The command also runs all four phases (examples, coverage - boundary values such as
the huge version number that once reached SQLite as a 500 -, fuzzing, stateful), with a fixed
seed so a failure reproduces; its JUnit report tells which operations ran and which failed.

One operation is excluded, :data:`EXCLUDED`: it launches a real Dagster run through Dagster's
webserver, so with one running the fuzzer would start training runs, and without one its answer is
the documented 503 (test_admin_roles.py, and tests/orchestration/test_launch.py with a webserver).
The test asserts that every other operation of the document was tested. The
WebSocket (/config/ws/config) is not an OpenAPI operation, so it is not in the document;
test_config_api.py and test_roles.py cover it. The server is this module's own (the ``server``
fixture is module-scoped), so the garbage written here reaches no other test. It runs without
S3_BUCKET: POST /config/backup/upload must then be a 400, whereas an S3 that fails would rightly be
a 502 (test_backups_alerts.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.api.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.integration

#: Per operation (fuzzing); ~40 s on 2 cores for the 28 operations and all phases.
MAX_EXAMPLES = 15
SEED = 20240611
EXCLUDED = {"POST /admin/training/{job}"}


def test_no_operation_answers_with_a_server_error(server, tmp_path):
    with server.client("viewer") as viewer:
        paths = viewer.get("/openapi.json").json()["paths"]
    operations = {f"{method.upper()} {path}" for path, methods in paths.items() for method in methods}
    # A second seed when the first run reports an error: schemathesis 4.32 / Hypothesis sometimes
    # stop an operation with an internal error of their own ("AST constructor recursion depth
    # mismatch"), seen once in ~10 runs. A real 5xx reproduces with its seed and fails both.
    for seed in (SEED, SEED + 1):
        run, failed, tested, output = _fuzz(server, tmp_path / str(seed), seed)
        if not failed and run.returncode == 0:
            break
    assert not failed, f"operations answered with a 5xx (or errored): {failed}\n{output}"
    assert operations - EXCLUDED <= tested, f"not tested: {sorted(operations - EXCLUDED - tested)}\n{output}"
    assert not EXCLUDED & tested
    assert run.returncode == 0, output


def _fuzz(server, folder: Path, seed: int):
    folder.mkdir()
    st = Path(sys.executable).with_name("st")
    command = [str(st), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
               "--header", f"Authorization: Bearer {ADMIN_TOKEN}", "--max-examples", str(MAX_EXAMPLES),
               "--seed", str(seed), "--workers", "2", "--request-timeout", "10", "--warnings", "off",
               "--report", "junit", "--report-junit-path", str(folder / "junit.xml"),
               *[part for operation in EXCLUDED for part in ("--exclude-path", operation.split(" ", 1)[1])]]
    # cwd: a folder of its own, so no schemathesis.toml of the repository or the user applies,
    # and the .hypothesis example database lands there instead of in the repository.
    run = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NO_COLOR": "1"})
    output = run.stdout[-6000:] + run.stderr[-2000:]
    report = ElementTree.parse(folder / "junit.xml").getroot()
    tested = {case.get("name") for case in report.iter("testcase")}
    failed = {case.get("name"): (case.find("failure") if case.find("failure") is not None
                                 else case.find("error")).get("message", "")
              for case in report.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None}
    return run, failed, tested, output


#: Requests that were 500s (found by fuzzing this API, by schemathesis or by hand around what it
#: found), each with the 4xx it must be now. Raw bodies: httpx's json= could not send most of them.
REGRESSIONS = [
    ("POST", "/config/features/f/rollback/1067911936116316581134336", None, 422),  # SQLite overflow
    ("POST", "/config/some.key/rollback/1067911936116316581134336", None, 422),
    ("PUT", "/config/features/f", b'{"enabled": true, "rollout_percent": NaN}', 422),  # 422 echoing NaN
    ("POST", "/config", b'{"key": "nan.key", "value": Infinity}', 422),  # stored, then GET /backup
    ("POST", "/config", b'{"key": "s.key", "value": "\\ud800"}', 422),  # stored, then every list
    ("POST", "/config", b'{"key": "s.key", "value": 1, "comment": "\\udfff"}', 422),
    ("POST", "/config", b'{"key": "deep.key", "value": ' + b"[" * 500 + b"]" * 500 + b"}", 422),
    ("POST", "/config/backup/restore", b'{"format": 1, "items": [{"kind": "config"}]}', 422),  # KeyError
    ("POST", "/config/backup/restore", b'{"format": 1, "items": [1]}', 422),
    ("POST", "/config/backup/restore",  # a namespace that is not a string, stored: every snapshot broke
     b'{"format": 1, "items": [{"kind": "config", "key": "r.key", "value": 1, "namespace": 5}]}', 422),
]


@pytest.mark.parametrize("method,path,body,status", REGRESSIONS)
def test_inputs_that_were_server_errors_are_client_errors(server, method, path, body, status):
    with server.client("admin") as admin:
        response = admin.request(method, path, content=body,
                                 headers={"Content-Type": "application/json"} if body else {})
        assert response.status_code == status, response.text
        for reader in ("/config", "/config/features", "/config/snapshot", "/config/backup"):
            assert admin.get(reader).status_code == 200, reader


def test_a_non_ascii_digit_in_if_match_is_a_422(server):
    with server.client("admin") as admin:
        response = admin.post("/config", json={"key": "if.match", "value": 1},
                              headers={"If-Match": b"\xb2"})  # latin-1 "²": str.isdigit() is True
    assert response.status_code == 422 and "If-Match" in response.json()["detail"]


def test_a_websocket_since_past_any_revision_is_refused_not_a_crash(server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with pytest.raises(ConnectionClosed) as refused, \
            connect(f"{server.ws_url}?token={ADMIN_TOKEN}&since={2**70}") as socket:
        socket.recv(timeout=5)
    assert refused.value.rcvd.code == 4422
    with connect(f"{server.ws_url}?token={ADMIN_TOKEN}&since=0") as socket:
        assert '"hello"' in socket.recv(timeout=5)
