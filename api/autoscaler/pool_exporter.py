"""A pool's state as Prometheus gauges: what the built-in queries of
:mod:`api.autoscaler.prometheus` read.

A real pool publishes these from its broker and its deployment (or the queries are pointed at
the metrics it has). The simulator publishes them too, through :meth:`PoolExporter.publish_step`:
that is how the closed-loop test and a replay feed the KEDA scaler through a real Prometheus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, start_http_server


class PoolExporter:
    """Gauges for one or more pools in their own registry; :meth:`serve` exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue = Gauge("prioritymax_pool_queue_tasks", "Tasks queued, by priority class",
                           ["pool", "priority"], registry=self.registry)
        self.arrival_rate = Gauge("prioritymax_pool_arrival_rate", "Arrivals over the last interval, "
                                  "tasks/s", ["pool"], registry=self.registry)
        self.arrival_rate_smoothed = Gauge("prioritymax_pool_arrival_rate_smoothed",
                                           "A smoothed arrival rate, tasks/s", ["pool"],
                                           registry=self.registry)
        self.workers = Gauge("prioritymax_pool_workers", "Workers by state (active: serving; warming: "
                             "started, not serving yet)", ["pool", "state"], registry=self.registry)
        self.utilization = Gauge("prioritymax_pool_utilization", "Busy share of the active workers",
                                 ["pool"], registry=self.registry)
        self.step = Gauge("prioritymax_pool_step", "The simulator's step these values are from "
                          "(-1 for a real pool)", ["pool"], registry=self.registry)
        self._server: Any = None

    def publish(self, pool: str, *, queue: Mapping[str, float], arrival_rate: float,
                arrival_rate_smoothed: float, active_workers: float, warming_workers: float,
                utilization: float, step: int = -1) -> None:
        for priority, tasks in queue.items():
            self.queue.labels(pool=pool, priority=priority).set(float(tasks))
        self.arrival_rate.labels(pool=pool).set(float(arrival_rate))
        self.arrival_rate_smoothed.labels(pool=pool).set(float(arrival_rate_smoothed))
        self.workers.labels(pool=pool, state="active").set(float(active_workers))
        self.workers.labels(pool=pool, state="warming").set(float(warming_workers))
        self.utilization.labels(pool=pool).set(float(utilization))
        self.step.labels(pool=pool).set(step)

    def publish_step(self, pool: str, info: Mapping[str, np.ndarray], classes: Sequence[str],
                     step: int, env: int = 0) -> None:
        """Env ``env`` of a simulator's info dict (``ml.sim``) after step ``step``."""
        self.publish(pool, queue=dict(zip(classes, info["queue"][env], strict=True)),
                     arrival_rate=info["arrival_rate"][env],
                     arrival_rate_smoothed=info["arrival_rate_smoothed"][env],
                     active_workers=info["active_workers"][env], warming_workers=info["warming_workers"][env],
                     utilization=info["utilization"][env], step=step)

    def serve(self, port: int, host: str = "127.0.0.1") -> PoolExporter:
        """Serve ``/metrics`` on ``host:port`` (a daemon thread), until :meth:`close`."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
