"""Workflow run events -> OpenTelemetry spans (orchestration/workflows/tracing.py)."""

from __future__ import annotations

import http.server
import threading
from types import SimpleNamespace

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from orchestration.workflows.tracing import WorkflowTracing, from_settings, otlp_endpoint
from prioritymax.settings import Settings

T0 = 1_700_000_000.0
OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def ns(seconds: float) -> int:
    return int(round(seconds * 1_000_000_000))


def ev(kind: str, at: float, run_id: str = "r1", **fields) -> dict:
    return {"type": kind, "run_id": run_id, "workflow_id": "wf1", "version": 3, "at": at, **fields}


@pytest.fixture(autouse=True)
def no_otlp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*OTLP_ENV, "OTEL_EXPORTER_JAEGER_AGENT_HOST", "OTEL_EXPORTER_JAEGER_AGENT_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def traced() -> tuple[WorkflowTracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = WorkflowTracing()
    description = tracing.configure(service_name="wf-test", exporter=exporter)
    assert description == {
        "enabled": True,
        "service_name": "wf-test",
        "exporter": "InMemorySpanExporter",
        "endpoint": None,
    }
    yield tracing, exporter
    tracing.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    for group in out.values():
        group.sort(key=lambda s: s.attributes.get("node.attempt", 0))
    return out


def realistic_run() -> list[dict]:
    """Three nodes; ``fetch`` fails once, is retried and completes; two SLA violations."""
    return [
        ev("run_started", T0),
        ev("node_start", T0 + 0.1, node_id="start", node_type="start", attempt=1),
        ev(
            "node_end",
            T0 + 0.2,
            node_id="start",
            node_type="start",
            attempt=1,
            status="COMPLETED",
            duration_ms=100.0,
        ),
        ev("node_start", T0 + 0.3, node_id="fetch", node_type="task", attempt=1),
        ev(
            "node_end",
            T0 + 0.8,
            node_id="fetch",
            node_type="task",
            attempt=1,
            status="FAILED",
            duration_ms=500.0,
            error="connection reset",
        ),
        ev("node_retry", T0 + 0.81, node_id="fetch", attempt=1, error="connection reset", delay_seconds=1.0),
        ev("node_start", T0 + 1.81, node_id="fetch", node_type="task", attempt=2),
        ev("sla_violation", T0 + 2.0, node_id="fetch", sla_seconds=1.5, elapsed_seconds=2.0),
        ev(
            "node_end",
            T0 + 2.5,
            node_id="fetch",
            node_type="task",
            attempt=2,
            status="COMPLETED",
            duration_ms=690.0,
        ),
        ev("node_start", T0 + 2.6, node_id="end", node_type="end", attempt=1),
        ev(
            "node_end",
            T0 + 2.7,
            node_id="end",
            node_type="end",
            attempt=1,
            status="COMPLETED",
            duration_ms=100.0,
        ),
        ev("sla_violation", T0 + 2.9, node_id=None, sla_seconds=2.5, elapsed_seconds=2.9),
        ev("run_completed", T0 + 3.0),
    ]


