"""Promotion to live across autoscaler workers, and decision latency under load, in one run.

Everything on loopback, on a fresh temporary data home (PRIORITYMAX_HOME for every process):

0. Setup: ``--versions`` tiny PPO checkpoints (seeds 1, 2, ...) trained in this process and
   registered as rl_agent versions with a passed gate, the first promoted; the API (uvicorn,
   ``api.main:app``, admin token from PRIORITYMAX_ADMIN_TOKEN) and ``--workers`` autoscaler workers
   (``python -m pmx.cli autoscaler``, each its own process and port) following it over the
   WebSocket with the admin token. The run starts once every worker's /autoscaler/health says
   ``ok``, connected, serving the first version, and after one GET /admin/models (the API's first
   registry call imports MLflow: ``api_first_registry_call_ms``, kept out of the first promotion).
1. Load: POST /autoscaler/decide to every worker, round-robin at a fixed total rate (``--rate``
   decisions/s, each worker ``rate / workers``), from this process: raw HTTP/1.1 on asyncio
   (uvloop when installed), one keep-alive connection per worker, a request sent on its schedule
   (or as soon as the previous one on that connection is answered, when late). Each decision's
   latency is what the client sees on loopback, send to last byte. A failed request is a non-200
   answer or a transport error (refused, reset, no answer in ``--request-timeout``).
   After a warm-up of 2 s, ``--seconds`` of steady load is the "outside a swap" window. The
   default 200/s keeps the load well short of the machine: on 2 cores, the 20 workers spend about
   45 % of one core serving it and this client under 10 % (``*_cpu_pct_outside_swap``, next to
   ``*_cpu_pct_idle``, 3 s with no load before it starts).
2. Promotions: ``--promotions`` times, POST /admin/models/rl_agent/promote to the next version
   (cycling through the registered ones). The clock starts when the call returns; a worker is live
   at the first decision it answers with the new ``policy_version`` (seen by the load, so the
   resolution is one request interval per worker, ``live_resolution_ms``). The swap window runs
   from sending the promote call until the last worker is live (or ``--swap-timeout``); its
   requests are the "during a swap" figures and its failures ``failed_requests_during_swap``.
   Per-worker times are pooled over the promotions (p50/p99/max). ``promotion_to_swap_*`` is the
   same from each worker's own swap record (GET /autoscaler/swaps, ``at``: ``time.time()`` at
   the swap, one clock on one machine), without the load's resolution.
   Then the same with shadows (``--promotions`` more): the next version is made the registry's
   ``challenger``, every worker loads it beside the champion (they ask the registry every second
   here, PRIORITYMAX_SHADOW_REFRESH_SECONDS=1) and decides with it in the shadow of each reading;
   a second steady window of ``--seconds`` measures decisions with a shadow loaded
   (``shadow_overhead_p99_ms``: its client-side p99 minus the first window's), then the promotion
   of that version is a pointer flip on each worker (``promotion_to_live_*_shadowed``).
3. Server-side decision time: the workers' Prometheus histogram
   ``prioritymax_autoscaler_decision_seconds`` (GET /autoscaler/metrics; reading in, decision out,
   no HTTP), summed over the workers, differenced over each window; quantiles are bucket-resolution
   estimates (linear within a bucket, as Prometheus' histogram_quantile).

``decision_p*_ms`` (the issue's figure) is client-side over the whole measured run (steady window
through the last swap window); ``*_outside_swap`` and ``*_during_swap`` split it. Each figure is
printed with its target where it has one; the last line is one JSON object. Every child process
is terminated (then killed) on the way out.

    .venv/bin/python bench/promotion_latency.py [--workers 20] [--promotions 3] [--rate 200]
                                                [--seconds 10] [--json-only] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ADMIN = "pmx_bench_admin_token"
READING = {"queue": {"high": 10, "normal": 100, "low": 50}, "arrival_rate": 12.0, "active_workers": 10,
           "utilization": 0.9}
HISTOGRAM = "prioritymax_autoscaler_decision_seconds_bucket"
#: figure -> its target (at most)
TARGETS = {"promotion_to_live_p99_ms": 1000, "promotion_to_live_p99_ms_shadowed": 100,
           "failed_requests_during_swap": 0, "decision_p99_ms": 5, "shadow_overhead_p99_ms": 1}
WARMUP_S = 2.0
IDLE_S = 3.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float | None, digits: int = 2) -> float | None:
    return None if seconds is None else round(seconds * 1000, digits)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------ the versions
def register_versions(home: Path, work: Path, count: int) -> list[str]:
    """``count`` rl_agent versions in ``home``'s registry (tiny PPO runs, seeds 1..count, gates
    passed), the first promoted champion."""
    os.environ["PRIORITYMAX_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from ml import registry
    from ml.rl.ppo import Args
    from ml.rl.train import train_rl
    from prioritymax.settings import get_settings

    get_settings.cache_clear()
    versions = []
    for seed in range(1, count + 1):
        checkpoint = work / f"seed{seed}" / "rl_agent.pt"
        result = train_rl(Args(epochs=1, steps=256, num_envs=2, eval_every=1, eval_episodes=1, seed=seed),
                          checkpoint, progress=False)
        version = registry.register_files("rl_agent", [checkpoint],
                                          metrics={"eval_reward": result["eval_reward"]})
        registry.record_gate("rl_agent", version, {"passed": True})
        versions.append(str(version))
    registry.promote("rl_agent", versions[0], actor="bench")
    clear_challenger()  # registering named the last one: the first window runs with no shadow
    return versions


def clear_challenger() -> None:
    from ml import registry

    if registry.challenger_version("rl_agent") is not None:
        registry.client().delete_registered_model_alias("rl_agent", registry.CHALLENGER)


# ------------------------------------------------------------------------------- processes
@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log: Path
    url: str

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def child_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("MLFLOW_TRACKING_URI", "PRIORITYMAX_AUTOSCALER_TOKEN", "PRIORITYMAX_API_TOKEN",
                          "DAGSTER_HOME")}
    env.update(PRIORITYMAX_HOME=str(home), PRIORITYMAX_ADMIN_TOKEN=ADMIN,
               PRIORITYMAX_SHADOW_REFRESH_SECONDS="1")
    return env


def spawn(name: str, command: list[str], home: Path, logs: Path, url: str) -> Child:
    log = logs / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, *command], env=child_env(home), cwd=REPO,
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Child(name, process, log, url)


def stop_all(children: list[Child]) -> None:
    """Terminate every child, wait up to 20 s for all, kill what is left."""
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + 20
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(10)


def start_api(home: Path, logs: Path) -> Child:
    port = free_port()
    api = spawn("api", ["-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
                        "--log-level", "warning"], home, logs, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise RuntimeError(f"the API exited ({api.process.returncode}):\n{api.tail()}")
        try:
            if httpx.get(f"{api.url}/config/health", timeout=1, trust_env=False).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer within 90 s:\n{api.tail()}")


def start_workers(count: int, api_url: str, home: Path, logs: Path, children: list[Child]) -> list[Child]:
    workers = []
    for index in range(count):
        port = free_port()
        worker = spawn(f"worker{index:02d}", [
            "-m", "pmx.cli", "autoscaler", "--port", str(port), "--api-url", api_url,
            "--token", ADMIN, "--name", f"bench-{index:02d}", "--log-level", "warning"],
            home, logs, f"http://127.0.0.1:{port}")
        children.append(worker)
        workers.append(worker)
    return workers


def wait_serving(workers: list[Child], version: str, timeout: float) -> None:
    """Until every worker is ok, connected to the control plane and serving ``version``."""
    waiting = {worker.name: worker for worker in workers}
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    with httpx.Client(timeout=2, trust_env=False) as http:
        while waiting:
            for name, worker in list(waiting.items()):
                if worker.process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({worker.process.returncode}):\n{worker.tail()}")
                try:
                    health = http.get(f"{worker.url}/autoscaler/health").json()
                except (httpx.HTTPError, ValueError) as error:
                    last[name] = f"{type(error).__name__}"
                    continue
                policy = next((m["version"] for m in health["models"] if m["name"] == "rl_agent"), None)
                connected = health["control_plane"].get("connected")
                last[name] = f"{health['status']}, policy {policy}, connected {connected}"
                if health["status"] == "ok" and policy == version and connected:
                    del waiting[name]
            if not waiting:
                return
            if time.monotonic() > deadline:
                name = next(iter(waiting))
                raise RuntimeError(f"{len(waiting)} workers not serving version {version} within "
                                   f"{timeout:.0f} s; {name}: {last.get(name)}\n{waiting[name].tail()}")
            time.sleep(0.25)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------ the client
class Connection:
    """One HTTP/1.1 keep-alive connection on asyncio: send a request, read the status and body."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.host = url.removeprefix("http://")
        self.address, port = self.host.split(":")
        self.port = int(port)
        self.auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.address, self.port)
        return self

    def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        return (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        body = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await self.reader.readexactly(size + 2))[:size]
            if size == 0:
                return status, body

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        return await self.send(self.request(method, path, body))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def fetch(url: str, path: str) -> bytes:
    connection = await Connection(url).open()
    try:
        status, body = await asyncio.wait_for(connection.call("GET", path), 10)
    finally:
        connection.close()
    if status != 200:
        raise RuntimeError(f"GET {url}{path}: {status} {body[:200]!r}")
    return body


