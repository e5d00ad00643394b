"""KEDA's external-scaler calls on an autoscaler worker, as KEDA's gRPC client sees them on loopback.

Everything in one run, on a fresh temporary data home (PRIORITYMAX_HOME):

0. Setup: one tiny PPO checkpoint trained here and registered as the rl_agent champion
   (``register_versions`` of ``promotion_latency.py``); a :class:`PoolExporter` on a free port
   whose pool ``--pool`` is re-published every ``--publish-interval`` (0.2 s) by a background
   thread with a changing, realistic reading (queues by class, arrival rate, workers,
   utilization), so every scrape brings a fresh sample; the Debian ``prometheus`` binary on
   loopback scraping it every ``--scrape-interval`` (1 s), its config and TSDB in the temporary
   directory (the run starts once the pool's series is in Prometheus); an
   :class:`AutoscalerWorker` in this process with PRIORITYMAX_PROMETHEUS_URL pointing at that
   Prometheus, serving KEDA's ``externalscaler.ExternalScaler`` with ``serve(worker, 0)``; one gRPC
   channel and ``ExternalScalerStub``.
1. Calls, timed on the client (``time.perf_counter`` around the blocking stub call: request
   serialized, sent over HTTP/2 on loopback, answered, deserialized), each variant warmed up with
   ``--warmup`` calls first, then interleaved call by call (round-robin, ``--calls`` of each) so a
   drift of the machine weighs on all of them alike:

   a. ``GetMetrics``, ``readings: prometheus``, ``decisionCacheSeconds: "0"``: every call reads the
      pool from Prometheus (one instant query) and decides with the champion. This is the figure,
      ``grpc_get_metrics_p99_ms`` (target <= 20 ms), with its p50 and max.
   b. the same trigger with the default decision cache (5 s): nearly every call is answered by the
      ScaledObject's cached decision (``grpc_get_metrics_cached_*``); the calls that found the
      cache expired read and decided, and are counted (``cached_calls_that_decided``).
   c. ``GetMetrics``, ``readings: posted``, ``decisionCacheSeconds: "0"``, for a tenant that has one
      decision made from a reading handed to ``worker.decide`` (what POST /autoscaler/decide does):
      each call answers with the tenant's latest decision (``grpc_get_metrics_posted_*``).
   d. the bare PromQL instant query the scaler sends for (a) (``PromQueries.expression``, one
      ``POST /api/v1/query``), with a pooled httpx client against the same Prometheus, JSON parsed
      (``prometheus_query_*``): the part of (a) that is Prometheus.

   Every fourth round also ``GetMetricSpec`` (parses the trigger, no reading) and ``IsActive`` on
   the uncached trigger of (a) (reads Prometheus and decides like (a)). And, in process, without
   gRPC, the decision alone (``worker.decide`` on a reading, no forecast: ``decide_*``).

Ratios printed beside the figures: ``prometheus_share_of_get_metrics_p50`` (d over a at p50),
``ratio_uncached_vs_cached_p99``, ``ratio_uncached_vs_posted_p99``. A failed call (a gRPC error or
a non-success query) is counted in ``failed_calls`` and left out of the latencies. CPU of this
process (client, worker, exporter) and of Prometheus over the measured calls is given in % of one
core. Each figure with a target is printed with it; the last line is one JSON object. Prometheus
is terminated (then killed) on the way out.

    .venv/bin/python bench/keda_scaler.py [--calls 2000] [--warmup 20] [--scrape-interval 1]
                                          [--json-only] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from promotion_latency import cpu_seconds, free_port, percentile, register_versions

#: figure -> its target (at most)
TARGETS = {"grpc_get_metrics_p99_ms": 20}
TENANT_POSTED = "org:bench-posted"
INSTALL_HINT = "apt-get install -y --no-install-recommends prometheus (or run .ci/run)"


def ms(seconds: float | None, digits: int = 3) -> float | None:
    return None if seconds is None else round(seconds * 1000, digits)


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return None if a is None or not b else round(a / b, digits)


# -------------------------------------------------------------------------------- Prometheus
class Prometheus:
    """The ``prometheus`` binary on loopback scraping ``target`` every ``interval`` seconds, its
    config, TSDB and log under ``root``; :meth:`start` returns once ``/-/ready`` answers."""

    def __init__(self, root: Path, target: str, interval: float) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise SystemExit(f"prometheus is not installed (no 'prometheus' on the PATH): {INSTALL_HINT}")
        self.binary, self.root, self.port = binary, root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "prometheus.log"
        root.mkdir(parents=True, exist_ok=True)
        every = f"{round(interval * 1000)}ms"
        (root / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {every}\n  scrape_timeout: {every}\n"
            f"scrape_configs:\n  - job_name: pools\n    static_configs:\n      - targets: [\"{target}\"]\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Prometheus:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={self.root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1, trust_env=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus was not ready within {timeout:.0f} s:\n{self.tail()}")

    def wait_for_series(self, expression: str, timeout: float = 60) -> None:
        """Until ``expression`` answers a sample (a scrape has brought the pool in)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = httpx.post(f"{self.url}/api/v1/query", data={"query": expression}, timeout=5,
                              trust_env=False).json()
            if body.get("status") == "success" and body["data"]["result"]:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{expression} answered nothing within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# ---------------------------------------------------------------------------- the pool's state
