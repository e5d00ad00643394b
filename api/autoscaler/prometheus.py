"""Readings from Prometheus: one decision's reading built from PromQL instant queries.

A real pool's state lives in Prometheus (queue lengths from the broker's exporter, replicas from
kube-state-metrics, arrivals from the ingress), not in POSTs to ``/autoscaler/decide``. A
:class:`PromQueries` holds one query per reading field, with ``$pool``, ``$tenant`` and (for the
queue) ``$priority`` filled in; the built-in queries read the gauges that
:class:`~api.autoscaler.pool_exporter.PoolExporter` publishes, and settings
(``PRIORITYMAX_PROMETHEUS_QUERIES``) or a ScaledObject's trigger (``query.<field>``) replace any of
them, e.g. ``query.arrivalRate: sum(rate(nginx_ingress_controller_requests{service="api"}[1m]))``.

All the queries of one reading go to Prometheus as *one* instant query: each is tagged with a
``pmx_field`` label by ``label_replace`` and joined with ``or``, so a reading costs one round
trip, and every field is read at the same evaluation time.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from string import Template
from typing import Any

import httpx

from api.autoscaler.schemas import Reading

#: Reading fields by the name a ScaledObject's trigger metadata uses (``query.<name>``).
FIELDS = {"queue": "queue", "arrivalRate": "arrival_rate", "arrivalRateSmoothed": "arrival_rate_smoothed",
          "activeWorkers": "active_workers", "warmingWorkers": "warming_workers",
          "utilization": "utilization"}
#: The gauges of :class:`~api.autoscaler.pool_exporter.PoolExporter`.
DEFAULT_QUERIES = {
    "queue": 'sum(prioritymax_pool_queue_tasks{pool="$pool",priority="$priority"})',
    "arrival_rate": 'sum(prioritymax_pool_arrival_rate{pool="$pool"})',
    "arrival_rate_smoothed": 'sum(prioritymax_pool_arrival_rate_smoothed{pool="$pool"})',
    "active_workers": 'sum(prioritymax_pool_workers{pool="$pool",state="active"})',
    "warming_workers": 'sum(prioritymax_pool_workers{pool="$pool",state="warming"})',
    "utilization": 'avg(prioritymax_pool_utilization{pool="$pool"})',
}
#: Fields a pool may lack: no warming replicas reported means none, no smoothed rate means the
#: rate itself (as in a POSTed reading).
OPTIONAL = {"warming_workers", "arrival_rate_smoothed"}
LABEL = "pmx_field"


class PromError(Exception):
    """Prometheus answered, but not with a usable reading (a query error, a missing or repeated
    series, a value out of range); says which query."""


class PromUnavailable(Exception):
    """Prometheus could not be reached or did not answer in time."""


def _label_value(text: str) -> str:
    """``text`` safe inside a PromQL label matcher's double quotes (no query injection)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class PromQueries:
    """The PromQL of each reading field for one pool; ``queries`` by field (see :data:`FIELDS`)."""

    pool: str
    tenant: str | None = None
    queries: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))

    @classmethod
    def build(cls, pool: str, tenant: str | None, *overrides: dict[str, str]) -> PromQueries:
        """The built-in queries, replaced by each of ``overrides`` in turn (settings, then the
        trigger's); a field name that is not a reading field is a ``ValueError``."""
        queries = dict(DEFAULT_QUERIES)
        for override in overrides:
            for name, query in override.items():
                key = FIELDS.get(name, name)
                if key not in DEFAULT_QUERIES:
                    raise ValueError(f"no reading field {name!r} to query: the fields are {sorted(FIELDS)}")
                if not query.strip():
                    raise ValueError(f"the query for {name!r} is empty")
                queries[key] = query
        return cls(pool, tenant, queries)

    def expression(self, classes: tuple[str, ...]) -> str:
        """One PromQL expression that answers every field, each series tagged ``pmx_field``."""
        values = {"pool": _label_value(self.pool), "tenant": _label_value(self.tenant or "")}
        parts = []
        for key, query in self.queries.items():
            for priority in classes if key == "queue" else (None,):
                tag = key if priority is None else f"queue:{priority}"
                try:
                    text = Template(query).substitute(values, priority=_label_value(priority or ""))
                except (KeyError, ValueError) as error:
                    raise PromError(f"the {key} query {query!r} has a placeholder other than $pool, "
                                    f"$tenant and $priority: {error}") from None
                parts.append(f'label_replace(({text}), "{LABEL}", "{_label_value(tag)}", "", "")')
        return " or ".join(parts)


class PromReadings:
    """Readings from one Prometheus server (``url``), over one pooled HTTP client."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=timeout)  # thread-safe, pooled

    def close(self) -> None:
        self.client.close()

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's vector (Prometheus's HTTP API, ``POST /api/v1/query``)."""
        try:
            response = self.client.post("/api/v1/query", data={"query": expression})
        except httpx.HTTPError as error:
            raise PromUnavailable(f"Prometheus at {self.url}: {type(error).__name__}: {error}") from None
        try:
            body = response.json()
        except ValueError:
            raise PromUnavailable(f"Prometheus at {self.url} answered HTTP {response.status_code} "
                                  f"without JSON") from None
        if body.get("status") != "success":
            raise PromError(f"Prometheus at {self.url} refused the query ({body.get('errorType')}): "
                            f"{body.get('error')}")
        data = body["data"]
        if data.get("resultType") != "vector":
            raise PromError(f"the queries must answer instant vectors, not {data.get('resultType')}")
        return data["result"]

    def reading(self, queries: PromQueries, classes: tuple[str, ...]) -> Reading:
        """The pool's reading now; :class:`PromError` naming the field whose query answered no
        series, several series (aggregate it: ``sum``, ``avg``) or a value a reading refuses."""
        values: dict[str, float] = {}
        for sample in self.query(queries.expression(classes)):
            tag = sample["metric"].get(LABEL, "")
            if tag in values:
                raise PromError(f"the {tag} query answered several series: aggregate it to one "
                                f"(sum, avg, max): {queries.queries[tag.split(':')[0]]!r}")
            values[tag] = float(sample["value"][1])
        missing = [tag for tag in (*(f"queue:{c}" for c in classes),
                                   *(k for k in DEFAULT_QUERIES if k != "queue"))
                   if tag not in values and tag not in OPTIONAL]
        if missing:
            raise PromError(f"no series for {missing} of pool {queries.pool!r}: "
                            + "; ".join(f"{tag}: {queries.queries[tag.split(':')[0]]!r}" for tag in missing))
        bad = {tag: v for tag, v in values.items() if not math.isfinite(v) or v < 0}
        if bad:
            raise PromError(f"negative or non-finite values for pool {queries.pool!r}: {bad}")
        return Reading(
            tenant=queries.tenant, queue={c: values[f"queue:{c}"] for c in classes},
            arrival_rate=values["arrival_rate"],
            arrival_rate_smoothed=values.get("arrival_rate_smoothed"),
            active_workers=round(values["active_workers"]),
            warming_workers=round(values.get("warming_workers", 0.0)),
            utilization=min(values["utilization"], 1.0))


class PromPool:
    """One :class:`PromReadings` per Prometheus URL, made on first use and kept (their HTTP
    connections with them)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._servers: dict[str, PromReadings] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> PromReadings:
        with self._lock:
            server = self._servers.get(url)
            if server is None:
                server = self._servers[url] = PromReadings(url, self.timeout)
            return server

    def close(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.close()
            self._servers.clear()
