"""KEDA's external scaler, served by an autoscaler worker: KEDA asks, the champion policy answers.

A ScaledObject's ``external`` trigger points KEDA at ``pmx autoscaler --grpc-port``; its metadata
(KEDA passes all of it in ``ScaledObjectRef.scalerMetadata``) says which pool this is:

``tenant``
    whose flags and mode decide (``autoscaler_loop``, ``autoscaler.mode``) [the global layer]
``pool``
    the pool's name in the readings' queries (``$pool``) [the ScaledObject's name]
``readings``
    ``prometheus`` (default): each decision's reading is read from Prometheus now
    (:mod:`api.autoscaler.prometheus`); ``posted``: the latest decision made for the tenant from a
    reading POSTed to ``/autoscaler/decide`` (refused when older than ``maxReadingAgeSeconds``,
    default 300)
``prometheusAddress``
    the Prometheus server [PRIORITYMAX_PROMETHEUS_URL]
``query.<field>``
    PromQL for one reading field (queue, arrivalRate, arrivalRateSmoothed, activeWorkers,
    warmingWorkers, utilization) [PRIORITYMAX_PROMETHEUS_QUERIES, else the built-in one]
``decisionCacheSeconds``
    how long one decision answers KEDA's calls for this ScaledObject (default 5): KEDA calls
    ``GetMetrics`` and ``IsActive`` in each polling cycle and the HPA asks again through KEDA's
    metrics server; one reading and one decision serve them all.

The arithmetic. KEDA hands ``GetMetrics``' value to the HPA as an external metric of type
``AverageValue`` (KEDA's default for external triggers) with ``GetMetricSpec``'s target, and the HPA
sets ``desired = ceil(current × (value / current) / target) = ceil(value / target)``. The scaler
says ``target = 1`` and ``value = the policy's target replicas``, an integer, so ``desired`` is the
policy's target exactly (KEDA turns the float into a milli-quantity: integers pass unchanged).
The edge cases are the HPA's, not the arithmetic's, and the ScaledObject sets them
(``deploy/kubernetes/scaledobject.yaml``):

* *Tolerance.* The HPA ignores a change when ``|desired / current - 1| <= 0.1`` (its default
  tolerance), in floating point: on a pool of more than 10 replicas a one-replica step is dropped
  (10 -> 11 passes only because ``1.1 - 1`` is a hair above 0.1 in binary). Kubernetes 1.33+
  takes a per-HPA ``tolerance`` in ``behavior`` (feature gate HPAConfigurableTolerance); older
  clusters set ``--horizontal-pod-autoscaler-tolerance`` on the controller manager.
* *Stabilization.* The HPA holds scale-downs for 300 s by default; the policy has already
  smoothed its decision, so the manifests set ``stabilizationWindowSeconds: 0``.
* *Bounds.* ``minReplicaCount`` and ``maxReplicaCount`` clamp ``desired``; they should equal the
  policy's ``min_workers`` and ``max_workers`` (the decision is already clamped to those).
* *Zero.* The HPA does not act on a Deployment at 0 replicas: KEDA activates it (0 -> 1) when
  ``IsActive`` is true and deactivates it after ``cooldownPeriod`` of false. ``IsActive`` is false
  only when the policy's target is its minimum and every queue is empty.
* *Rounding* never moves ``desired``: ``ceil(n / 1) = n`` for an integer ``n``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from api.autoscaler.decide import ReadingError
from api.autoscaler.keda import externalscaler_pb2 as pb
from api.autoscaler.keda import externalscaler_pb2_grpc as pb_grpc
from api.autoscaler.prometheus import PromError, PromPool, PromQueries, PromUnavailable
from api.autoscaler.schemas import Decision, Forecast, Reading
from api.autoscaler.worker import AutoscalerWorker

log = logging.getLogger("api.autoscaler.keda")

PROMETHEUS, POSTED = "prometheus", "posted"
#: ``GetMetricSpec``'s target: one replica per unit of the value (see the module doc).
TARGET = 1.0
DEFAULT_CACHE_S = 5.0
DEFAULT_MAX_AGE_S = 300.0
#: ``StreamIsActive`` checks this often unless the trigger says (``streamIntervalSeconds``).
DEFAULT_STREAM_S = 5.0
#: Decisions kept, one per trigger (ScaledObject and metadata); the oldest go first.
CACHE_LIMIT = 10_000
NO_FORECAST = Forecast(available=False, reason="KEDA's calls decide without waiting for a forecast")


class TriggerError(ValueError):
    """A ScaledObject trigger's metadata that cannot be served; says which key and why."""


