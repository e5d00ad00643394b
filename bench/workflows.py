"""Workflow runs through the API against the same graphs run directly on Dagster, in one run.

A real uvicorn (one worker) on loopback with a temporary data home; this process is the client
(httpx for the routes, one WebSocket subscriber on a thread) and also runs the raw Dagster jobs.

1. Graphs of no-op python tasks (``workflows.tasks:noop``): a ``--nodes`` chain
   (start -> t0 -> ... -> end) and a ``--nodes``-wide fan-out/fan-in (start -> parallel -> t0..tN
   -> join -> end). Each is run ``--repeats`` times, interleaved per repeat: through the API (POST
   /workflows/run/start until the run's ``run_completed`` event reaches the WebSocket client, or,
   without the WebSocket route, until GET /workflows/run/{id} says COMPLETED, polled every 20 ms),
   and as the same graph written directly as a Dagster job (same ops and edges, no-op bodies that
   call ``workflows.tasks.noop``) with ``execute_in_process`` in this process on (a) a persistent
   instance in a temporary DAGSTER_HOME with the API's ``dagster.yaml`` (telemetry off) and console
   log level - the fair comparison, as the API records its runs in its persistent instance - and
   (b) ``DagsterInstance.ephemeral()``, for context. A first run of each (compiles and caches the
   API's job, warms both sides) is not counted; its API time is reported as ``*_first_run_s``.
   ``overhead_vs_raw_dagster`` = median API time / median raw persistent time, the larger of the
   two shapes' (target <= 1.2). ``*_cpu_ratio``: the API server's CPU during a run (``/proc``)
   over this process's CPU during the raw persistent run - steadier than wall time on a shared
   machine.
2. ``submit_to_first_node_ms``: from sending POST /workflows/run/start to the first ``node_start``
   event's ``at`` (``time.time()`` on both sides: one machine), over ``--small-runs`` runs of a
   3-node workflow (start -> t0 -> end), one at a time.
3. ``ws_event_*_ms``: each event's ``at`` (when the recorder emitted it) to when the WebSocket client
   here received it (``time.time()``), over every event of the measured runs above.

Each figure is printed with its target and ratio; the last line is one JSON object.

    .venv/bin/python bench/workflows.py [--nodes 100] [--repeats 3] [--small-runs 20]
                                        [--completion auto|ws|poll] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx

REPO = Path(__file__).resolve().parents[1]
# This file is bench/workflows.py: with bench/ first on sys.path, ``import workflows`` would find it
# rather than the project's ``workflows`` package (the task callables).
sys.path[:] = [str(REPO) if Path(entry or ".").resolve() == REPO / "bench" else entry for entry in sys.path]
ADMIN = "pmx_bench_admin_token"
NOOP = "workflows.tasks:noop"
TARGETS = {"overhead_vs_raw_dagster": 1.2}
RUN_END = ("run_completed", "run_failed", "run_cancelled")
POLL_S = 0.02


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------------- the graphs
def _task(node_id: str) -> dict:
    return {"node_id": node_id, "type": "task",
            "template": {"executor": "python", "config": {"callable": NOOP}}}


def spec(shape: str, n: int) -> dict:
    """``chain``: start -> t0 .. t{n-1} -> end; ``fan``: start -> fork -> t0 .. t{n-1} -> join -> end."""
    tasks = [_task(f"t{i}") for i in range(n)]
    if shape == "chain":
        nodes = [{"node_id": "start", "type": "start"}, *tasks, {"node_id": "end", "type": "end"}]
        ids = [node["node_id"] for node in nodes]
        edges = [{"source": a, "target": b} for a, b in zip(ids, ids[1:], strict=False)]
    else:
        nodes = [{"node_id": "start", "type": "start"}, {"node_id": "fork", "type": "parallel"}, *tasks,
                 {"node_id": "join", "type": "join"}, {"node_id": "end", "type": "end"}]
        edges = [{"source": "start", "target": "fork"}, {"source": "join", "target": "end"}]
        for i in range(n):
            edges += [{"source": "fork", "target": f"t{i}"}, {"source": f"t{i}", "target": "join"}]
    return {"name": f"bench {shape} {n}", "nodes": nodes, "edges": edges}


def raw_job(shape: str, n: int, first_op: list[float] | None = None):
    """The same graph written directly as a Dagster job: the same ops (start, fork, join, end pass
    through; each task calls ``workflows.tasks.noop``) and the same edges. ``first_op`` gets the
    ``time.time()`` at which the start op's body ran."""
    import dagster as dg

    from workflows.tasks import noop

    @dg.op
    def begin():
        if first_op is not None:
            first_op.append(time.time())
        return {}

    @dg.op
    def task(upstream):
        return noop({}, {})

    @dg.op
    def passthrough(upstream):
        return upstream

    @dg.op
    def collect(upstream: list):
        return {}

    if shape == "chain":
        @dg.job(name=f"raw_chain_{n}")
        def job():
            state = begin.alias("start")()
            for i in range(n):
                state = task.alias(f"t{i}")(state)
            passthrough.alias("end")(state)
    else:
        @dg.job(name=f"raw_fan_{n}")
        def job():
            fork = passthrough.alias("fork")(begin.alias("start")())
            joined = collect.alias("join")([task.alias(f"t{i}")(fork) for i in range(n)])
            passthrough.alias("end")(joined)
    return job