class Publisher:
    """Re-publishes the pool's state every ``interval`` seconds on a daemon thread: a reading that
    moves (queues, arrivals, utilization on slow waves), as a busy pool's would."""

    def __init__(self, exporter, pool: str, classes: tuple[str, ...], interval: float) -> None:
        self.exporter, self.pool, self.classes, self.interval = exporter, pool, classes, interval
        self.step = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-publisher")

    def publish(self) -> None:
        t = self.step * self.interval
        wave = 1.0 + 0.4 * math.sin(t / 7.0)
        base = (10.0, 100.0, 50.0)
        queue = {c: round(base[i % 3] * wave * (1.0 + 0.1 * math.sin(t + i)))
                 for i, c in enumerate(self.classes)}
        arrival = 12.0 * wave
        self.exporter.publish(self.pool, queue=queue, arrival_rate=arrival,
                              arrival_rate_smoothed=12.0 * (1.0 + 0.3 * math.sin(t / 9.0)),
                              active_workers=10 + round(3 * math.sin(t / 11.0)),
                              warming_workers=int(self.step % 3 == 0),
                              utilization=min(1.0, 0.75 + 0.2 * math.sin(t / 5.0)), step=self.step)
        self.step += 1

    def start(self) -> Publisher:
        self.publish()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------------- measuring