async def histogram(urls: list[str]) -> dict[float, float]:
    """The decision-time histogram's cumulative bucket counts, summed over the workers."""
    totals: dict[float, float] = {}
    for text in await asyncio.gather(*(fetch(url, "/autoscaler/metrics") for url in urls)):
        for line in text.decode().splitlines():
            if line.startswith(HISTOGRAM):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                le = float("inf") if bound == "+Inf" else float(bound)
                totals[le] = totals.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def histogram_quantile(after: dict[float, float], before: dict[float, float], q: float) -> float | None:
    """The q-quantile of the observations between two scrapes, linear within its bucket; the
    largest finite bound when it falls in +Inf (as Prometheus does)."""
    buckets = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return lower + (le - lower) * share
        lower, below = le, cumulative
    return lower


@dataclass
class Record:
    sent: float  # time.monotonic()
    done: float
    worker: int
    ok: bool
    version: str | None


@dataclass
class Load:
    """POST /autoscaler/decide round-robin over ``urls`` at ``rate`` per second in all."""

    urls: list[str]
    rate: float
    timeout: float
    records: list[Record] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    target: str | None = None  # the version being promoted
    seen: dict[int, float] = field(default_factory=dict)  # worker -> first answer with the target
    stopping: bool = False

    def start(self) -> list[asyncio.Task]:
        self.began = time.monotonic()
        return [asyncio.create_task(self._drive(index)) for index in range(len(self.urls))]

    def expect(self, version: str) -> None:
        self.seen, self.target = {}, version

    async def _drive(self, index: int) -> None:
        url = self.urls[index]
        interval = len(self.urls) / self.rate
        next_at = self.began + index / self.rate
        body = json.dumps(READING).encode()
        connection: Connection | None = None
        request = b""
        while not self.stopping:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, time.monotonic())
            sent = time.monotonic()
            ok, version = False, None
            try:
                if connection is None:
                    connection = await asyncio.wait_for(Connection(url).open(), self.timeout)
                    request = connection.request("POST", "/autoscaler/decide", body)
                status, payload = await asyncio.wait_for(connection.send(request), self.timeout)
                if status == 200:
                    ok, version = True, json.loads(payload)["policy_version"]
                else:
                    self.errors[f"HTTP {status}"] = self.errors.get(f"HTTP {status}", 0) + 1
            except (TimeoutError, OSError, EOFError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError, KeyError) as error:
                name = type(error).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                if connection is not None:
                    connection.close()
                connection = None
            done = time.monotonic()
            self.records.append(Record(sent, done, index, ok, version))
            if ok and version == self.target and index not in self.seen:
                self.seen[index] = done
        if connection is not None:
            connection.close()