@dataclass(frozen=True)
class Trigger:
    """What one ScaledObject's trigger metadata asks for."""

    key: str  # namespace/name and the metadata: a ScaledObject may have several such triggers
    tenant: str | None
    pool: str
    readings: str
    prometheus_url: str | None
    queries: PromQueries
    cache_seconds: float
    max_age_seconds: float
    stream_seconds: float

    @property
    def metric_name(self) -> str:
        """The metric's name for the HPA: lowercase, digits and dashes, as Kubernetes names are."""
        return "prioritymax-" + (re.sub(r"[^a-z0-9-]+", "-", self.pool.lower()).strip("-") or "pool")

    @classmethod
    def parse(cls, ref: pb.ScaledObjectRef, settings: Any) -> Trigger:
        meta = dict(ref.scalerMetadata)
        tenant = meta.get("tenant") or None
        pool = meta.get("pool") or ref.name
        if not pool:
            raise TriggerError("the trigger names no pool (metadata 'pool') and the ScaledObject no name")
        readings = meta.get("readings", PROMETHEUS)
        if readings not in (PROMETHEUS, POSTED):
            raise TriggerError(f"readings must be {PROMETHEUS!r} or {POSTED!r}, not {readings!r}")
        url = meta.get("prometheusAddress") or settings.prometheus_url
        if readings == PROMETHEUS and not url:
            raise TriggerError("readings from Prometheus need its address: set 'prometheusAddress' in "
                               "the trigger or PRIORITYMAX_PROMETHEUS_URL on the worker")
        overrides = {k.removeprefix("query."): v for k, v in meta.items() if k.startswith("query.")}
        try:
            queries = PromQueries.build(pool, tenant, settings.prometheus_queries, overrides)
        except ValueError as error:
            raise TriggerError(str(error)) from None
        return cls(key=f"{ref.namespace}/{ref.name}/{sorted(meta.items())}", tenant=tenant, pool=pool,
                   readings=readings, prometheus_url=url, queries=queries,
                   cache_seconds=_seconds(meta, "decisionCacheSeconds", DEFAULT_CACHE_S),
                   max_age_seconds=_seconds(meta, "maxReadingAgeSeconds", DEFAULT_MAX_AGE_S),
                   stream_seconds=_seconds(meta, "streamIntervalSeconds", DEFAULT_STREAM_S, low=0.1))


def _seconds(meta: dict[str, str], key: str, default: float, low: float = 0.0) -> float:
    text = meta.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= 86_400:
        raise TriggerError(f"{key} must be a number of seconds from {low} to 86400, not {text!r}")
    return value


@dataclass(frozen=True)
class Answer:
    """One decision and the reading it was made from, as KEDA's calls share it."""

    at: float  # time.monotonic()
    reading: Reading
    decision: Decision
    minimum: int  # the policy's min_workers

    @property
    def active(self) -> bool:
        """False only when the pool may rest at the policy's minimum: target there, queues empty."""
        return not (self.decision.target_workers <= self.minimum and not any(self.reading.queue.values()))