def ops_of(shape: str, n: int) -> int:
    return n + (2 if shape == "chain" else 4)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------ the API
def start_api(home: Path, port: int) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}
    env.update(PRIORITYMAX_HOME=str(home), PRIORITYMAX_ADMIN_TOKEN=ADMIN)
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                                "--port", str(port), "--log-level", "warning"], env=env, cwd=REPO)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited ({process.returncode})")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/workflows/health", timeout=1, trust_env=False)
            if health.status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the API did not start")


class EventStream:
    """One WebSocket subscriber on a thread: every event with its receive time (``time.time()``),
    and a wake-up per run when its ``run_*`` end event arrives."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.stack = contextlib.ExitStack()
        self.connection = self.stack.enter_context(connect(
            f"{url.replace('http://', 'ws://')}/workflows/ws/workflows?token={ADMIN}", open_timeout=10,
            max_size=None, proxy=None))
        hello = json.loads(self.connection.recv(timeout=10))
        if hello.get("type") != "hello":
            raise RuntimeError(f"the first message was not a hello: {hello}")
        self.received: list[tuple[dict, float]] = []
        self.ends: dict[str, tuple[dict, float]] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True, name="bench-ws")
        self.thread.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.connection:
                at = time.time()
                event = json.loads(message)
                with self.cond:
                    self.received.append((event, at))
                    if event.get("type") in RUN_END:
                        self.ends[event["run_id"]] = (event, at)
                        self.cond.notify_all()
        except ConnectionClosed:
            pass

    def wait_end(self, run_id: str, timeout: float) -> tuple[dict, float]:
        with self.cond:
            if not self.cond.wait_for(lambda: run_id in self.ends, timeout):
                raise RuntimeError(f"run {run_id} did not end within {timeout} s")
            return self.ends[run_id]

    def close(self) -> None:
        self.stack.close()
        self.thread.join(5)


def open_stream(url: str) -> EventStream | None:
    try:
        return EventStream(url)
    except Exception as error:  # the route is not there (yet): poll the run instead
        print(f"no WebSocket stream ({type(error).__name__}: {error}); polling GET /workflows/run/{{id}}",
              flush=True)
        return None


class API:
    def __init__(self, url: str, stream: EventStream | None, pid: int) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60,
                                   trust_env=False)
        self.stream = stream
        self.pid = pid

    def create(self, body: dict) -> str:
        response = self.client.post("/workflows/", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"creating {body['name']}: {response.status_code} {response.text[:500]}")
        return response.json()["workflow_id"]

    def run(self, workflow_id: str, timeout: float = 300) -> dict:
        """Start one run and wait for it; returns its times (``time.time()``) and the server's CPU."""
        cpu = cpu_seconds(self.pid)
        sent = time.time()
        response = self.client.post("/workflows/run/start",
                                    json={"workflow_id": workflow_id, "input_variables": {}})
        accepted = time.time()
        if response.status_code != 202:
            raise RuntimeError(f"run/start: {response.status_code} {response.text[:500]}")
        run_id = response.json()["run_id"]
        if self.stream is not None:
            end_event, seen = self.stream.wait_end(run_id, timeout)
            status = {"run_completed": "COMPLETED"}.get(end_event["type"], end_event["type"])
            ended_at = end_event["at"]
        else:
            deadline = time.monotonic() + timeout
            while True:
                run = self.client.get(f"/workflows/run/{run_id}").json()
                if run["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    seen, status, ended_at = time.time(), run["status"], run["finished_at"]
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {run_id} did not end within {timeout} s")
                time.sleep(POLL_S)
        cpu = cpu_seconds(self.pid) - cpu
        if status != "COMPLETED":
            detail = self.client.get(f"/workflows/run/{run_id}").text[:500]
            raise RuntimeError(f"run {run_id} ended {status}: {detail}")
        events = self.client.get(f"/workflows/trace/replay/{run_id}").json()["events"]
        started = next(e["at"] for e in events if e["type"] == "run_started")
        first_node = min(e["at"] for e in events if e["type"] == "node_start")
        return {"run_id": run_id, "sent": sent, "accepted": accepted, "seen": seen, "ended_at": ended_at,
                "run_started": started, "first_node": first_node, "events": len(events), "cpu": cpu}


# ------------------------------------------------------------------------------------- the run
def raw_run(job, instance, quiet: dict) -> tuple[float, float]:
    """One ``execute_in_process``: (wall seconds, this process's CPU seconds)."""
    cpu, started = time.process_time(), time.perf_counter()
    result = job.execute_in_process(instance=instance, run_config={"loggers": quiet})
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if not result.success:
        raise RuntimeError("the raw Dagster run failed")
    return elapsed, cpu


def measure(options) -> dict:
    import dagster as dg

    from orchestration.workflows.runner import QUIET, dagster_instance

    with tempfile.TemporaryDirectory(prefix="pmx-bench-wf-") as scratch:
        scratch = Path(scratch)
        # The API's own instance factory: the same dagster.yaml (telemetry off) in a home of our own.
        persistent = dagster_instance(SimpleNamespace(dagster_home=scratch / "raw" / "dagster"))
        ephemeral = dg.DagsterInstance.ephemeral()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        launched = time.perf_counter()
        server = start_api(scratch / "home", port)
        url = f"http://127.0.0.1:{port}"
        print(f"API up in {time.perf_counter() - launched:.1f} s", flush=True)
        stream = open_stream(url) if options.completion != "poll" else None
        if stream is None and options.completion == "ws":
            raise RuntimeError("--completion ws: the WebSocket route is not there")
        api = API(url, stream, server.pid)
        try:
            return run_all(options, api, persistent, ephemeral, QUIET)
        finally:
            if stream is not None:
                stream.close()
            api.client.close()
            server.terminate()
            server.wait(timeout=30)
            persistent.dispose()


def run_all(options, api: API, persistent, ephemeral, quiet: dict) -> dict:
    median = statistics.median
    figures: dict = {"nodes": options.nodes, "repeats": options.repeats,
                     "completion": "websocket" if api.stream is not None else f"poll {POLL_S * 1000:.0f} ms"}
    measured_runs: set[str] = set()
    for shape in ("chain", "fan"):
        workflow_id = api.create(spec(shape, options.nodes))
        job = raw_job(shape, options.nodes)
        first = api.run(workflow_id)  # compiles and caches the API's job; warms both sides
        raw_run(job, persistent, quiet)
        raw_run(job, ephemeral, quiet)
        series: dict[str, list[float]] = {key: [] for key in (
            "api", "api_server", "api_execute", "api_cpu", "raw_persistent", "raw_persistent_cpu",
            "raw_ephemeral")}
        for repeat in range(options.repeats):
            # API / raw persistent / raw ephemeral, rotated each repeat: slow spells of the shared
            # machine fall on every side.
            sides = ["api", "raw_persistent", "raw_ephemeral"]
            for side in sides[repeat % 3:] + sides[:repeat % 3]:
                if side == "api":
                    run = api.run(workflow_id)
                    measured_runs.add(run["run_id"])
                    series["api"].append(run["seen"] - run["sent"])
                    series["api_server"].append(run["ended_at"] - run["sent"])
                    series["api_execute"].append(run["ended_at"] - run["run_started"])
                    series["api_cpu"].append(run["cpu"])
                elif side == "raw_persistent":
                    wall, cpu = raw_run(job, persistent, quiet)
                    series["raw_persistent"].append(wall)
                    series["raw_persistent_cpu"].append(cpu)
                else:
                    series["raw_ephemeral"].append(raw_run(job, ephemeral, quiet)[0])
            print(f"{shape} repeat {repeat + 1}: API {series['api'][-1]:.3f} s, raw persistent "
                  f"{series['raw_persistent'][-1]:.3f} s, raw ephemeral {series['raw_ephemeral'][-1]:.3f} s",
                  flush=True)
        m = {side: median(values) for side, values in series.items()}
        ops = ops_of(shape, options.nodes)
        figures.update({
            f"{shape}_first_run_s": round(first["seen"] - first["sent"], 3),
            f"{shape}_api_s": round(m["api"], 3),
            f"{shape}_api_server_s": round(m["api_server"], 3),
            f"{shape}_api_execute_s": round(m["api_execute"], 3),
            f"{shape}_raw_persistent_s": round(m["raw_persistent"], 3),
            f"{shape}_raw_ephemeral_s": round(m["raw_ephemeral"], 3),
            f"{shape}_overhead_vs_raw_dagster": round(m["api"] / m["raw_persistent"], 3),
            f"{shape}_overhead_vs_raw_ephemeral": round(m["api"] / m["raw_ephemeral"], 3),
            f"{shape}_api_ms_per_op": round(m["api"] * 1000 / ops, 2),
            f"{shape}_raw_persistent_ms_per_op": round(m["raw_persistent"] * 1000 / ops, 2),
            f"{shape}_raw_ephemeral_ms_per_op": round(m["raw_ephemeral"] * 1000 / ops, 2),
            f"{shape}_api_server_cpu_s": round(m["api_cpu"], 3),
            f"{shape}_raw_persistent_cpu_s": round(m["raw_persistent_cpu"], 3),
            f"{shape}_cpu_ratio": round(m["api_cpu"] / m["raw_persistent_cpu"], 3),
        })
    figures["overhead_vs_raw_dagster"] = max(figures["chain_overhead_vs_raw_dagster"],
                                             figures["fan_overhead_vs_raw_dagster"])
    figures["overhead_vs_raw_ephemeral"] = max(figures["chain_overhead_vs_raw_ephemeral"],
                                               figures["fan_overhead_vs_raw_ephemeral"])

    # Submit to first node: a 3-node workflow, each API run followed by the same job run raw (the
    # time from calling execute_in_process to its start op's body, for context).
    small = api.create(spec("chain", 1))
    first_op: list[float] = []
    small_job = raw_job("chain", 1, first_op)
    api.run(small)
    raw_run(small_job, persistent, quiet)
    submit, accept, queued, raw_first = [], [], [], []
    for _ in range(options.small_runs):
        run = api.run(small)
        measured_runs.add(run["run_id"])
        submit.append((run["first_node"] - run["sent"]) * 1000)
        accept.append((run["accepted"] - run["sent"]) * 1000)
        queued.append((run["run_started"] - run["sent"]) * 1000)
        called = time.time()
        raw_run(small_job, persistent, quiet)
        raw_first.append((first_op[-1] - called) * 1000)
    figures.update({
        "submit_to_first_node_ms": round(median(submit), 1),
        "submit_to_first_node_max_ms": round(max(submit), 1),  # 20 samples: a p99 would be the max
        "run_start_response_ms": round(median(accept), 1),
        "submit_to_run_started_ms": round(median(queued), 1),
        "raw_call_to_first_op_ms": round(median(raw_first), 1),
        "small_runs": options.small_runs,
    })

    if api.stream is not None:
        with api.stream.cond:
            delays = [(seen - event["at"]) * 1000 for event, seen in api.stream.received
                      if event.get("run_id") in measured_runs and "at" in event]
        figures.update({"ws_event_p50_ms": round(median(delays), 2),
                        "ws_event_p99_ms": round(percentile(delays, 0.99), 2),
                        "ws_event_max_ms": round(max(delays), 2), "ws_events": len(delays)})
    else:
        figures.update({"ws_event_p50_ms": None, "ws_event_p99_ms": None, "ws_event_max_ms": None,
                        "ws_events": 0})
    return figures


def report(figures: dict) -> None:
    target = TARGETS["overhead_vs_raw_dagster"]
    for shape in ("chain", "fan"):
        f = {key.removeprefix(f"{shape}_"): value for key, value in figures.items()
             if key.startswith(f"{shape}_")}
        print(f"{shape} ({figures['nodes']} tasks, {ops_of(shape, figures['nodes'])} ops), median of "
              f"{figures['repeats']}: API {f['api_s']:.3f} s (run_started -> run_completed "
              f"{f['api_execute_s']:.3f} s); raw Dagster persistent {f['raw_persistent_s']:.3f} s, "
              f"ephemeral {f['raw_ephemeral_s']:.3f} s; first API run {f['first_run_s']:.3f} s")
        print(f"  {shape}_overhead_vs_raw_dagster: {f['overhead_vs_raw_dagster']:.2f}x (target <= {target}x; "
              f"{target / f['overhead_vs_raw_dagster']:.2f}x the target); vs ephemeral "
              f"{f['overhead_vs_raw_ephemeral']:.2f}x; CPU, API server / raw: {f['api_server_cpu_s']:.2f} / "
              f"{f['raw_persistent_cpu_s']:.2f} s = {f['cpu_ratio']:.2f}x")
    headline = figures["overhead_vs_raw_dagster"]
    print(f"overhead_vs_raw_dagster: {headline:.2f}x (target <= {target}x; {target / headline:.2f}x the "
          f"target: {'met' if headline <= target else 'missed'})")
    print(f"submit_to_first_node_ms: {figures['submit_to_first_node_ms']} median, "
          f"{figures['submit_to_first_node_max_ms']} max over {figures['small_runs']} runs (no target; "
          f"202 after {figures['run_start_response_ms']} ms, run_started after "
          f"{figures['submit_to_run_started_ms']} ms; raw execute_in_process to its first op: "
          f"{figures['raw_call_to_first_op_ms']} ms)")
    if figures["ws_event_p99_ms"] is not None:
        print(f"ws_event_p99_ms: {figures['ws_event_p99_ms']} (p50 {figures['ws_event_p50_ms']}, max "
              f"{figures['ws_event_max_ms']}, over {figures['ws_events']} events; no target)")
    else:
        print("ws_event_p99_ms: not measured (no WebSocket route)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100, help="tasks in the chain and in the fan-out")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small-runs", type=int, default=20, help="3-node runs for submit_to_first_node_ms")
    parser.add_argument("--completion", choices=["auto", "ws", "poll"], default="auto",
                        help="how the end of an API run is seen: the WebSocket's run_completed event "
                             "(auto: when the route is there) or GET /workflows/run/{id} every 20 ms")
    parser.add_argument("--quick", action="store_true", help="small graphs, 1 repeat: checks the script runs")
    options = parser.parse_args()
    if options.quick:
        options.nodes, options.repeats, options.small_runs = 20, 1, 5
    began = time.perf_counter()
    figures = measure(options)
    figures["bench_s"] = round(time.perf_counter() - began, 1)
    report(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