@dataclass
class Promotion:
    version: str
    sent: float
    returned: float
    returned_wall: float
    end: float  # the last worker live, or the timeout
    seen: dict[int, float]
    before: dict[float, float]
    after: dict[float, float]


@dataclass
class Window:
    """A steady window of load with no promotion: its span and the histograms around it."""

    start: float
    end: float
    before: dict[float, float]
    after: dict[float, float]
    cpu: dict[str, float]  # % of one core by role


async def challenger_everywhere(urls: list[str], version: str, timeout: float) -> None:
    """Until every worker holds ``version`` as its shadow challenger."""
    deadline = time.monotonic() + timeout
    waiting = set(urls)
    while waiting:
        for url in list(waiting):
            held = json.loads(await fetch(url, "/autoscaler/health")).get("challenger")
            if held is not None and held["version"] == version:
                waiting.discard(url)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"{len(waiting)} workers did not shadow version {version} "
                               f"within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def measure(api: str, urls: list[str], versions: list[str], pids: dict[str, list[int]],
                  options) -> dict:
    load = Load(urls, options.rate, options.request_timeout)
    tasks = load.start()

    async def steady() -> Window:
        start, before = time.monotonic(), await histogram(urls)
        cpu0 = {role: sum(map(cpu_seconds, ids)) for role, ids in pids.items()}
        await asyncio.sleep(options.seconds)
        cpu1 = {role: sum(map(cpu_seconds, ids)) for role, ids in pids.items()}
        end, after = time.monotonic(), await histogram(urls)
        return Window(start, end, before, after,
                      {role: round(100 * (cpu1[role] - cpu0[role]) / (end - start), 1) for role in pids})

    async def promote(number: int, version: str, kind: str) -> Promotion:
        before = await histogram(urls)
        # A connection per promotion: the waits between them outlast uvicorn's keep-alive (5 s).
        admin = await Connection(api, ADMIN).open()
        load.expect(version)
        sent = time.monotonic()
        try:
            status, payload = await asyncio.wait_for(admin.call(
                "POST", "/admin/models/rl_agent/promote", json.dumps({"version": int(version)}).encode()), 60)
        finally:
            admin.close()
        returned, returned_wall = time.monotonic(), time.time()
        if status != 200:
            raise RuntimeError(f"promote version {version}: {status} {payload[:300]!r}")
        deadline = returned + options.swap_timeout
        while len(load.seen) < len(urls) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        seen = dict(load.seen)
        end = max(seen.values()) if len(seen) == len(urls) else deadline
        if not options.json_only:
            live = [max(0.0, at - returned) for at in seen.values()]
            print(f"promotion {number} ({kind}): version {version}, "
                  f"promote call {ms(returned - sent, 1)} ms; "
                  f"live on {len(seen)}/{len(urls)} workers, p50 {ms(statistics.median(live), 1)} ms, "
                  f"max {ms(max(live), 1)} ms after the call returned", flush=True)
        after = await histogram(urls)
        promotion = Promotion(version, sent, returned, returned_wall, end, seen, before, after)
        await asyncio.sleep(options.settle)
        return promotion

    try:
        await asyncio.sleep(WARMUP_S)
        plain = await steady()
        cold = [await promote(n, versions[n % len(versions)], "loads")
                for n in range(1, options.promotions + 1)]
        shadowed: list[Promotion] = []
        shadow_window = None
        for n in range(options.promotions + 1, 2 * options.promotions + 1):
            version = versions[n % len(versions)]
            await asyncio.to_thread(set_challenger, version)
            await challenger_everywhere(urls, version, options.swap_timeout)
            if shadow_window is None:
                shadow_window = await steady()
            shadowed.append(await promote(n, version, "shadowed: pointer flip"))
    finally:
        load.stopping = True
        await asyncio.gather(*tasks, return_exceptions=True)
    final_hist = await histogram(urls)
    swaps = [json.loads(body) for body in
             await asyncio.gather(*(fetch(url, "/autoscaler/swaps") for url in urls))]
    figures = figures_of(load, cold, shadowed, swaps, plain, shadow_window, final_hist, len(urls), options)
    for role, value in plain.cpu.items():  # CPU over the steady window, in % of one core
        figures[f"{role}_cpu_pct_outside_swap"] = value
    for role, value in shadow_window.cpu.items():
        figures[f"{role}_cpu_pct_with_shadow"] = value
    return figures


