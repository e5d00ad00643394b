"""OpenTelemetry spans for workflow runs, built from the run events the executor emits.

Every run becomes one span, ``workflow.run`` (attributes ``workflow.id``, ``workflow.version``,
``run.id``, ``run.status``), and every node attempt a child span of it, ``workflow.node <node_id>``
(``node.id``, ``node.type``, ``node.attempt``, ``node.status``, ``node.duration_ms``). A failed run
or node gets span status ERROR with the error message, plus an ``exception`` event carrying it; a
completed one gets status OK; skipped and cancelled ones leave the status unset. Retries and SLA
violations are span events (``node.retry``, ``workflow.sla_violation``).

Spans are built from the events alone: start and end times come from each event's ``at`` (epoch
seconds), so a span reflects when things happened even when events are processed late, and
:meth:`WorkflowTracing.on_event` may be called from several threads at once. Tracing never breaks a
run: a malformed event is logged and dropped.

Where the spans go
------------------
The seed configures tracing with ``OTEL_EXPORTER_JAEGER_AGENT_HOST`` /
``OTEL_EXPORTER_JAEGER_AGENT_PORT`` (default ``6831``, the UDP port of Jaeger's old Thrift agent).
OpenTelemetry Python has removed its Jaeger exporters, and Jaeger ingests OTLP natively, so these
variables are honoured by sending OTLP over HTTP (protobuf) to that host instead:

* host ``H`` with port ``6831`` (or no port): ``http://H:4318/v1/traces`` (Jaeger's OTLP/HTTP port);
* host ``H`` with any other port ``P``: ``http://H:P/v1/traces`` (``P`` is taken to be the OTLP/HTTP
  port Jaeger, or a collector in front of it, listens on);
* an explicit endpoint wins over both: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is) or
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` appended), as the OpenTelemetry spec defines them.

With none of these set, tracing is off and :meth:`WorkflowTracing.on_event` returns at once. The
tracer provider belongs to the :class:`WorkflowTracing` instance; the process-global provider is
never touched (it can be set only once per process).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode

from orchestration.workflows.store import RUN_END

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "JAEGER_AGENT_PORT",
    "JAEGER_OTLP_HTTP_PORT",
    "WorkflowTracing",
    "from_settings",
    "otlp_endpoint",
]

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "prioritymax-workflows"
#: Jaeger's old UDP (compact Thrift) agent port: the seed's default, which cannot take OTLP.
JAEGER_AGENT_PORT = 6831
#: The port Jaeger's OTLP/HTTP receiver listens on by default.
JAEGER_OTLP_HTTP_PORT = 4318
TRACES_PATH = "/v1/traces"
#: Open runs kept at most; past it the oldest is ended (marked abandoned) to bound memory.
MAX_OPEN_RUNS = 10_000
TRACER_NAME = "orchestration.workflows"

_ENV_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
_ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


def otlp_endpoint(endpoint: str | None, jaeger_host: str | None, jaeger_port: int | None) -> str | None:
    """The OTLP/HTTP traces URL to export to, or ``None`` (tracing off).

    ``endpoint`` (a full traces URL) wins; else the Jaeger agent host/port map to OTLP/HTTP: port
    6831 or ``None`` -> ``http://H:4318/v1/traces``, any other port ``P`` -> ``http://H:P/v1/traces``.
    Pure: the environment is read by :meth:`WorkflowTracing.configure` and :func:`from_settings`.
    """
    if endpoint and endpoint.strip():
        return endpoint.strip()
    host = (jaeger_host or "").strip()
    if not host:
        return None
    if jaeger_port is not None and not 0 < int(jaeger_port) < 65536:
        raise ValueError(f"jaeger port out of range: {jaeger_port}")
    port = JAEGER_OTLP_HTTP_PORT if jaeger_port in (None, JAEGER_AGENT_PORT) else int(jaeger_port)
    scheme = "http"
    if "://" in host:  # tolerate "http://jaeger" / "https://jaeger"
        scheme, host = host.split("://", 1)
        host = host.rstrip("/")
    if ":" in host and not host.startswith("["):  # a bare IPv6 address
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{TRACES_PATH}"


def _env_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    """The standard OTLP endpoint variables, as a traces URL (signal-specific one as is)."""
    env = os.environ if environ is None else environ
    traces = (env.get(_ENV_TRACES_ENDPOINT) or "").strip()
    if traces:
        return traces
    base = (env.get(_ENV_ENDPOINT) or "").strip()
    if base:
        return base.rstrip("/") + TRACES_PATH
    return None


def _ns(event: Mapping[str, Any]) -> int:
    """``event["at"]`` (epoch seconds) in nanoseconds; now when missing or not a number."""
    at = event.get("at")
    if isinstance(at, int | float) and not isinstance(at, bool):
        return int(round(at * 1_000_000_000))
    return time.time_ns()


def _attr(value: Any) -> Any:
    """An OpenTelemetry-acceptable attribute value (primitives as is, anything else as text)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return str(value)


