"""Config control plane speed against a real uvicorn on loopback, in one run.

1. Versioned writes: ``--writes`` POST /config from ``--concurrency`` concurrent connections,
   each write a new immutable version + an event + an audit line, on the embedded SQLite store.
2. Reads: GET /config/{key} latency (p50/p99) from the same number of concurrent connections.
3. Live push: ``--subscribers`` WebSocket subscribers (default 1,000) connected at once; for each
   of ``--pushes`` writes, the time from sending the POST to each subscriber receiving the change
   (p50/p99 over all subscribers and writes). Subscribers run in this process, so the figure
   includes our own client-side receive loop.
4. Client flag evaluation: :class:`api.client.ConfigClient` answering a rollout flag from its
   snapshot, per call (p50/p99 over ``--evals`` calls, timer overhead included).

Each figure is printed with its target and the ratio to it; the last line is one JSON object.

    .venv/bin/python bench/config_api.py [--writes 3000] [--subscribers 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

REPO = Path(__file__).resolve().parents[1]
ADMIN = "pmx_bench_admin_token"
TARGETS = {"writes_per_s": 1000, "get_p99_ms": None, "ws_propagation_p99_ms_1000_subs": 100,
           "client_eval_p99_us": 10}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_api(home: Path, port: int, ws: str) -> subprocess.Popen:
    env = {**os.environ, "PRIORITYMAX_HOME": str(home), "PRIORITYMAX_ADMIN_TOKEN": ADMIN}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                                "--port", str(port), "--log-level", "warning",
                                "--ws-max-queue", "1024", "--ws", ws], env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/config/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the API did not start")


async def writes(url: str, count: int, concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker(offset: int) -> None:
            for i in range(offset, count, concurrency):
                response = await client.post("/config", json={"key": f"bench.key{i % 50}", "value": i})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return count / (time.perf_counter() - started)


async def reads(url: str, count: int, concurrency: int) -> list[float]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker(offset: int) -> None:
            for i in range(offset, count, concurrency):
                started = time.perf_counter()
                response = await client.get(f"/config/bench.key{i % 50}")
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies


async def propagation(url: str, subscribers: int, pushes: int) -> list[float]:
    ws_url = url.replace("http://", "ws://") + f"/config/ws/config?token={ADMIN}"
    sent: dict[int, float] = {}
    delays: list[float] = []

    async def subscriber(ready: asyncio.Event, connected: list[int]) -> None:
        async with websockets.connect(ws_url, max_queue=None, open_timeout=60) as socket:
            await socket.recv()  # hello
            connected.append(1)
            if len(connected) == subscribers:
                ready.set()
            received = 0
            while received < pushes:
                message = json.loads(await socket.recv())
                if message.get("key") == "bench.push":
                    delays.append(time.perf_counter() - sent[message["value"]])
                    received += 1

    ready, connected = asyncio.Event(), []
    tasks = []
    for _ in range(subscribers):
        tasks.append(asyncio.create_task(subscriber(ready, connected)))
        if len(tasks) % 100 == 0:
            await asyncio.sleep(0.05)  # connect in waves rather than 1,000 handshakes at once
    await asyncio.wait_for(ready.wait(), timeout=120)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        for i in range(pushes):
            sent[i] = time.perf_counter()
            (await client.post("/config", json={"key": "bench.push", "value": i})).raise_for_status()
            await asyncio.sleep(0.3)  # let every subscriber take it before the next one
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    return delays


def client_evaluations(url: str, count: int) -> list[float]:
    from api.client import ConfigClient

    headers = {"Authorization": f"Bearer {ADMIN}"}
    httpx.put(f"{url}/config/features/bench_rollout", headers=headers,
              json={"enabled": True, "rollout_percent": 25, "context_key": "worker"}).raise_for_status()
    httpx.put(f"{url}/config/features/bench_rollout", headers=headers,
              json={"enabled": True, "tenant": "org:bench"}).raise_for_status()
    timings: list[float] = []
    with ConfigClient(url, ADMIN) as client:
        first = client.wait_ready(30) and client.flag("bench_rollout", None, {"worker": "w1"})
        if not first or first.reason != "SPLIT":
            raise RuntimeError("the client did not load the rollout flag")
        contexts = [{"worker": f"w{i}"} for i in range(1000)]
        flag = client.flag
        for i in range(count):
            context = contexts[i % 1000]
            started = time.perf_counter_ns()
            flag("bench_rollout", None, context)
            timings.append((time.perf_counter_ns() - started) / 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--evals", type=int, default=200_000)
    parser.add_argument("--ws", default="auto",
                        choices=["auto", "websockets", "websockets-sansio", "wsproto"],
                        help="uvicorn's WebSocket implementation")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    options = parser.parse_args()
    if options.quick:
        options.writes, options.reads, options.subscribers = 200, 200, 20
        options.pushes, options.evals = 3, 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    with tempfile.TemporaryDirectory(prefix="pmx-bench-api-") as scratch:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        api = start_api(Path(scratch), port, options.ws)
        url = f"http://127.0.0.1:{port}"
        try:
            writes_per_s = asyncio.run(writes(url, options.writes, options.concurrency))
            read_latency = asyncio.run(reads(url, options.reads, options.concurrency))
            delays = asyncio.run(propagation(url, options.subscribers, options.pushes))
            evals = client_evaluations(url, options.evals)
        finally:
            api.terminate()
            api.wait(timeout=20)
    figures = {
        "writes_per_s": round(writes_per_s),
        "get_p50_ms": round(statistics.median(read_latency) * 1000, 2),
        "get_p99_ms": round(percentile(read_latency, 0.99) * 1000, 2),
        f"ws_propagation_p50_ms_{options.subscribers}_subs": round(statistics.median(delays) * 1000, 1),
        f"ws_propagation_p99_ms_{options.subscribers}_subs": round(percentile(delays, 0.99) * 1000, 1),
        "client_eval_p50_us": round(statistics.median(evals), 2),
        "client_eval_p99_us": round(percentile(evals, 0.99), 2),
        "concurrency": options.concurrency, "subscribers": options.subscribers,
    }
    for name, target in TARGETS.items():
        name = name.replace("1000_subs", f"{options.subscribers}_subs")
        if target:
            better = figures[name] / target if name == "writes_per_s" else target / figures[name]
            print(f"{name}: {figures[name]:,} (target {target:,}; {better:.2f}x the target)")
        else:
            print(f"{name}: {figures[name]:,}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