def set_challenger(version: str) -> None:
    from ml import registry

    registry.set_challenger("rl_agent", version)


def live_times(promotions: list[Promotion], swaps: list[list[dict]], workers: int, options) -> dict:
    """Per worker and promotion: from the promote call's return to the first decision with the new
    version (``live``), and to the worker's own swap record (``to_swap``)."""
    live, to_swap, not_live, early = [], [], 0, 0
    for promotion in promotions:
        for index in range(workers):
            at = promotion.seen.get(index)
            if at is None:
                not_live += 1
                live.append(options.swap_timeout)  # a lower bound
                continue
            early += at < promotion.returned
            live.append(max(0.0, at - promotion.returned))
            sent_wall = promotion.returned_wall - (promotion.returned - promotion.sent)
            swap = next((s for s in swaps[index] if s["model"] == "rl_agent" and s["to"] == promotion.version
                         and s["source"] == "control_plane" and s["at"] >= sent_wall - 0.05), None)
            if swap is not None:
                to_swap.append(swap["at"] - promotion.returned_wall)
    return {"live": live, "to_swap": to_swap, "not_live": not_live, "early": early}


def figures_of(load: Load, cold: list[Promotion], shadowed: list[Promotion], swaps: list[list[dict]],
               plain: Window, shadow: Window, final_hist, workers: int, options) -> dict:
    promotions = cold + shadowed
    last_end = max(p.end for p in promotions)
    measured = [r for r in load.records if plain.start <= r.sent <= last_end]

    def latencies(records):
        return [r.done - r.sent for r in records if r.ok]

    def in_window(window):
        return [r for r in measured if window.start <= r.sent <= window.end]

    def during(kind):
        return [r for r in measured if any(p.sent <= r.sent <= p.end for p in kind)]

    outside, with_shadow = latencies(in_window(plain)), latencies(in_window(shadow))
    during_records = during(promotions)
    failed_during = sum(1 for r in load.records if not r.ok
                        and any(r.sent <= p.end and r.done >= p.sent for p in promotions))
    everything = latencies(measured)
    by_kind = {"": live_times(cold, swaps, workers, options),
               "_shadowed": live_times(shadowed, swaps, workers, options)}

    def server(after, before, q):
        return ms(histogram_quantile(after, before, q), 3)

    during_before = {le: sum(p.before.get(le, 0.0) for p in promotions) for le in final_hist}
    during_after = {le: sum(p.after.get(le, 0.0) for p in promotions) for le in final_hist}
    p99_plain, p99_shadow = percentile(outside, 0.99), percentile(with_shadow, 0.99)
    server_plain = histogram_quantile(plain.after, plain.before, 0.99)
    server_shadow = histogram_quantile(shadow.after, shadow.before, 0.99)
    figures = {}
    for suffix, times in by_kind.items():
        live, to_swap = times["live"], times["to_swap"]
        figures |= {
            f"promotion_to_live_p50_ms{suffix}": ms(percentile(live, 0.5), 1),
            f"promotion_to_live_p99_ms{suffix}": ms(percentile(live, 0.99), 1),
            f"promotion_to_live_max_ms{suffix}": ms(max(live, default=None), 1),
            f"promotion_to_swap_p50_ms{suffix}": ms(percentile(to_swap, 0.5), 1),
            f"promotion_to_swap_p99_ms{suffix}": ms(percentile(to_swap, 0.99), 1),
            f"promotion_to_swap_max_ms{suffix}": ms(max(to_swap, default=None), 1),
            f"workers_not_live{suffix}": times["not_live"],
            f"workers_live_before_call_returned{suffix}": int(times["early"]),
        }
    flips = sum(1 for worker in swaps for s in worker if s.get("pointer_flip"))
    return figures | {
        "pointer_flips": flips,
        "promote_call_max_ms": ms(max((p.returned - p.sent for p in promotions), default=None), 1),
        "live_resolution_ms": round(workers / options.rate * 1000, 1),
        "decision_p50_ms": ms(percentile(everything, 0.5), 3),
        "decision_p99_ms": ms(percentile(everything, 0.99), 3),
        "decision_p50_ms_outside_swap": ms(percentile(outside, 0.5), 3),
        "decision_p99_ms_outside_swap": ms(p99_plain, 3),
        "decision_p99_ms_with_shadow": ms(p99_shadow, 3),
        "shadow_overhead_p99_ms": ms(None if p99_shadow is None or p99_plain is None
                                     else p99_shadow - p99_plain, 3),
        "decision_p50_ms_during_swap": ms(percentile(latencies(during_records), 0.5), 3),
        "decision_p99_ms_during_swap": ms(percentile(latencies(during_records), 0.99), 3),
        "decision_p99_ms_during_loading_swap": ms(percentile(latencies(during(cold)), 0.99), 3),
        "decision_p99_ms_during_pointer_flip": ms(percentile(latencies(during(shadowed)), 0.99), 3),
        "decision_max_ms": ms(max(everything, default=None), 3),
        "server_decision_p50_ms": server(final_hist, plain.before, 0.5),
        "server_decision_p99_ms": server(final_hist, plain.before, 0.99),
        "server_decision_p99_ms_outside_swap": ms(server_plain, 3),
        "server_decision_p99_ms_with_shadow": ms(server_shadow, 3),
        "server_shadow_overhead_p99_ms": ms(None if server_shadow is None or server_plain is None
                                            else server_shadow - server_plain, 3),
        "server_decision_p99_ms_during_swap": server(during_after, during_before, 0.99),
        "failed_requests_during_swap": failed_during,
        "failed_requests": sum(1 for r in load.records if not r.ok),
        "failures_by_kind": dict(load.errors),
        "requests": len(measured),
        "requests_during_swap": len(during_records),
        "rate": options.rate,
        "achieved_rate_outside_swap": round(len(in_window(plain)) / (plain.end - plain.start), 1),
        "workers": workers,
        "promotions": len(cold),
        "promotions_shadowed": len(shadowed),
    }


