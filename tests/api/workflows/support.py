"""Helpers of the workflows API tests: spec builders, run polling, a recording HTTP receiver,
Prometheus text parsing and WebSocket outcomes."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


# ------------------------------------------------------------------------------------ specs
def node(node_id: str, type_: str, **fields) -> dict:
    return {"node_id": node_id, "type": type_, **fields}


def task(node_id: str, function: str, config: dict | None = None, **template) -> dict:
    """A python task node calling ``workflows.tasks:<function>``."""
    return node(node_id, "task", template={
        "executor": "python", "config": {"callable": f"workflows.tasks:{function}", **(config or {})},
        **template})


def chain(name: str, *middle: dict, **spec) -> dict:
    """start -> each of ``middle`` in order -> end."""
    nodes = [node("start", "start"), *middle, node("end", "end")]
    ids = [n["node_id"] for n in nodes]
    edges = [{"source": a, "target": b} for a, b in pairwise(ids)]
    return {"name": name, "nodes": nodes, "edges": edges, **spec}


def graph(name: str, nodes: list[dict], edges: list[tuple | dict], **spec) -> dict:
    return {"name": name, "nodes": nodes,
            "edges": [e if isinstance(e, dict) else {"source": e[0], "target": e[1]} for e in edges], **spec}


# ------------------------------------------------------------------------------------- runs
def create(client: httpx.Client, spec: dict) -> str:
    response = client.post("/workflows/", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["workflow_id"]


def start(client: httpx.Client, workflow_id: str, variables: dict | None = None,
          version: int | None = None) -> str:
    body = {"workflow_id": workflow_id, "input_variables": variables or {}}
    if version is not None:
        body["version"] = version
    response = client.post("/workflows/run/start", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "PENDING"
    return response.json()["run_id"]


def wait_run(client: httpx.Client, run_id: str, statuses=FINISHED, timeout: float = 60.0) -> dict:
    """Poll GET /run/{id} until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/workflows/run/{run_id}")
        assert response.status_code == 200, response.text
        run = response.json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {timeout} s: {run}"
        time.sleep(0.05)


def run_to_end(client: httpx.Client, workflow_id: str, variables: dict | None = None,
               version: int | None = None) -> dict:
    return wait_run(client, start(client, workflow_id, variables, version))


def events(client: httpx.Client, run_id: str) -> list[dict]:
    response = client.get(f"/workflows/trace/replay/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def of_type(items: list[dict], kind: str, node_id: str | None = None) -> list[dict]:
    return [e for e in items if e["type"] == kind and (node_id is None or e.get("node_id") == node_id)]


def nodes_by_id(run: dict) -> dict[str, dict]:
    return {n["node_id"]: n for n in run["nodes"]}


def wait_for(predicate, timeout: float = 20.0, every: float = 0.1, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout} s"
        time.sleep(every)


# ---------------------------------------------------------------------------------- metrics
def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0.0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})? (\S+)", line.strip())
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return 0.0


# --------------------------------------------------------------------------------- receiver
class Receiver:
    """A loopback HTTP server that records every request and answers 200 ``{"ok": true}``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with receiver.lock:
                    receiver.requests.append({"method": self.command, "path": self.path,
                                              "headers": dict(self.headers), "body": body})
                reply = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_PUT = do_GET = _record

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def received(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -------------------------------------------------------------------------------- websocket
def ws_outcome(url: str) -> object:
    """``"accepted"`` (with the first message), the close code the server sent, or ``"HTTP <status>"``
    when the handshake itself was refused."""
    try:
        with connect(url, open_timeout=10) as socket:
            first = json.loads(socket.recv(timeout=10))
            return ("accepted", first)
    except InvalidStatus as error:
        return f"HTTP {error.response.status_code}"
    except ConnectionClosed as error:
        return error.rcvd.code if error.rcvd is not None else "closed without a close frame"
