"""Tracing through the API: ``POST /workflows/observability/otel/init`` points the plane at an OTLP
collector (a local HTTP server here), and a run through the API is exported as a run span with one
child span per node, parented and in one trace."""

from __future__ import annotations

import http.server
import threading

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.api.conftest import start_server, stop_server
from tests.api.workflows.support import chain, create, run_to_end, task

pytestmark = pytest.mark.integration


class Collector(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


def test_a_run_through_the_api_is_exported_as_a_trace(tmp_path):
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("C", (Collector,), {"bodies": []}))
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    server = start_server(tmp_path / "home", {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    try:
        with server.client("admin") as admin:
            described = admin.post("/workflows/observability/otel/init",
                                   json={"service_name": "wf-api-test", "endpoint": endpoint})
            assert described.status_code == 200, described.text
            assert described.json()["enabled"] is True
            assert admin.get("/workflows/health").json()["tracing"] is True
            workflow_id = create(admin, chain("traced", task("one", "echo"), task("two", "echo")))
            assert run_to_end(admin, workflow_id)["status"] == "COMPLETED"
    finally:
        output = stop_server(server)  # the lifespan's shutdown flushes the batch of spans
        collector.shutdown()
        collector.server_close()
    assert "Traceback" not in output, output
    spans = []
    for body in collector.RequestHandlerClass.bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
    runs = [s for s in spans if s.name == "workflow.run"]
    nodes = [s for s in spans if s.name.startswith("workflow.node ")]
    assert len(runs) == 1
    expected = sorted(f"workflow.node {n}" for n in ("start", "one", "two", "end"))
    assert sorted(s.name for s in nodes) == expected
    assert {s.parent_span_id for s in nodes} == {runs[0].span_id}
    assert {s.trace_id for s in nodes} == {runs[0].trace_id}