# ------------------------------------------------------------------------------------ report
def report(figures: dict, options) -> None:
    f = figures
    print(f"load: {f['rate']:g} decisions/s round-robin over {f['workers']} workers "
          f"({f['rate'] / f['workers']:g}/s each; achieved {f['achieved_rate_outside_swap']:g}/s), "
          f"{f['requests']:,} requests measured, {f['requests_during_swap']:,} of them in swap windows")
    print(f"promotion_to_live_p99_ms: {f['promotion_to_live_p99_ms']} (target 1,000; p50 "
          f"{f['promotion_to_live_p50_ms']}, max {f['promotion_to_live_max_ms']}; first decision with the "
          f"new version, seen by the load: resolution {f['live_resolution_ms']} ms per worker; "
          f"{f['workers_not_live']} of {f['workers'] * f['promotions']} not live)")
    print(f"promotion_to_swap_p99_ms: {f['promotion_to_swap_p99_ms']} (the workers' own swap times; p50 "
          f"{f['promotion_to_swap_p50_ms']}, max {f['promotion_to_swap_max_ms']})")
    print(f"promotion_to_live_p99_ms_shadowed: {f['promotion_to_live_p99_ms_shadowed']} (target 100; the "
          f"promoted version was every worker's shadow challenger: a pointer flip, {f['pointer_flips']} "
          f"flips recorded; p50 {f['promotion_to_live_p50_ms_shadowed']}, max "
          f"{f['promotion_to_live_max_ms_shadowed']}; own swap times p99 "
          f"{f['promotion_to_swap_p99_ms_shadowed']}; {f['workers_not_live_shadowed']} not live)")
    print(f"shadow_overhead_p99_ms: {f['shadow_overhead_p99_ms']} (target 1; decision p99 with a shadow "
          f"loaded {f['decision_p99_ms_with_shadow']} against {f['decision_p99_ms_outside_swap']} without, "
          f"two steady windows of one run; server-side {f['server_decision_p99_ms_with_shadow']} against "
          f"{f['server_decision_p99_ms_outside_swap']}; workers' CPU {f['workers_cpu_pct_with_shadow']}% "
          f"against {f['workers_cpu_pct_outside_swap']}%)")
    print(f"decision_p99_ms: {f['decision_p99_ms']} (target 5; client-side request latency on loopback, "
          f"p50 {f['decision_p50_ms']}; outside a swap p99 {f['decision_p99_ms_outside_swap']}, during "
          f"{f['decision_p99_ms_during_swap']}: during loading swaps "
          f"{f['decision_p99_ms_during_loading_swap']}, "
          f"during pointer flips {f['decision_p99_ms_during_pointer_flip']})")
    print(f"server_decision_p99_ms: {f['server_decision_p99_ms']} (the workers' histogram, reading in to "
          f"decision out, bucket-resolution estimate; outside a swap "
          f"{f['server_decision_p99_ms_outside_swap']}, during {f['server_decision_p99_ms_during_swap']})")
    print(f"failed_requests_during_swap: {f['failed_requests_during_swap']} (target 0; "
          f"{f['failed_requests']} failed in all: {f['failures_by_kind'] or 'none'})")
    print(f"CPU in the steady window, % of one core (all of a 2-core machine: 200): load client "
          f"{f['load_client_cpu_pct_outside_swap']}, API {f['api_cpu_pct_outside_swap']}, workers "
          f"{f['workers_cpu_pct_outside_swap']} in all (with no load: API {f['api_cpu_pct_idle']}, workers "
          f"{f['workers_cpu_pct_idle']}); worker RSS {f['worker_rss_mb']} MB each (median); "
          f"the API's first registry call took {f['api_first_registry_call_ms']} ms (before the load)")
    for name, target in TARGETS.items():
        value = f[name]
        met = value is not None and value <= target
        print(f"  {name}: {value} vs target <= {target:,}: {'met' if met else 'NOT met'}")


