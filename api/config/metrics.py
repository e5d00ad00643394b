"""Prometheus metrics of the control plane: the seed's names plus request latency.

Each control plane has its own registry (several apps in one process - tests - do not clash);
``GET /config/metrics`` renders it in the text exposition format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ConfigMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.changes = Counter("prioritymax_config_changes_total", "Total config modifications",
                               ["kind", "operation"], registry=self.registry)
        self.rollbacks = Counter("prioritymax_config_rollbacks_total", "Rollbacks performed",
                                 registry=self.registry)
        self.active_keys = Gauge("prioritymax_config_active_keys", "Number of active keys in store",
                                 ["kind"], registry=self.registry)
        self.ws_connections = Gauge("prioritymax_config_ws_connections",
                                    "WebSocket subscribers connected", registry=self.registry)
        self.revision = Gauge("prioritymax_config_revision", "Latest change revision applied",
                              registry=self.registry)
        self.verification_failures = Counter(
            "prioritymax_config_verification_failures_total",
            "Verification runs that found a problem", registry=self.registry)
        self.fanout_pokes = Counter(
            "prioritymax_config_fanout_pokes_total",
            "Redis pokes from other replicas that found changes not yet applied here",
            registry=self.registry)
        self.requests = Histogram("prioritymax_config_request_duration_seconds",
                                  "Control-plane request latency", ["method", "route", "status"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)

    def refresh(self, snapshot: dict, revision: int, connections: int) -> None:
        counts: dict[str, int] = {"config": 0, "flag": 0, "secret": 0}
        for item in snapshot.values():
            counts["secret" if item["is_secret"] else item["kind"]] += 1
        for kind, count in counts.items():
            self.active_keys.labels(kind=kind).set(count)
        self.revision.set(revision)
        self.ws_connections.set(connections)

    def render(self) -> bytes:
        return generate_latest(self.registry)
