"""Prometheus metrics of the workflows API: the seed's names plus node, SLA and request figures.

Each plane has its own registry (several apps in one process - tests - do not clash);
``GET /workflows/metrics`` renders it in the text exposition format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from api.config.metrics import LATENCY_BUCKETS

NODE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class WorkflowMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs_started = Counter("prioritymax_workflow_runs_started_total", "Workflow runs started",
                                    registry=r)
        self.runs_failed = Counter("prioritymax_workflow_runs_failed_total", "Workflow runs failed",
                                   registry=r)
        self.runs_completed = Counter("prioritymax_workflow_runs_completed_total", "Workflow runs completed",
                                      registry=r)
        self.runs_cancelled = Counter("prioritymax_workflow_runs_cancelled_total", "Workflow runs cancelled",
                                      registry=r)
        self.runs_active = Gauge("prioritymax_workflow_runs_active", "Workflow runs pending or running",
                                 registry=r)
        self.node_duration = Histogram("prioritymax_workflow_node_duration_seconds",
                                       "Duration of each node attempt", ["node_type", "status"],
                                       buckets=NODE_BUCKETS, registry=r)
        self.node_retries = Counter("prioritymax_workflow_node_retries_total", "Node attempts retried",
                                    registry=r)
        self.sla_violations = Counter("prioritymax_workflow_sla_violations_total", "SLA violations found",
                                      ["scope"], registry=r)
        self.fanout_pokes = Counter("prioritymax_workflow_fanout_pokes_total",
                                    "Redis pokes from other replicas that found events not yet pushed here",
                                    registry=r)
        self.ws_connections = Gauge("prioritymax_workflow_ws_connections", "WebSocket subscribers connected",
                                    registry=r)
        self.requests = Histogram("prioritymax_workflow_request_duration_seconds",
                                  "Workflows API request latency", ["method", "route", "status"],
                                  buckets=LATENCY_BUCKETS, registry=r)

    def on_event(self, event: dict) -> None:
        kind = event["type"]
        if kind == "run_started":
            self.runs_started.inc()
        elif kind == "run_failed":
            self.runs_failed.inc()
        elif kind == "run_completed":
            self.runs_completed.inc()
        elif kind == "run_cancelled":
            self.runs_cancelled.inc()
        elif kind == "node_end":
            self.node_duration.labels(node_type=event.get("node_type", ""), status=event.get("status", "")) \
                .observe(event.get("duration_ms", 0) / 1000)
        elif kind == "node_retry":
            self.node_retries.inc()
        elif kind == "sla_violation":
            self.sla_violations.labels(scope="node" if event.get("node_id") else "workflow").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