def run(options) -> dict:
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="pmx-bench-promotion-") as scratch:
        home, logs = Path(scratch) / "home", Path(scratch) / "logs"
        logs.mkdir(parents=True)
        began = time.perf_counter()
        versions = register_versions(home, Path(scratch) / "train", options.versions)
        setup_s = time.perf_counter() - began
        try:
            api = start_api(home, logs)
            children.append(api)
            started = time.perf_counter()
            workers = start_workers(options.workers, api.url, home, logs, children)
            wait_serving(workers, versions[0], options.start_timeout)
            ready_s = time.perf_counter() - started
            if not options.json_only:
                print(f"setup: {len(versions)} versions trained and registered in {setup_s:.1f} s; "
                      f"API {api.url}; {len(workers)} workers serving version {versions[0]} after "
                      f"{ready_s:.1f} s", flush=True)
            # The API's first registry call imports and opens MLflow; do it here, not in the first
            # promotion (timed and reported as api_first_registry_call_ms).
            warm = time.perf_counter()
            httpx.get(f"{api.url}/admin/models", params={"name": "rl_agent"}, timeout=120, trust_env=False,
                      headers={"Authorization": f"Bearer {ADMIN}"}).raise_for_status()
            warm_ms = (time.perf_counter() - warm) * 1000
            rss = [r for r in (rss_mb(w.process.pid) for w in workers) if r is not None]
            try:
                import uvloop
            except ImportError:
                runner = asyncio.run
            else:
                runner = uvloop.run
            pids = {"load_client": [os.getpid()], "api": [api.process.pid],
                    "workers": [w.process.pid for w in workers]}
            idle = {role: sum(map(cpu_seconds, ids)) for role, ids in pids.items()}
            time.sleep(IDLE_S)  # what the processes burn with no load, for comparison
            idle = {role: round(100 * (sum(map(cpu_seconds, ids)) - idle[role]) / IDLE_S, 1)
                    for role, ids in pids.items() if role != "load_client"}
            figures = runner(measure(api.url, [w.url for w in workers], versions, pids, options))
            figures["api_first_registry_call_ms"] = round(warm_ms, 1)
            figures |= {f"{role}_cpu_pct_idle": value for role, value in idle.items()}
            figures["workers_ready_s"] = round(ready_s, 1)
            figures["worker_rss_mb"] = round(statistics.median(rss)) if rss else None
            for child in children:
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited during the run:\n{child.tail()}")
            return figures
        except BaseException:
            for child in children:
                if child.process.poll() is not None:
                    print(f"--- {child.name} (exit {child.process.returncode}):\n{child.tail()}",
                          file=sys.stderr)
            raise
        finally:
            stop_all(children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=20, help="autoscaler worker processes")
    parser.add_argument("--promotions", type=int, default=3)
    parser.add_argument("--versions", type=int, default=3,
                        help="rl_agent versions to train and cycle through")
    parser.add_argument("--rate", type=float, default=200.0, help="decisions/s over all workers")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="the steady window before the promotions")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of load between promotions")
    parser.add_argument("--swap-timeout", type=float, default=30.0,
                        help="seconds a promotion may take to be live on every worker")
    parser.add_argument("--request-timeout", type=float, default=5.0)
    parser.add_argument("--start-timeout", type=float, default=None,
                        help="seconds for the workers to serve [60 + 15 per worker]")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--quick", action="store_true",
                        help="2 workers, 2 versions, 1 promotion, 2 s window: checks the script runs")
    options = parser.parse_args()
    if options.quick:
        options.workers, options.versions, options.promotions = 2, 2, 1
        options.seconds, options.settle, options.rate = 2.0, 0.5, 50.0
    if options.versions < 2 or options.workers < 1 or options.promotions < 1 or options.rate <= 0:
        parser.error("needs --versions >= 2, --workers >= 1, --promotions >= 1 and --rate > 0")
    options.start_timeout = options.start_timeout or 60 + 15 * options.workers
    # A SIGTERM (a timeout killing the bench) unwinds through the finally that stops the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.perf_counter()
    figures = run(options)
    figures["bench_s"] = round(time.perf_counter() - began, 1)
    if not options.json_only:
        report(figures, options)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