def test_realistic_run_builds_a_parent_child_trace(traced) -> None:
    tracing, exporter = traced
    for event in realistic_run():
        tracing.on_event(event)
    assert tracing.open_runs == 0
    spans = exporter.get_finished_spans()
    assert len(spans) == 5
    named = by_name(spans)
    assert set(named) == {"workflow.run", "workflow.node start", "workflow.node fetch", "workflow.node end"}

    (run,) = named["workflow.run"]
    assert run.parent is None
    assert dict(run.attributes) == {
        "workflow.id": "wf1",
        "workflow.version": 3,
        "run.id": "r1",
        "run.status": "COMPLETED",
        "run.sla_violated": True,
    }
    assert run.status.status_code is StatusCode.OK
    assert (run.start_time, run.end_time) == (ns(T0), ns(T0 + 3.0))
    assert run.resource.attributes["service.name"] == "wf-test"

    nodes = [s for s in spans if s is not run]
    for node in nodes:
        assert node.parent is not None
        assert node.parent.span_id == run.context.span_id
        assert node.context.trace_id == run.context.trace_id

    start = named["workflow.node start"][0]
    assert dict(start.attributes) == {
        "node.id": "start",
        "node.type": "start",
        "node.attempt": 1,
        "run.id": "r1",
        "node.status": "COMPLETED",
        "node.duration_ms": 100.0,
    }
    assert (start.start_time, start.end_time) == (ns(T0 + 0.1), ns(T0 + 0.2))

    first, second = named["workflow.node fetch"]
    assert first.attributes["node.attempt"] == 1 and second.attributes["node.attempt"] == 2
    assert first.attributes["node.status"] == "FAILED"
    assert first.attributes["node.duration_ms"] == 500.0
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "connection reset"
    (failure,) = first.events
    assert failure.name == "exception"
    assert failure.attributes["exception.message"] == "connection reset"
    assert failure.timestamp == ns(T0 + 0.8)
    assert (first.start_time, first.end_time) == (ns(T0 + 0.3), ns(T0 + 0.8))

    assert second.status.status_code is StatusCode.OK
    assert second.attributes["node.status"] == "COMPLETED"
    assert (second.start_time, second.end_time) == (ns(T0 + 1.81), ns(T0 + 2.5))
    (sla,) = second.events  # raised while attempt 2 was open: on the node span
    assert sla.name == "workflow.sla_violation"
    assert dict(sla.attributes) == {"node.id": "fetch", "sla.seconds": 1.5, "sla.elapsed_seconds": 2.0}
    assert sla.timestamp == ns(T0 + 2.0)

    # The retry came after attempt 1's node_end, and the run-level SLA violation had no node: run events.
    retry, run_sla = run.events
    assert retry.name == "node.retry"
    assert dict(retry.attributes) == {
        "node.id": "fetch",
        "node.attempt": 1,
        "error.message": "connection reset",
        "retry.delay_seconds": 1.0,
    }
    assert retry.timestamp == ns(T0 + 0.81)
    assert run_sla.name == "workflow.sla_violation"
    assert dict(run_sla.attributes) == {"sla.seconds": 2.5, "sla.elapsed_seconds": 2.9}


def test_spans_take_their_times_from_the_events_even_when_processed_late(traced) -> None:
    tracing, exporter = traced
    long_ago = T0 - 86_400
    tracing.on_event(ev("run_started", long_ago))
    tracing.on_event(ev("node_start", long_ago + 1, node_id="a", node_type="task", attempt=1))
    tracing.on_event(
        ev(
            "node_end",
            long_ago + 4,
            node_id="a",
            node_type="task",
            attempt=1,
            status="COMPLETED",
            duration_ms=3000,
        )
    )
    tracing.on_event(ev("run_completed", long_ago + 5))
    named = by_name(exporter.get_finished_spans())
    node, run = named["workflow.node a"][0], named["workflow.run"][0]
    assert (node.start_time, node.end_time) == (ns(long_ago + 1), ns(long_ago + 4))
    assert (run.start_time, run.end_time) == (ns(long_ago), ns(long_ago + 5))


def test_run_failure_marks_the_run_span_and_ends_dangling_nodes(traced) -> None:
    tracing, exporter = traced
    tracing.on_event(ev("run_started", T0))
    tracing.on_event(ev("node_start", T0 + 1, node_id="train", node_type="task", attempt=1))
    tracing.on_event(ev("run_failed", T0 + 2, error="executor crashed"))
    named = by_name(exporter.get_finished_spans())
    run, node = named["workflow.run"][0], named["workflow.node train"][0]
    assert run.attributes["run.status"] == "FAILED"
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "executor crashed"
    assert [e.name for e in run.events] == ["exception"]
    assert node.end_time == ns(T0 + 2)  # ended with the run
    assert node.attributes["node.dangling"] is True
    assert node.attributes["node.status"] == "UNKNOWN"
    assert node.parent.span_id == run.context.span_id
    assert tracing.open_runs == 0


