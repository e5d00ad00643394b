"""Config control plane speed against a real uvicorn on loopback, in one run.

1. Versioned writes: ``--writes`` POST /config from ``--concurrency`` concurrent keep-alive
   connections, each write a new immutable version + an event + an audit line, on the embedded
   SQLite store.
   Then ``--batched-writes`` of them through POST /config/batch, ``--batch`` items a request
   (default 50), from the same number of connections; each item still its own version + event +
   audit line (``writes_per_s_batched``).
2. Reads: GET /config/{key} latency (p50/p99) from the same number of concurrent connections.
3. Live push: ``--subscribers`` WebSocket subscribers (default 1,000) connected at once; for each
   of ``--pushes`` writes, the time from just before the POST is written to its socket to each
   subscriber having the change's frame (p50/p99 over all subscribers and writes).
   The subscribers run in a receiver process of their own; both ends read ``time.monotonic()``
   (CLOCK_MONOTONIC, one clock for all processes of the machine).
4. Client flag evaluation: :class:`client.control_plane.ConfigClient` answering a rollout flag from its
   snapshot, per call (p50/p99 over ``--evals`` calls, timer overhead included).

The load generator (writes, reads, the pushes' POSTs and the subscribers) is raw HTTP/1.1 over
asyncio streams and a minimal RFC 6455 client on asyncio protocols (uvloop when installed), run in
child processes of this script (``--child``), not httpx: httpx cost more CPU per request (2.0 ms)
than the server's whole write, on the same 2 cores.

Each figure is printed with its target and the ratio to it; the last line is one JSON object.

    .venv/bin/python bench/config_api.py [--writes 3000] [--batched-writes 10000] [--batch 50]
                                         [--subscribers 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ADMIN = "pmx_bench_admin_token"
TARGETS = {"writes_per_s": 1000, "writes_per_s_batched": 1000, "get_p99_ms": None,
           "ws_propagation_p99_ms_1000_subs": 100, "client_eval_p99_us": 10}


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


# --------------------------------------------------------------------------- load generator
# Raw HTTP/1.1 keep-alive and a minimal WebSocket client on asyncio (uvloop when installed), run
# in processes of their own: httpx cost about 2 ms of CPU per request, more than the server's
# write, and on the same interpreter it competed with the 1,000 receiving sockets.

def _request(method: str, path: str, host: str, body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class HTTPConnection:
    """One keep-alive connection: send a request, read the status and the whole body."""

    def __init__(self, url: str) -> None:
        self.host = url.removeprefix("http://")
        self.address = self.host.split(":")

    async def open(self) -> HTTPConnection:
        self.reader, self.writer = await asyncio.open_connection(self.address[0], int(self.address[1]))
        return self

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.writer.write(_request(method, path, self.host, body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {payload[:200]!r}")
        return status, payload

    def close(self) -> None:
        self.writer.close()


async def _timed_posts(url: str, path: str, requests: int, concurrency: int,
                       body: Callable[[int], bytes]) -> float:
    """POST ``body(n)`` to ``path`` for n in ``range(requests)`` from ``concurrency`` keep-alive
    connections, each taking every ``concurrency``-th request; returns the seconds it took."""
    connections = [await HTTPConnection(url).open() for _ in range(concurrency)]

    async def worker(connection: HTTPConnection, offset: int) -> None:
        for n in range(offset, requests, concurrency):
            await connection.call("POST", path, body(n))

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, w) for w, c in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return elapsed


async def _writes(url: str, count: int, concurrency: int) -> dict:
    elapsed = await _timed_posts(url, "/config", count, concurrency,
                                 lambda i: json.dumps({"key": f"bench.key{i % 50}", "value": i}).encode())
    return {"writes_per_s": count / elapsed}


async def _batched_writes(url: str, count: int, concurrency: int, batch: int) -> dict:
    """``count`` versioned writes as POST /config/batch requests of ``batch`` items each."""
    requests = [range(start, min(start + batch, count)) for start in range(0, count, batch)]

    def body(n: int) -> bytes:
        items = [{"key": f"bench.batch{i % 50}", "value": i} for i in requests[n]]
        return json.dumps({"items": items}).encode()

    elapsed = await _timed_posts(url, "/config/batch", len(requests), concurrency, body)
    return {"writes_per_s": count / elapsed}


async def _reads(url: str, count: int, concurrency: int) -> dict:
    connections = [await HTTPConnection(url).open() for _ in range(concurrency)]
    latencies: list[float] = []

    async def worker(connection: HTTPConnection, offset: int) -> None:
        for i in range(offset, count, concurrency):
            started = time.perf_counter()
            await connection.call("GET", f"/config/bench.key{i % 50}")
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(c, w) for w, c in enumerate(connections)))
    for connection in connections:
        connection.close()
    return {"latencies": latencies}


class WSReceiver(asyncio.Protocol):
    """A WebSocket subscriber, just enough of RFC 6455 for this bench: the upgrade, unmasked
    text frames from the server (fragmented or not), pings answered, close. Each ``bench.push``
    change is timestamped with ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every
    process of the machine) the moment its frame is complete."""

    def __init__(self, request: bytes, pushes: int, done: asyncio.Future, ready: list) -> None:
        self.request, self.pushes, self.done, self.ready = request, pushes, done, ready
        self.buffer = b""
        self.upgraded = False
        self.fragments: list[bytes] = []
        self.received: list[tuple[int, float]] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if self.buffer[9:12] != b"101":
                self._finish(RuntimeError(f"upgrade refused: {self.buffer[:200]!r}"))
                return
            self.upgraded, self.buffer = True, self.buffer[end + 4:]
        while len(self.buffer) >= 2:
            first, length = self.buffer[0], self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + length:
                return
            payload, self.buffer = self.buffer[start:start + length], self.buffer[start + length:]
            self._frame(first & 0x80, first & 0x0F, payload, at)

    def _frame(self, fin: int, opcode: int, payload: bytes, at: float) -> None:
        if opcode == 0x9:  # ping: a masked pong (zero mask) with the same payload
            self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            return
        if opcode == 0x8:
            self._finish(RuntimeError("the server closed the connection"))
            return
        if opcode in (0x1, 0x0):
            self.fragments.append(payload)
            if not fin:
                return
            message, self.fragments = json.loads(b"".join(self.fragments)), []
            if message.get("type") == "hello":
                self.ready.append(1)
            elif message.get("key") == "bench.push":
                self.received.append((message["value"], at))
                if len(self.received) == self.pushes:
                    self._finish(None)

    def _finish(self, error: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(error) if error else self.done.set_result(self.received)
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"connection lost: {exc}"))


async def _receive(url: str, subscribers: int, pushes: int) -> dict:
    """Connect ``subscribers`` WebSockets (in waves of 100), say "ready" on stdout once every one
    has its hello, then wait for ``pushes`` changes on each."""
    loop = asyncio.get_running_loop()
    host = url.removeprefix("http://")
    address, port = host.split(":")
    ready: list[int] = []
    futures = []
    for n in range(subscribers):
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET /config/ws/config?token={ADMIN} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                   ).encode()
        done = loop.create_future()
        await loop.create_connection(functools.partial(WSReceiver, request, pushes, done, ready), address,
                                     int(port))
        futures.append(done)
        if n % 100 == 99:
            await asyncio.sleep(0.05)  # connect in waves rather than 1,000 handshakes at once
    deadline = time.monotonic() + 120
    while len(ready) < subscribers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(ready)} of {subscribers} subscribers got their hello")
        await asyncio.sleep(0.05)
    print("ready", flush=True)
    received = await asyncio.wait_for(asyncio.gather(*futures), timeout=120)
    return {"received": received}


def _child(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", *command], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)


def _result(process: subprocess.Popen) -> dict:
    output, _ = process.communicate(timeout=300)
    if process.returncode:
        raise RuntimeError(f"load process failed ({process.returncode})")
    return json.loads(output.strip().splitlines()[-1])


def writes(url: str, count: int, concurrency: int) -> float:
    return _result(_child(["writes", url, str(count), str(concurrency)]))["writes_per_s"]


def batched_writes(url: str, count: int, concurrency: int, batch: int) -> float:
    return _result(_child(["batched", url, str(count), str(concurrency), str(batch)]))["writes_per_s"]


def reads(url: str, count: int, concurrency: int) -> list[float]:
    return _result(_child(["reads", url, str(count), str(concurrency)]))["latencies"]


def propagation(url: str, subscribers: int, pushes: int) -> list[float]:
    """Subscribers in a receiver process; each POST from this process, timed from just before
    its request is written to the socket (``time.monotonic()``, the receivers' clock)."""
    receiver = _child(["receive", url, str(subscribers), str(pushes)])
    if receiver.stdout.readline().strip() != "ready":
        raise RuntimeError("the receiver process did not get ready")

    async def push() -> dict[int, float]:
        sent: dict[int, float] = {}
        connection = await HTTPConnection(url).open()
        for i in range(pushes):
            body = json.dumps({"key": "bench.push", "value": i}).encode()
            sent[i] = time.monotonic()
            await connection.call("POST", "/config", body)
            await asyncio.sleep(0.3)  # let every subscriber take it before the next one
        connection.close()
        return sent

    sent = asyncio.run(push())
    received = _result(receiver)["received"]
    return [at - sent[value] for subscriber in received for value, at in subscriber]


def _run_child(kind: str, url: str, *numbers: str) -> None:
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    work = {"writes": _writes, "batched": _batched_writes, "reads": _reads, "receive": _receive}[kind]
    print(json.dumps(runner(work(url, *map(int, numbers)))), flush=True)


def client_evaluations(url: str, count: int) -> list[float]:
    from client.control_plane import ConfigClient

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
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _run_child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--batched-writes", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50, help="items per POST /config/batch")
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
        options.writes, options.batched_writes, options.reads, options.subscribers = 200, 500, 200, 20
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
            writes_per_s = writes(url, options.writes, options.concurrency)
            batched_per_s = batched_writes(url, options.batched_writes, options.concurrency,
                                           options.batch)
            read_latency = reads(url, options.reads, options.concurrency)
            delays = propagation(url, options.subscribers, options.pushes)
            evals = client_evaluations(url, options.evals)
        finally:
            api.terminate()
            api.wait(timeout=20)
    figures = {
        "writes_per_s": round(writes_per_s),
        "writes_per_s_batched": round(batched_per_s),
        "get_p50_ms": round(statistics.median(read_latency) * 1000, 2),
        "get_p99_ms": round(percentile(read_latency, 0.99) * 1000, 2),
        f"ws_propagation_p50_ms_{options.subscribers}_subs": round(statistics.median(delays) * 1000, 1),
        f"ws_propagation_p99_ms_{options.subscribers}_subs": round(percentile(delays, 0.99) * 1000, 1),
        "client_eval_p50_us": round(statistics.median(evals), 2),
        "client_eval_p99_us": round(percentile(evals, 0.99), 2),
        "concurrency": options.concurrency, "batch": options.batch, "subscribers": options.subscribers,
    }
    for name, target in TARGETS.items():
        name = name.replace("1000_subs", f"{options.subscribers}_subs")
        if target:
            better = figures[name] / target if name.startswith("writes_per_s") else target / figures[name]
            print(f"{name}: {figures[name]:,} (target {target:,}; {better:.2f}x the target)")
        else:
            print(f"{name}: {figures[name]:,}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