def _attrs(**values: Any) -> dict[str, Any]:
    return {key.replace("__", "."): _attr(v) for key, v in values.items() if v is not None}


def _attempt(event: Mapping[str, Any]) -> int:
    try:
        return int(event.get("attempt") or 1)
    except (TypeError, ValueError):
        return 1


@dataclass
class _OpenNode:
    span: Span
    start_ns: int


@dataclass
class _OpenRun:
    span: Span
    start_ns: int
    last_ns: int
    #: open node spans of this run, keyed by (node_id, attempt)
    nodes: dict[tuple[str, int], _OpenNode] = field(default_factory=dict)


#: (span, end time) pairs to end once the lock is released
_ToEnd = list[tuple[Span, int]]


class WorkflowTracing:
    """Turns workflow run events into spans on its own tracer provider; off until :meth:`configure`
    gives it one."""

    def __init__(self, *, max_open_runs: int = MAX_OPEN_RUNS):
        self._lock = threading.Lock()
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._max_open_runs = max(1, int(max_open_runs))
        #: open run spans by run_id, oldest first (evicted first past the cap)
        self._runs: OrderedDict[str, _OpenRun] = OrderedDict()
        #: span contexts of ended runs, so a late node_end still gets the right parent
        self._ended: OrderedDict[str, SpanContext] = OrderedDict()
        self._description: dict[str, Any] = {
            "enabled": False,
            "service_name": None,
            "exporter": None,
            "endpoint": None,
        }
        #: node event type -> its handler (see the handlers' comment)
        self._node_events = {
            "node_start": self._node_start,
            "node_end": self._node_end,
            "node_retry": self._node_retry,
        }

    # --- configuration ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @property
    def description(self) -> dict[str, Any]:
        return dict(self._description)

    def configure(
        self,
        *,
        service_name: str = DEFAULT_SERVICE_NAME,
        endpoint: str | None = None,
        jaeger_host: str | None = None,
        jaeger_port: int | None = None,
        exporter: SpanExporter | None = None,
    ) -> dict[str, Any]:
        """(Re)build the provider and describe the result.

        ``exporter`` (tests) is used through a :class:`SimpleSpanProcessor`; otherwise spans go,
        through a :class:`BatchSpanProcessor`, to the OTLP/HTTP endpoint that ``endpoint``, the OTLP
        environment variables or the Jaeger host/port resolve to (module docstring). With none,
        tracing is turned off. Spans still open on the previous provider are ended (marked
        abandoned) and that provider is shut down, which flushes it.
        """
        provider: TracerProvider | None = None
        exporter_name: str | None = None
        target: str | None = None
        if exporter is not None:
            provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            exporter_name = type(exporter).__name__
        elif (target := otlp_endpoint(endpoint or _env_endpoint(), jaeger_host, jaeger_port)) is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=target)))
            exporter_name = "otlp-http"
        description = {
            "enabled": provider is not None,
            "service_name": service_name,
            "exporter": exporter_name,
            "endpoint": target,
        }
        with self._lock:
            old = self._provider
            to_end = self._abandon_all("reconfigured")
            self._provider = provider
            self._tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None
            self._description = description
        _end_all(to_end)
        if old is not None:
            old.shutdown()
        log.info("workflow tracing: %s", description)
        return dict(description)

    def shutdown(self) -> None:
        """End every open span (marked abandoned), flush and shut the provider down; tracing is off after."""
        with self._lock:
            provider, to_end = self._provider, self._abandon_all("shutdown")
            self._provider = None
            self._tracer = None
            self._description = {**self._description, "enabled": False}
        _end_all(to_end)
        if provider is not None:
            provider.shutdown()

    @property
    def open_runs(self) -> int:
        return len(self._runs)

    # --- events ------------------------------------------------------------------------------------

    def on_event(self, event: dict) -> None:
        """Fold one run event into the spans. Never raises; does nothing while tracing is off."""
        if self._tracer is None:
            return
        try:
            self._handle(event)
        except Exception:  # tracing must never break a run
            log.warning("workflow tracing: dropped event %r", event, exc_info=True)

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        run_id = event.get("run_id")
        if not kind or run_id is None:
            return
        run_id = str(run_id)
        node_id = event.get("node_id")
        at = _ns(event)
        to_end: _ToEnd = []
        with self._lock:
            tracer = self._tracer
            if tracer is None:
                return
            if run_id in self._ended:  # the run is over: only a late node_end still makes a span
                if kind == "node_end" and node_id is not None:
                    parent = NonRecordingSpan(self._ended[run_id])
                    self._end_unstarted_node(tracer, parent, event, at, to_end)
            elif kind == "run_started":
                self._run(tracer, run_id, event, at, to_end)
            elif kind in RUN_END:
                self._end_run(tracer, run_id, event, at, RUN_END[kind], to_end)
            elif kind in self._node_events:
                if node_id is not None:  # (a node event without a node id is dropped)
                    run = self._run(tracer, run_id, event, at, to_end)
                    self._node_events[kind](tracer, run, str(node_id), event, at, to_end)
            elif kind == "sla_violation":
                self._sla(tracer, run_id, event, at, to_end)
        _end_all(to_end)

    # All the helpers below run under self._lock; spans to end are appended to ``to_end``.

    def _run(
        self, tracer: trace.Tracer, run_id: str, event: Mapping[str, Any], at: int, to_end: _ToEnd
    ) -> _OpenRun:
        """The open run, started (at ``at``) if this is the first event seen for it."""
        run = self._runs.get(run_id)
        if run is not None:
            run.last_ns = max(run.last_ns, at)
            return run
        span = tracer.start_span(
            "workflow.run",
            kind=trace.SpanKind.INTERNAL,
            attributes=_attrs(
                workflow__id=event.get("workflow_id"),
                workflow__version=event.get("version"),
                run__id=run_id,
                run__status="RUNNING",
            ),
            start_time=at,
        )
        run = self._runs[run_id] = _OpenRun(span=span, start_ns=at, last_ns=at)
        while len(self._runs) > self._max_open_runs:
            old_id, old = self._runs.popitem(last=False)
            log.warning(
                "workflow tracing: more than %d open runs, abandoning %s", self._max_open_runs, old_id
            )
            self._abandon(old_id, old, "evicted", to_end)
        return run

    def _end_run(
        self,
        tracer: trace.Tracer,
        run_id: str,
        event: Mapping[str, Any],
        at: int,
        status: str,
        to_end: _ToEnd,
    ) -> None:
        run = self._run(tracer, run_id, event, at, to_end)
        del self._runs[run_id]
        self._remember_ended(run_id, run.span.get_span_context())
        at = max(at, run.start_ns)
        for open_node in run.nodes.values():  # nodes that never reported an end
            open_node.span.set_attribute("node.status", "CANCELLED" if status == "CANCELLED" else "UNKNOWN")
            open_node.span.set_attribute("node.dangling", True)
            to_end.append((open_node.span, max(at, open_node.start_ns)))
        run.span.set_attribute("run.status", status)
        if status == "FAILED":
            _fail(run.span, event.get("error"), at)
        elif status == "COMPLETED":
            run.span.set_status(Status(StatusCode.OK))
        to_end.append((run.span, at))

    # The node event handlers get the open run and the event's node id (never None).

    def _node_start(
        self, tracer: trace.Tracer, run: _OpenRun, node_id: str, event: Mapping[str, Any], at: int, _: _ToEnd
    ) -> None:
        key = (node_id, _attempt(event))
        if key in run.nodes:
            return  # a duplicate start: keep the first
        parent = trace.set_span_in_context(run.span)
        run.nodes[key] = _OpenNode(self._start_node(tracer, parent, event, at), at)

    def _node_end(
        self,
        tracer: trace.Tracer,
        run: _OpenRun,
        node_id: str,
        event: Mapping[str, Any],
        at: int,
        to_end: _ToEnd,
    ) -> None:
        open_node = run.nodes.pop((node_id, _attempt(event)), None)
        if open_node is None:
            self._end_unstarted_node(tracer, run.span, event, at, to_end)
            return
        to_end.append((open_node.span, self._finish_node(open_node.span, event, open_node.start_ns, at)))

    def _end_unstarted_node(
        self, tracer: trace.Tracer, parent: Span, event: Mapping[str, Any], at: int, to_end: _ToEnd
    ) -> None:
        """A node_end without a node_start seen (or after its run ended): the span starts duration_ms
        before the end."""
        start = at - _duration_ns(event)
        span = self._start_node(tracer, trace.set_span_in_context(parent), event, start)
        to_end.append((span, self._finish_node(span, event, start, at)))

    def _node_retry(
        self,
        tracer: trace.Tracer,
        run: _OpenRun,
        node_id: str,
        event: Mapping[str, Any],
        at: int,
        to_end: _ToEnd,
    ) -> None:
        """A failed attempt that will be retried: ends the attempt's span if it is still open."""
        attempt = _attempt(event)
        attributes = _attrs(
            node__id=node_id,
            node__attempt=attempt,
            error__message=event.get("error"),
            retry__delay_seconds=event.get("delay_seconds"),
        )
        open_node = run.nodes.pop((node_id, attempt), None)
        if open_node is None:  # its node_end already closed it: note the retry on the run
            run.span.add_event("node.retry", attributes, timestamp=at)
            return
        span = open_node.span
        span.add_event("node.retry", attributes, timestamp=at)
        span.set_attribute("node.status", "FAILED")
        span.set_attribute("node.duration_ms", max(0.0, (at - open_node.start_ns) / 1e6))
        _fail(span, event.get("error"), at)
        to_end.append((span, max(at, open_node.start_ns)))

    def _sla(
        self, tracer: trace.Tracer, run_id: str, event: Mapping[str, Any], at: int, to_end: _ToEnd
    ) -> None:
        run = self._run(tracer, run_id, event, at, to_end)
        node_id = event.get("node_id")
        attributes = _attrs(
            node__id=node_id,
            sla__seconds=event.get("sla_seconds"),
            sla__elapsed_seconds=event.get("elapsed_seconds"),
        )
        target = run.span
        if node_id is not None:
            attempts = [(a, n) for (nid, a), n in run.nodes.items() if nid == str(node_id)]
            if attempts:
                target = max(attempts, key=lambda pair: pair[0])[1].span  # the latest open attempt
        target.add_event("workflow.sla_violation", attributes, timestamp=at)
        run.span.set_attribute("run.sla_violated", True)

    @staticmethod
    def _start_node(tracer: trace.Tracer, parent: Any, event: Mapping[str, Any], at: int) -> Span:
        node_id = str(event.get("node_id"))
        return tracer.start_span(
            f"workflow.node {node_id}",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            attributes=_attrs(
                node__id=node_id,
                node__type=event.get("node_type"),
                node__attempt=_attempt(event),
                run__id=event.get("run_id"),
            ),
            start_time=at,
        )

    @staticmethod
    def _finish_node(span: Span, event: Mapping[str, Any], start: int, at: int) -> int:
        """Sets a node_end's attributes and status; returns the end time."""
        status = str(event.get("status") or "COMPLETED").upper()
        if event.get("node_type") is not None:
            span.set_attribute("node.type", _attr(event["node_type"]))
        span.set_attribute("node.status", status)
        duration = event.get("duration_ms")
        if isinstance(duration, int | float) and not isinstance(duration, bool):
            span.set_attribute("node.duration_ms", duration)
        else:
            span.set_attribute("node.duration_ms", max(0.0, (at - start) / 1e6))
        if status == "FAILED":
            _fail(span, event.get("error"), at)
        elif status == "COMPLETED":
            span.set_status(Status(StatusCode.OK))
        elif event.get("error"):
            span.set_attribute("node.error", str(event["error"]))
        return max(at, start)

    def _remember_ended(self, run_id: str, context: SpanContext) -> None:
        self._ended[run_id] = context
        while len(self._ended) > self._max_open_runs:
            self._ended.popitem(last=False)

    def _abandon(self, run_id: str, run: _OpenRun, reason: str, to_end: _ToEnd) -> None:
        """Ends a run that never reported its end, at the last event time seen for it."""
        self._remember_ended(run_id, run.span.get_span_context())
        for open_node in run.nodes.values():
            open_node.span.set_attribute("node.dangling", True)
            to_end.append((open_node.span, max(run.last_ns, open_node.start_ns)))
        run.span.set_attribute("tracing.abandoned", reason)
        to_end.append((run.span, run.last_ns))

    def _abandon_all(self, reason: str) -> _ToEnd:
        to_end: _ToEnd = []
        while self._runs:
            run_id, run = self._runs.popitem(last=False)
            self._abandon(run_id, run, reason, to_end)
        self._ended.clear()
        return to_end