def test_cancelled_run_and_skipped_node_leave_status_unset(traced) -> None:
    tracing, exporter = traced
    tracing.on_event(ev("run_started", T0))
    tracing.on_event(
        ev("node_end", T0 + 1, node_id="b", node_type="task", attempt=1, status="SKIPPED", duration_ms=0)
    )
    tracing.on_event(ev("node_start", T0 + 1, node_id="c", node_type="timer", attempt=1))
    tracing.on_event(ev("run_cancelled", T0 + 2))
    named = by_name(exporter.get_finished_spans())
    run = named["workflow.run"][0]
    assert run.attributes["run.status"] == "CANCELLED"
    assert run.status.status_code is StatusCode.UNSET
    skipped = named["workflow.node b"][0]
    assert skipped.attributes["node.status"] == "SKIPPED"
    assert skipped.status.status_code is StatusCode.UNSET
    assert named["workflow.node c"][0].attributes["node.status"] == "CANCELLED"


def test_retry_of_an_open_attempt_ends_it_as_failed(traced) -> None:
    tracing, exporter = traced
    tracing.on_event(ev("run_started", T0))
    tracing.on_event(ev("node_start", T0 + 1, node_id="x", node_type="task", attempt=1))
    tracing.on_event(ev("node_retry", T0 + 2, node_id="x", attempt=1, error="boom", delay_seconds=0.5))
    (span,) = exporter.get_finished_spans()
    assert span.name == "workflow.node x"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["node.status"] == "FAILED"
    assert span.attributes["node.duration_ms"] == pytest.approx(1000.0)
    assert [e.name for e in span.events] == ["node.retry", "exception"]
    assert span.end_time == ns(T0 + 2)


def test_node_end_without_start_and_late_node_end_after_the_run(traced) -> None:
    tracing, exporter = traced
    tracing.on_event(ev("run_started", T0))
    tracing.on_event(
        ev("node_end", T0 + 2, node_id="a", node_type="task", attempt=1, status="COMPLETED", duration_ms=1500)
    )
    tracing.on_event(ev("run_completed", T0 + 3))
    # a parallel branch's node_end processed after the run ended still hangs off the run span
    tracing.on_event(
        ev(
            "node_end",
            T0 + 2.5,
            node_id="b",
            node_type="task",
            attempt=1,
            status="COMPLETED",
            duration_ms=500,
        )
    )
    # ... but nothing reopens the finished run
    tracing.on_event(ev("node_start", T0 + 4, node_id="c", node_type="task", attempt=1))
    assert tracing.open_runs == 0
    named = by_name(exporter.get_finished_spans())
    run = named["workflow.run"][0]
    a, b = named["workflow.node a"][0], named["workflow.node b"][0]
    assert (a.start_time, a.end_time) == (ns(T0 + 0.5), ns(T0 + 2))
    assert (b.start_time, b.end_time) == (ns(T0 + 2), ns(T0 + 2.5))
    for node in (a, b):
        assert node.parent.span_id == run.context.span_id
        assert node.context.trace_id == run.context.trace_id
    assert "workflow.node c" not in named


def test_events_without_run_started_open_the_run_lazily(traced) -> None:
    tracing, exporter = traced
    tracing.on_event(ev("node_start", T0 + 1, node_id="a", node_type="task", attempt=1))
    tracing.on_event(
        ev("node_end", T0 + 2, node_id="a", node_type="task", attempt=1, status="COMPLETED", duration_ms=1000)
    )
    tracing.on_event(ev("run_completed", T0 + 3))
    named = by_name(exporter.get_finished_spans())
    run = named["workflow.run"][0]
    assert run.start_time == ns(T0 + 1)
    assert named["workflow.node a"][0].parent.span_id == run.context.span_id


