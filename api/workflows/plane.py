"""The workflows plane of one API process: store, recorder, runner, event push, metrics, tracing and
the maintenance loop. It lives on ``app.state.workflows_plane`` and shares the config plane's
tokens (roles), database, WebSocket hub and Redis fan-out code.

Events flow: an op (on a run's thread) -> :class:`WorkflowRecorder` (store, logs) -> hooks here:
metrics, tracing, a Redis poke, and a wake-up of the event loop, which reads the log from its last
``seq`` on and pushes to WebSocket subscribers in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from api.config.fanout import Fanout
from api.config.hub import Hub
from api.tasks import BackgroundTasks
from api.workflows.feed import EventFeed
from api.workflows.metrics import WorkflowMetrics
from orchestration.workflows.runner import WorkflowRunner
from orchestration.workflows.runtime import WorkflowRecorder
from orchestration.workflows.spec import WorkflowSpec
from orchestration.workflows.store import FINISHED, WorkflowStore
from orchestration.workflows.tracing import from_settings as tracing_from_settings
from prioritymax.alerts import post_slack_async
from prioritymax.files import append_jsonl
from prioritymax.settings import Settings, get_settings

log = logging.getLogger("api.workflows")
CHANNEL = "prioritymax:workflows:events"
POLL_EVERY_S = 1.0
GAP_WAIT_S = 0.05


class WorkflowsPlane:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings().layout_home()
        self.store = WorkflowStore.from_settings(self.settings)
        self.recorder = WorkflowRecorder(self.store, self.settings)
        self.runner = WorkflowRunner(self.store, self.recorder, self.settings)
        self.metrics = WorkflowMetrics()
        self.tracing = tracing_from_settings(self.settings)
        self.feed = EventFeed(self.store)
        self.hub = Hub(self.feed)
        self.fanout = (Fanout(self.hub, self.settings.redis_url, channel=CHANNEL,
                              on_news=self.metrics.fanout_pokes.inc) if self.settings.redis_url else None)
        self.started_at = time.time()
        self.last_maintenance: dict[str, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tasks = BackgroundTasks("workflows")
        # tracing.on_event never raises (a malformed event is logged and dropped).
        self.recorder.hooks.extend([self.metrics.on_event, self.tracing.on_event, self._announce])
        self.metrics.runs_active.set_function(self.store.count_active)
        self.metrics.ws_connections.set_function(lambda: self.hub.connections)
        self._pump_due = False
        #: Parsed specs by (workflow_id, version) for the SLA check: versions never change.
        self._sla_specs: dict[tuple[str, int], WorkflowSpec | None] = {}

    # ------------------------------------------------------------------------ event hooks
    def _announce(self, event: dict) -> None:
        """From any thread: poke other replicas, and hand the event to our loop to push."""
        if self.fanout is not None:
            self.fanout.poke(event["seq"])
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to push to
                loop.call_soon_threadsafe(self._push, event)

    def _push(self, event: dict) -> None:
        """On the loop: push the event if it is the next one; if an earlier one is missing (stored
        by another process), read the log shortly after, unless its own thread hands it over first."""
        self.feed.offer(event)
        if self.feed.pending and not self._pump_due and self._loop is not None:
            self._pump_due = True  # one read of the log at a time, however many events wait
            self._loop.call_later(GAP_WAIT_S, self._pump)

    def _pump(self) -> None:
        self._pump_due = False
        try:
            self.hub.pump()
        except Exception:
            log.exception("pushing workflow events failed")

    # ------------------------------------------------------------------------------ loops
    def start(self) -> None:
        """Start the push, poll, fan-out and maintenance tasks on the running loop (idempotent)."""
        self._loop = asyncio.get_running_loop()
        # Open the Dagster instance now, not on the first run.
        self.tasks.start("warm", lambda: asyncio.to_thread(lambda: self.runner.instance))
        self.tasks.start("poll", lambda: self.hub.poll_forever(POLL_EVERY_S))
        self.tasks.start("reclaim", self._reclaim_at_start)
        self.tasks.start("maintenance", self._maintain_forever)
        if self.fanout is not None:
            self.tasks.start("fanout", self.fanout.run)

    async def stop(self) -> None:
        await self.tasks.stop()
        await asyncio.to_thread(self.runner.shutdown)
        self.tracing.shutdown()
        self._loop = None

    async def _reclaim_at_start(self) -> None:
        """Runs left behind by a process that died (this API's previous life, or a replica)."""
        try:
            await asyncio.to_thread(self.reclaim)
        except Exception:
            log.exception("reclaiming workflow runs at start-up failed")

    async def _maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.workflow_maintenance_interval)
            try:
                await self.maintain()
            except Exception:
                log.exception("workflow maintenance failed")

    # ------------------------------------------------------------------------ maintenance
    async def maintain(self, now: float | None = None) -> dict[str, Any]:
        """Reclaiming orphaned runs, SLA checks (per workflow and node) and retention. Returns what
        it did."""
        reclaimed = await asyncio.to_thread(self.reclaim)
        now = now or time.time()  # after the reclaim, so the SLA checks measure up to this moment
        violations = await asyncio.to_thread(self.check_slas, now)
        for violation in violations:
            where = f" node {violation['node_id']}" if violation.get("node_id") else ""
            await self.alert(f"SLA violation: workflow {violation['workflow_id']} run "
                             f"{violation['run_id']}{where} took {violation['elapsed_seconds']:.1f} s "
                             f"(SLA {violation['sla_seconds']} s)")
        cleaned = await asyncio.to_thread(self.cleanup, now, "maintenance")
        self.last_maintenance = {"at": now, "sla_violations": len(violations), **reclaimed, **cleaned}
        if violations:
            self.report({"action": "maintenance", **self.last_maintenance})
        return self.last_maintenance

    def reclaim(self) -> dict[str, int]:
        """Take over the runs whose process stopped renewing their lease (DESIGN.md decision 10):
        running ones end FAILED "interrupted", queued ones start here. Audited when it found any."""
        done = self.runner.reclaim()
        if done["interrupted"] or done["adopted"]:
            record = {"action": "reclaim", "owner": self.runner.owner, **done}
            self.store.audit(record)
            self.report(record)
        return {"runs_interrupted": len(done["interrupted"]), "runs_adopted": len(done["adopted"])}

    def cleanup(self, now: float | None = None, actor: str = "maintenance") -> dict[str, Any]:
        days = self.settings.workflow_retention_days
        result = self.store.cleanup((now or time.time()) - days * 86400)
        if result["runs_deleted"] or actor != "maintenance":  # a pass that did nothing leaves no line
            record = {"action": "cleanup", "actor": actor, "retention_days": days, **result}
            self.store.audit(record)
            self.report(record)
        return {"retention_days": days, **result}

    def report(self, record: dict[str, Any]) -> None:
        """One line in ``WORKFLOWS_META_DIR/reports/maintenance.jsonl`` (the seed's reports/)."""
        append_jsonl(self.settings.workflows_meta_dir / "reports" / "maintenance.jsonl",
                     {"at": time.time(), **record})

    def check_slas(self, now: float) -> list[dict]:
        """Each run is checked until it finishes: the workflow's ``sla_seconds`` against the run's
        time so far, each node's against its attempts. A violation is reported once per scope."""
        found = []
        for run in self.store.unchecked_runs():
            spec = self._sla_spec(run["workflow_id"], run["version"])
            if spec is None or not (spec.sla_seconds or any(n.sla_seconds for n in spec.nodes)):
                self.store.mark_sla_checked(run["run_id"])  # nothing to check, now or later
                continue
            events = self.store.run_events(run["run_id"])
            reported = {e.get("node_id") for e in events if e["type"] == "sla_violation"}
            finished = run["status"] in FINISHED
            begun = run["started_at"] or run["created_at"]
            end = run["finished_at"] or now
            checks: list[tuple[str | None, float | None, float]] = [(None, spec.sla_seconds, end - begun)]
            starts: dict[str, float] = {}
            for event in events:
                node = event.get("node_id")
                if event["type"] == "node_start" and node not in starts:
                    starts[node] = event["at"]
            ends = {e["node_id"]: e["at"] for e in events
                    if e["type"] == "node_end" and e.get("status") == "COMPLETED"}
            for node in spec.nodes:
                if node.sla_seconds and node.node_id in starts:
                    took = ends.get(node.node_id, end) - starts[node.node_id]
                    checks.append((node.node_id, node.sla_seconds, took))
            for node_id, sla, elapsed in checks:
                if sla is None or elapsed <= sla or node_id in reported:
                    continue
                event = {"type": "sla_violation", "run_id": run["run_id"], "workflow_id": run["workflow_id"],
                         "version": run["version"], "node_id": node_id, "sla_seconds": sla,
                         "elapsed_seconds": round(elapsed, 3), "at": now}
                found.append(self.recorder.emit(event))
            if finished:
                self.store.mark_sla_checked(run["run_id"])
        return found

    def _sla_spec(self, workflow_id: str, version: int) -> WorkflowSpec | None:
        key = (workflow_id, version)
        if key not in self._sla_specs:
            stored = self.store.version_spec(workflow_id, version)  # even of a deleted workflow
            self._sla_specs[key] = WorkflowSpec.model_validate(stored) if stored is not None else None
        return self._sla_specs[key]

    async def alert(self, text: str) -> None:
        """Post to Slack when SLACK_WEBHOOK_URL is set; failures are logged, never raised."""
        await post_slack_async(text, source="workflows", settings=self.settings)

    def health(self) -> dict[str, Any]:
        """Open to probes without a token, so nothing here says where things are on the server
        (the Dagster home's path was: a map of the filesystem for anyone who can reach the port)."""
        return {"ok": True, "uptime_seconds": int(time.time() - self.started_at),
                "runs_active": self.store.count_active(), "ws_connections": self.hub.connections,
                "max_concurrent_runs": self.settings.workflow_max_concurrent_runs,
                "tracing": self.tracing.enabled,
                "redis_fanout": self.fanout is not None and self.fanout.subscribed,
                "last_maintenance": self.last_maintenance}


def workflows_plane(app) -> WorkflowsPlane:
    """The app's workflows plane, created on first use (an app that only includes the router)."""
    plane = getattr(app.state, "workflows_plane", None)
    if plane is None:
        plane = app.state.workflows_plane = WorkflowsPlane()
        with contextlib.suppress(RuntimeError):  # called outside a running loop: started later
            plane.start()
    return plane