def _duration_ns(event: Mapping[str, Any]) -> int:
    duration = event.get("duration_ms")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
        return int(duration * 1_000_000)
    return 0


def _fail(span: Span, error: Any, at: int) -> None:
    message = str(error) if error else "failed"
    span.set_status(Status(StatusCode.ERROR, message))
    span.add_event("exception", {"exception.message": message}, timestamp=at)


def _end_all(to_end: _ToEnd) -> None:
    for span, end in to_end:
        try:
            span.end(end_time=end)
        except Exception:
            log.warning("workflow tracing: could not end a span", exc_info=True)


def from_settings(settings: Any) -> WorkflowTracing:
    """Tracing as the settings and environment ask: OTLP/HTTP when ``OTEL_EXPORTER_JAEGER_AGENT_HOST``
    (``settings.otel_jaeger_host``) or an ``OTEL_EXPORTER_OTLP(_TRACES)_ENDPOINT`` is set, else off.

    The service name is ``OTEL_SERVICE_NAME`` when set, else ``prioritymax-workflows``.
    """
    tracing = WorkflowTracing()
    host = getattr(settings, "otel_jaeger_host", None)
    if not (host or _env_endpoint()):
        return tracing
    tracing.configure(
        service_name=(os.environ.get("OTEL_SERVICE_NAME") or "").strip() or DEFAULT_SERVICE_NAME,
        jaeger_host=host,
        jaeger_port=getattr(settings, "otel_jaeger_port", None),
    )
    return tracing