def test_open_runs_are_capped(traced) -> None:
    exporter = InMemorySpanExporter()
    tracing = WorkflowTracing(max_open_runs=2)
    tracing.configure(exporter=exporter)
    for i in range(3):
        tracing.on_event(ev("run_started", T0 + i, run_id=f"r{i}"))
        tracing.on_event(
            ev("node_start", T0 + i + 0.5, run_id=f"r{i}", node_id="n", node_type="task", attempt=1)
        )
    assert tracing.open_runs == 2
    evicted = [s for s in exporter.get_finished_spans() if s.name == "workflow.run"]
    assert [s.attributes["run.id"] for s in evicted] == ["r0"]
    assert evicted[0].attributes["tracing.abandoned"] == "evicted"
    assert evicted[0].end_time == ns(T0 + 0.5)  # the last event seen for it
    tracing.shutdown()  # ends the rest
    assert tracing.open_runs == 0
    assert len(exporter.get_finished_spans()) == 6
    assert not tracing.enabled


def test_events_from_many_threads(traced) -> None:
    tracing, exporter = traced
    runs, branches = 8, 12
    for r in range(runs):
        tracing.on_event(ev("run_started", T0, run_id=f"r{r}"))

    def branch(r: int, b: int) -> None:
        node = f"n{b}"
        tracing.on_event(ev("node_start", T0 + 1, run_id=f"r{r}", node_id=node, node_type="task", attempt=1))
        tracing.on_event(
            ev("sla_violation", T0 + 1.5, run_id=f"r{r}", node_id=node, sla_seconds=1, elapsed_seconds=1.5)
        )
        tracing.on_event(
            ev(
                "node_end",
                T0 + 2,
                run_id=f"r{r}",
                node_id=node,
                node_type="task",
                attempt=1,
                status="COMPLETED",
                duration_ms=1000,
            )
        )

    threads = [threading.Thread(target=branch, args=(r, b)) for r in range(runs) for b in range(branches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for r in range(runs):
        tracing.on_event(ev("run_completed", T0 + 3, run_id=f"r{r}"))
    spans = exporter.get_finished_spans()
    assert len(spans) == runs * (branches + 1)
    run_spans = {s.attributes["run.id"]: s for s in spans if s.name == "workflow.run"}
    for span in spans:
        if span.name != "workflow.run":
            parent = run_spans[span.attributes["run.id"]]
            assert span.parent.span_id == parent.context.span_id
            assert span.attributes["node.status"] == "COMPLETED"
            assert [e.name for e in span.events] == ["workflow.sla_violation"]
    assert tracing.open_runs == 0


def test_malformed_events_are_dropped_not_raised(traced) -> None:
    tracing, exporter = traced
    tracing.on_event({})
    tracing.on_event({"type": "node_start", "run_id": "r9", "at": "not a number"})  # no node_id
    tracing.on_event({"type": "mystery", "run_id": "r9", "at": T0})
    tracing.on_event(ev("node_end", T0, node_id="n", attempt="two", status=None, duration_ms=None))
    tracing.on_event(ev("run_completed", T0 + 1))
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["workflow.node n", "workflow.run"]


def test_disabled_tracing_is_a_no_op() -> None:
    tracing = WorkflowTracing()
    assert not tracing.enabled
    for event in realistic_run():
        tracing.on_event(event)
    assert tracing.open_runs == 0
    assert tracing.configure() == {
        "enabled": False,
        "service_name": "prioritymax-workflows",
        "exporter": None,
        "endpoint": None,
    }
    assert not tracing.enabled
    tracing.on_event(ev("run_started", T0))
    assert tracing.open_runs == 0
    tracing.shutdown()


def test_reconfigure_ends_open_spans_on_the_old_provider() -> None:
    old, new = InMemorySpanExporter(), InMemorySpanExporter()
    tracing = WorkflowTracing()
    tracing.configure(exporter=old)
    tracing.on_event(ev("run_started", T0))
    tracing.configure(exporter=new)
    (run,) = old.get_finished_spans()
    assert run.attributes["tracing.abandoned"] == "reconfigured"
    tracing.on_event(ev("run_started", T0, run_id="r2"))
    tracing.on_event(ev("run_completed", T0 + 1, run_id="r2"))
    assert [s.attributes["run.id"] for s in new.get_finished_spans()] == ["r2"]
    tracing.shutdown()


@pytest.mark.parametrize(
    ("endpoint", "host", "port", "expected"),
    [
        (None, None, None, None),
        (None, "", 6831, None),
        (None, "jaeger", None, "http://jaeger:4318/v1/traces"),
        (None, "jaeger", 6831, "http://jaeger:4318/v1/traces"),
        (None, "jaeger", 4318, "http://jaeger:4318/v1/traces"),
        (None, "jaeger.obs.svc", 14318, "http://jaeger.obs.svc:14318/v1/traces"),
        (None, "::1", None, "http://[::1]:4318/v1/traces"),
        ("http://collector:4318/v1/traces", "jaeger", 6831, "http://collector:4318/v1/traces"),
        ("https://otlp.example/v1/traces", None, None, "https://otlp.example/v1/traces"),
    ],
)
def test_otlp_endpoint_mapping(endpoint, host, port, expected) -> None:
    assert otlp_endpoint(endpoint, host, port) == expected


def test_otlp_endpoint_rejects_a_bad_port() -> None:
    with pytest.raises(ValueError):
        otlp_endpoint(None, "jaeger", 70000)


def test_configure_maps_jaeger_and_lets_the_otlp_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    tracing = WorkflowTracing()
    try:
        description = tracing.configure(jaeger_host="jaeger", jaeger_port=6831)
        assert description == {
            "enabled": True,
            "service_name": "prioritymax-workflows",
            "exporter": "otlp-http",
            "endpoint": "http://jaeger:4318/v1/traces",
        }
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
        assert tracing.configure(jaeger_host="jaeger")["endpoint"] == "http://collector:4318/v1/traces"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom")
        assert tracing.configure(jaeger_host="jaeger")["endpoint"] == "http://traces:9999/custom"
        assert tracing.configure(endpoint="http://explicit:4318/v1/traces")["endpoint"] == (
            "http://explicit:4318/v1/traces"
        )
    finally:
        tracing.shutdown()


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    off = from_settings(Settings())
    assert not off.enabled

    monkeypatch.setenv("OTEL_EXPORTER_JAEGER_AGENT_HOST", "jaeger")
    on = from_settings(Settings())
    try:
        assert on.enabled
        assert on.description["endpoint"] == "http://jaeger:4318/v1/traces"
    finally:
        on.shutdown()

    monkeypatch.setenv("OTEL_EXPORTER_JAEGER_AGENT_PORT", "14318")
    on = from_settings(Settings())
    try:
        assert on.description["endpoint"] == "http://jaeger:14318/v1/traces"
    finally:
        on.shutdown()

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    env_only = from_settings(SimpleNamespace(otel_jaeger_host=None, otel_jaeger_port=6831))
    try:
        assert env_only.enabled
        assert env_only.description["endpoint"] == "http://collector:4318/v1/traces"
    finally:
        env_only.shutdown()


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


@pytest.mark.integration
def test_real_otlp_export_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        tracing = WorkflowTracing()
        description = tracing.configure(service_name="wf-otlp", endpoint=f"http://127.0.0.1:{port}/v1/traces")
        assert description["exporter"] == "otlp-http"
        for event in realistic_run():
            tracing.on_event(event)
        tracing.shutdown()  # flushes the batch processor
    finally:
        server.shutdown()
        server.server_close()

    assert received, "the collector got no request"
    path, headers, _ = received[0]
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    names: set[str] = set()
    services: set[str] = set()
    for _, _, body in received:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            services.update(
                a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                names.update(span.name for span in scope_spans.spans)
    assert services == {"wf-otlp"}
    assert names == {"workflow.run", "workflow.node start", "workflow.node fetch", "workflow.node end"}