class KedaScaler(pb_grpc.ExternalScalerServicer):
    """The ``externalscaler.ExternalScaler`` service over one :class:`AutoscalerWorker`."""

    def __init__(self, worker: AutoscalerWorker) -> None:
        self.worker = worker
        self.prometheus = PromPool()
        self._answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: The port :func:`serve` bound (useful when it was asked for port 0).
        self.port: int | None = None

    def close(self) -> None:
        self._stopping.set()
        self.prometheus.close()

    # ------------------------------------------------------------------------------ the RPCs
    def IsActive(self, request, context):  # noqa: N802 - KEDA's name
        answer = self._answer(request, context, "IsActive")
        return pb.IsActiveResponse(result=answer.active)

    def StreamIsActive(self, request, context):  # noqa: N802
        """The activity now, then again whenever it changes, checked every ``streamIntervalSeconds``
        until KEDA hangs up (or the worker stops)."""
        trigger = self._trigger(request, context)
        last = None
        while context.is_active() and not self._stopping.is_set():
            active = self._answer(request, context, "StreamIsActive", trigger).active
            if active != last:
                last = active
                yield pb.IsActiveResponse(result=active)
            self._stopping.wait(trigger.stream_seconds)

    def GetMetricSpec(self, request, context):  # noqa: N802
        trigger = self._trigger(request, context)
        self.worker.metrics.keda_requests.labels(rpc="GetMetricSpec", outcome="ok").inc()
        return pb.GetMetricSpecResponse(metricSpecs=[pb.MetricSpec(
            metricName=trigger.metric_name, targetSize=int(TARGET), targetSizeFloat=TARGET)])

    def GetMetrics(self, request, context):  # noqa: N802
        started = time.perf_counter()
        ref = request.scaledObjectRef
        trigger = self._trigger(ref, context)
        replicas = self._answer(ref, context, "GetMetrics", trigger).decision.target_workers
        self.worker.metrics.keda_latency.observe(time.perf_counter() - started)
        return pb.GetMetricsResponse(metricValues=[pb.MetricValue(
            metricName=request.metricName or trigger.metric_name,
            metricValue=replicas, metricValueFloat=float(replicas))])

    # ------------------------------------------------------------------------------- answers
    def _trigger(self, ref, context) -> Trigger:
        try:
            return Trigger.parse(ref, self.worker.settings)
        except TriggerError as error:
            self.worker.metrics.keda_requests.labels(rpc="any", outcome="bad_trigger").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"ScaledObject {ref.namespace}/{ref.name}: {error}")
            raise  # abort raises; this line keeps type checkers honest

    def _answer(self, ref, context, rpc: str, trigger: Trigger | None = None) -> Answer:
        trigger = trigger or self._trigger(ref, context)
        with self._lock:
            cached = self._answers.get(trigger.key)
        if cached is not None and time.monotonic() - cached.at < trigger.cache_seconds:
            self.worker.metrics.keda_requests.labels(rpc=rpc, outcome="cached").inc()
            return cached
        try:
            answer = self._decide(trigger)
        except (PromError, ReadingError, LookupError) as error:
            self._fail(context, rpc, "bad_reading", grpc.StatusCode.FAILED_PRECONDITION, trigger, error)
        except PromUnavailable as error:
            self._fail(context, rpc, "prometheus_unavailable", grpc.StatusCode.UNAVAILABLE, trigger, error)
        with self._lock:
            if len(self._answers) >= CACHE_LIMIT and trigger.key not in self._answers:
                self._answers.pop(next(iter(self._answers)))
            self._answers[trigger.key] = answer
        self.worker.metrics.keda_requests.labels(rpc=rpc, outcome="ok").inc()
        return answer

    def _fail(self, context, rpc: str, outcome: str, code, trigger: Trigger, error: Exception) -> None:
        self.worker.metrics.keda_requests.labels(rpc=rpc, outcome=outcome).inc()
        log.warning("KEDA %s for %s (pool %s): %s", rpc, trigger.key, trigger.pool, error)
        context.abort(code, f"pool {trigger.pool!r}: {error}")

    def _decide(self, trigger: Trigger) -> Answer:
        config = self.worker.policy_config()
        minimum = config.min_workers
        if trigger.readings == POSTED:
            latest = self.worker.latest_decision(trigger.tenant)
            if latest is None:
                raise LookupError(f"no reading has been POSTed for tenant {trigger.tenant or '(global)'}")
            at, reading, decision = latest
            age = time.time() - at
            if age > trigger.max_age_seconds:
                raise LookupError(f"the latest reading POSTed for tenant {trigger.tenant or '(global)'} "
                                  f"is {age:.0f} s old (maxReadingAgeSeconds {trigger.max_age_seconds:g})")
            return Answer(time.monotonic(), reading, decision, minimum)
        reading = self.prometheus.get(trigger.prometheus_url).reading(trigger.queries, config.class_names)
        decision = self.worker.decide(reading, NO_FORECAST)
        self.worker.forecast_later(reading)
        return Answer(time.monotonic(), reading, decision, minimum)


def serve(worker: AutoscalerWorker, port: int, host: str = "127.0.0.1",
          threads: int = 8) -> tuple[grpc.Server, KedaScaler]:
    """Start KEDA's external scaler for ``worker`` on ``host:port`` (0: a free port, see the
    server's bound port in the log); ``stop`` both with :func:`stop`."""
    from concurrent.futures import ThreadPoolExecutor

    scaler = KedaScaler(worker)
    server = grpc.server(ThreadPoolExecutor(threads, thread_name_prefix="keda-scaler"))
    pb_grpc.add_ExternalScalerServicer_to_server(scaler, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot serve gRPC on {host}:{port}")
    server.start()
    scaler.port = bound
    log.info("KEDA external scaler on %s:%d", host, bound)
    return server, scaler


def stop(server: grpc.Server, scaler: KedaScaler, grace: float = 2.0) -> None:
    scaler.close()
    with contextlib.suppress(Exception):
        server.stop(grace).wait(grace + 1)