def timed(call: Callable[[], object], failures: dict[str, int], name: str) -> float | None:
    started = time.perf_counter()
    try:
        call()
    except Exception as error:  # a gRPC error or a refused query: counted, not timed
        failures[name] = failures.get(name, 0) + 1
        if failures[name] == 1:
            print(f"{name}: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    return time.perf_counter() - started


def measure(stub, worker, prometheus: Prometheus, options) -> dict:
    from api.autoscaler.keda import externalscaler_pb2 as pb
    from api.autoscaler.keda.scaler import NO_FORECAST
    from api.autoscaler.prometheus import PromQueries
    from api.autoscaler.schemas import Reading

    def ref(**metadata: str):
        return pb.ScaledObjectRef(name=f"{options.pool}-workers", namespace="bench",
                                  scalerMetadata={"pool": options.pool, **metadata})

    uncached, cached = ref(decisionCacheSeconds="0"), ref()
    posted = ref(readings="posted", tenant=TENANT_POSTED, decisionCacheSeconds="0")
    metric = stub.GetMetricSpec(uncached, timeout=10).metricSpecs[0].metricName
    classes = worker.policy_config().class_names
    reading = {"queue": dict(zip(classes, (10, 100, 50), strict=False)), "arrival_rate": 12.0,
               "active_workers": 10, "utilization": 0.9}
    worker.decide(Reading(**reading, tenant=TENANT_POSTED))  # the tenant's POSTed reading, decided
    expression = PromQueries.build(options.pool, None, worker.settings.prometheus_queries).expression(classes)
    client = httpx.Client(base_url=prometheus.url, timeout=10, trust_env=False)

    def query():
        body = client.post("/api/v1/query", data={"query": expression}).json()
        if body.get("status") != "success" or not body["data"]["result"]:
            raise RuntimeError(f"the query answered {str(body)[:300]}")

    def get_metrics(trigger):
        request = pb.GetMetricsRequest(scaledObjectRef=trigger, metricName=metric)
        return lambda: stub.GetMetrics(request, timeout=10)

    variants = {"get_metrics": get_metrics(uncached), "get_metrics_cached": get_metrics(cached),
                "get_metrics_posted": get_metrics(posted), "prometheus_query": query}
    occasional = {"get_metric_spec": lambda: stub.GetMetricSpec(uncached, timeout=10),
                  "is_active": lambda: stub.IsActive(uncached, timeout=10)}
    failures: dict[str, int] = {}
    times: dict[str, list[float]] = {name: [] for name in (*variants, *occasional, "decide")}
    try:
        for name, call in {**variants, **occasional}.items():
            for _ in range(options.warmup):
                timed(call, failures, f"{name}_warmup")

        def cached_count() -> float:
            labels = {"rpc": "GetMetrics", "outcome": "cached"}
            return worker.metrics.registry.get_sample_value(
                "prioritymax_autoscaler_keda_requests_total", labels) or 0.0

        before_cached = cached_count()
        cpu_self, cpu_prom = time.process_time(), cpu_seconds(prometheus.process.pid)
        began = time.perf_counter()
        order = list(variants)
        for index in range(options.calls):
            shift = index % len(order)  # rotate who goes first: no variant always follows another
            for name in order[shift:] + order[:shift]:
                took = timed(variants[name], failures, name)
                if took is not None:
                    times[name].append(took)
            if index % 4 == 0:
                for name, call in occasional.items():
                    took = timed(call, failures, name)
                    if took is not None:
                        times[name].append(took)
        wall = time.perf_counter() - began
        cpu_self = time.process_time() - cpu_self
        cpu_prom = cpu_seconds(prometheus.process.pid) - cpu_prom
        cached_answers = cached_count() - before_cached
        for _ in range(max(options.calls // 4, 10)):  # the decision alone, in process, no gRPC
            reading_now = Reading(**reading)
            started = time.perf_counter()
            worker.decide(reading_now, NO_FORECAST)
            times["decide"].append(time.perf_counter() - started)
    finally:
        client.close()
    warmup_failures = sum(v for k, v in failures.items() if k.endswith("_warmup"))
    figures: dict = {}
    for name, values in times.items():
        label = name if name in ("prometheus_query", "decide") else f"grpc_{name}"
        figures[f"{label}_p50_ms"] = ms(percentile(values, 0.5))
        figures[f"{label}_p99_ms"] = ms(percentile(values, 0.99))
        figures[f"{label}_max_ms"] = ms(max(values, default=None))
    f = figures
    decided_cached = len(times["get_metrics_cached"]) - cached_answers
    uncached_p50, uncached_p99 = f["grpc_get_metrics_p50_ms"], f["grpc_get_metrics_p99_ms"]
    return f | {
        "prometheus_share_of_get_metrics_p50": ratio(f["prometheus_query_p50_ms"], uncached_p50),
        "prometheus_share_of_get_metrics_p99": ratio(f["prometheus_query_p99_ms"], uncached_p99),
        "ratio_uncached_vs_cached_p99": ratio(uncached_p99, f["grpc_get_metrics_cached_p99_ms"]),
        "ratio_uncached_vs_cached_p50": ratio(uncached_p50, f["grpc_get_metrics_cached_p50_ms"]),
        "ratio_uncached_vs_posted_p99": ratio(uncached_p99, f["grpc_get_metrics_posted_p99_ms"]),
        "cached_calls_that_decided": max(0, round(decided_cached)),
        "calls": options.calls,
        "calls_get_metric_spec": len(times["get_metric_spec"]),
        "calls_is_active": len(times["is_active"]),
        "failed_calls": sum(v for k, v in failures.items() if not k.endswith("_warmup")),
        "failed_warmup_calls": warmup_failures,
        "failures_by_kind": {k: v for k, v in failures.items() if not k.endswith("_warmup")},
        "measured_s": round(wall, 2),
        "bench_process_cpu_pct": round(100 * cpu_self / wall, 1),
        "prometheus_cpu_pct": round(100 * cpu_prom / wall, 1),
    }


# ------------------------------------------------------------------------------------ report
def report(f: dict, options) -> None:
    print(f"calls: {f['calls']:,} of each GetMetrics variant and of the bare query, interleaved, over "
          f"{f['measured_s']} s ({f['cpus']} CPUs; this process {f['bench_process_cpu_pct']}% of a core, "
          f"Prometheus {f['prometheus_cpu_pct']}%); scrape every {options.scrape_interval:g} s, pool "
          f"re-published every {options.publish_interval:g} s; {f['failed_calls']} failed calls")
    print(f"grpc_get_metrics_p99_ms: {f['grpc_get_metrics_p99_ms']} (target 20; readings from Prometheus, "
          f"no decision cache: p50 {f['grpc_get_metrics_p50_ms']}, max {f['grpc_get_metrics_max_ms']})")
    print(f"grpc_get_metrics_cached_p99_ms: {f['grpc_get_metrics_cached_p99_ms']} (default 5 s decision "
          f"cache: p50 {f['grpc_get_metrics_cached_p50_ms']}, max {f['grpc_get_metrics_cached_max_ms']}; "
          f"{f['cached_calls_that_decided']} calls found it expired and decided)")
    print(f"grpc_get_metrics_posted_p99_ms: {f['grpc_get_metrics_posted_p99_ms']} (readings: posted, the "
          f"tenant's latest decision: p50 {f['grpc_get_metrics_posted_p50_ms']}, max "
          f"{f['grpc_get_metrics_posted_max_ms']})")
    print(f"prometheus_query_p99_ms: {f['prometheus_query_p99_ms']} (the scaler's instant query alone, "
          f"httpx: p50 {f['prometheus_query_p50_ms']}, max {f['prometheus_query_max_ms']})")
    print(f"decide_p99_ms: {f['decide_p99_ms']} (the decision alone, in process: p50 {f['decide_p50_ms']})")
    print(f"grpc_get_metric_spec_p99_ms: {f['grpc_get_metric_spec_p99_ms']} (p50 "
          f"{f['grpc_get_metric_spec_p50_ms']}, {f['calls_get_metric_spec']} calls); grpc_is_active_p99_ms: "
          f"{f['grpc_is_active_p99_ms']} (uncached, reads Prometheus: p50 {f['grpc_is_active_p50_ms']}, "
          f"{f['calls_is_active']} calls)")
    print(f"prometheus_share_of_get_metrics_p50: {f['prometheus_share_of_get_metrics_p50']} (p99 "
          f"{f['prometheus_share_of_get_metrics_p99']}); ratio_uncached_vs_cached_p99: "
          f"{f['ratio_uncached_vs_cached_p99']} (p50 {f['ratio_uncached_vs_cached_p50']}); "
          f"ratio_uncached_vs_posted_p99: {f['ratio_uncached_vs_posted_p99']}")
    for name, target in TARGETS.items():
        value = f[name]
        met = value is not None and value <= target
        print(f"  {name}: {value} vs target <= {target:,}: {'met' if met else 'NOT met'}")


def run(options) -> dict:
    import grpc

    from api.autoscaler.keda import externalscaler_pb2_grpc as pb_grpc
    from api.autoscaler.keda.scaler import serve, stop
    from api.autoscaler.pool_exporter import PoolExporter
    from api.autoscaler.worker import AutoscalerWorker
    from prioritymax.settings import get_settings

    with tempfile.TemporaryDirectory(prefix="pmx-bench-keda-") as scratch:
        began = time.perf_counter()
        versions = register_versions(Path(scratch) / "home", Path(scratch) / "train", 1)
        trained_s = time.perf_counter() - began
        exporter = prometheus = worker = publisher = channel = server = scaler = None
        try:
            exporter = PoolExporter().serve(free_port())
            target = f"127.0.0.1:{exporter._server.server_port}"
            prometheus = Prometheus(Path(scratch) / "prometheus", target, options.scrape_interval).start()
            os.environ["PRIORITYMAX_PROMETHEUS_URL"] = prometheus.url
            get_settings.cache_clear()
            worker = AutoscalerWorker(name="bench-keda", alert=lambda *_, **__: None).start()
            if not worker.wait_loaded(120) or worker.models.policy is None:
                raise RuntimeError(f"the worker did not load the champion: {worker.health()}")
            publisher = Publisher(exporter, options.pool, worker.policy_config().class_names,
                                  options.publish_interval).start()
            prometheus.wait_for_series(f'prioritymax_pool_step{{pool="{options.pool}"}}')
            server, scaler = serve(worker, 0)
            # Loopback only: never through an HTTP proxy the environment may name.
            channel = grpc.insecure_channel(f"127.0.0.1:{scaler.port}",
                                            options=[("grpc.enable_http_proxy", 0)])
            grpc.channel_ready_future(channel).result(timeout=30)
            setup_s = time.perf_counter() - began
            if not options.json_only:
                print(f"setup: champion version {versions[0]} trained and registered in {trained_s:.1f} s; "
                      f"Prometheus {prometheus.url} scraping the exporter; worker serving KEDA's scaler on "
                      f"127.0.0.1:{scaler.port} after {setup_s:.1f} s", flush=True)
            figures = measure(pb_grpc.ExternalScalerStub(channel), worker, prometheus, options)
            if prometheus.process.poll() is not None:
                raise RuntimeError(f"prometheus exited during the run:\n{prometheus.tail()}")
            return figures | {"setup_s": round(setup_s, 1), "cpus": os.cpu_count(),
                              "scrape_interval_s": options.scrape_interval,
                              "publish_interval_s": options.publish_interval,
                              "samples_published": publisher.step}
        except BaseException:
            if prometheus is not None and prometheus.process is not None:
                print(f"--- prometheus log:\n{prometheus.tail()}", file=sys.stderr)
            raise
        finally:
            if channel is not None:
                channel.close()
            if server is not None:
                stop(server, scaler)
            if publisher is not None:
                publisher.stop()
            if worker is not None:
                worker.close()
            if prometheus is not None:
                prometheus.stop()
            if exporter is not None:
                exporter.close()
            os.environ.pop("PRIORITYMAX_PROMETHEUS_URL", None)
            get_settings.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls of each GetMetrics variant")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls of each variant first")
    parser.add_argument("--pool", default="checkout")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="Prometheus' scrape interval, s")
    parser.add_argument("--publish-interval", type=float, default=0.2,
                        help="seconds between re-publications of the pool's state")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--quick", action="store_true", help="100 calls: checks the script runs")
    options = parser.parse_args()
    if options.quick:
        options.calls = 100
    if options.calls < 1 or options.warmup < 0 or min(options.scrape_interval, options.publish_interval) <= 0:
        parser.error("needs --calls >= 1, --warmup >= 0 and positive intervals")
    # A SIGTERM (a timeout killing the bench) unwinds through the finally that stops Prometheus.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.perf_counter()
    figures = run(options)
    figures["bench_s"] = round(time.perf_counter() - began, 1)
    if not options.json_only:
        report(figures, options)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
