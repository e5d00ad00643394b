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
from tests.orchestration.workflows.test_tracing import _Collector as Collector

pytestmark = pytest.mark.integration


def test_a_run_through_the_api_is_exported_as_a_trace(tmp_path):
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Recording", (Collector,), {"received": received})
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
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
    for _, _, body in received:
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
