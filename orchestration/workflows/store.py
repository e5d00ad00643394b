"""Workflow state on the shared SQLAlchemy Core store (DESIGN.md decision 2): definitions and their
immutable versions, task templates, runs, and the run event log.

The tables sit on :data:`prioritymax.db.metadata` beside the config control plane's, in the same SQLite file
(or PostgreSQL database), so the API, the Dagster code location and `dagster job launch` processes
all read and write one truth. ``workflow_events.seq`` (autoincrement) orders every run event across
processes: the WebSocket resumes from it (``?since=``) and replay reads it back.

Every event is also appended to the run's own JSONL log (``logs/runs/<run_id>.jsonl``, the seed's
per-run log) and to ``logs/workflows_audit.jsonl``; definition changes are audited there too.

Runs survive their process (DESIGN.md decision 10): a run the API queued or executes holds a row in
``workflow_leases`` (owner, renewed_at, expires_at) from its creation to its end event, renewed by
its process; a run whose lease lapsed (or an API run with none: one from before leases) is an
*orphan* that another process reclaims. Resumed runs name their parent and root in
``workflow_run_lineage``. Both are tables of their own, so an existing database gains them with
``create_all`` and needs no migration of ``workflow_runs``.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    String,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from prioritymax.db import engine_for, metadata, reader_for
from prioritymax.files import AppendLog, append_jsonl

workflows = Table(
    "workflows", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", String(5000), nullable=True),
    Column("latest_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
)

workflow_versions = Table(
    "workflow_versions", metadata,
    Column("workflow_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("comment", String(1000), nullable=True),
)

workflow_templates = Table(
    "workflow_templates", metadata,
    Column("name", String(200), primary_key=True),
    Column("template", JSON, nullable=False),
    Column("description", String(2000), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(120), nullable=False),
)

workflow_runs = Table(
    "workflow_runs", metadata,
    Column("run_id", String(64), primary_key=True),  # the Dagster run id too
    Column("workflow_id", String(64), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("job_name", String(200), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("input_variables", JSON, nullable=False),
    Column("results", JSON, nullable=False),
    Column("error", String(5000), nullable=True),
    Column("actor", String(120), nullable=False),
    Column("created_at", Float, nullable=False, index=True),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("sla_checked", Boolean, nullable=False, default=False),
)

workflow_events = Table(
    "workflow_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("node_id", String(64), nullable=True),
    Column("event", JSON, nullable=False),
    Column("at", Float, nullable=False),
    # AUTOINCREMENT on SQLite: a seq is never reused after retention deletes the newest events, so
    # WebSocket subscribers and ?since= never mistake a new event for one they already have.
    sqlite_autoincrement=True,
)

workflow_leases = Table(
    "workflow_leases", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("owner", String(120), nullable=False),
    Column("renewed_at", Float, nullable=False),  # the owner's last heartbeat
    Column("expires_at", Float, nullable=False, index=True),
)

workflow_run_lineage = Table(
    "workflow_run_lineage", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("parent_run_id", String(64), nullable=False, index=True),
    Column("root_run_id", String(64), nullable=False, index=True),
)

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"
FINISHED = (COMPLETED, FAILED, CANCELLED)
#: Run events that end a run, and the status each leaves.
RUN_END = {"run_completed": COMPLETED, "run_failed": FAILED, "run_cancelled": CANCELLED}
#: The error of a run reclaimed after its process stopped (it starts every such error).
INTERRUPTED = "interrupted"
#: The actor of runs launched from Dagster: its run monitoring and our sensor close them, not leases.
DAGSTER_ACTOR = "dagster"


class WorkflowStore:
    def __init__(self, engine: Engine, logs_dir: Path, reader: Engine | None = None) -> None:
        self.engine = engine
        #: Reads go through an engine that does not take SQLite's write lock (prioritymax.db.reader_for).
        self.reader = reader or engine
        metadata.create_all(engine)  # the engine may predate this module's tables (idempotent)
        self.logs_dir = logs_dir
        self.audit_path = logs_dir / "workflows_audit.jsonl"
        self._audit = AppendLog(self.audit_path)
        #: The JSONL logs of the runs going on, open until their run_* end event.
        self._run_logs: dict[str, AppendLog] = {}
        self._run_logs_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> WorkflowStore:
        return cls(engine_for(settings.db_url), settings.logs_dir, reader_for(settings.db_url))

    def run_log_path(self, run_id: str) -> Path:
        return self.logs_dir / "runs" / f"{run_id}.jsonl"

    def audit(self, record: dict[str, Any]) -> None:
        self._audit.append({"at": time.time(), **record})

    # --------------------------------------------------------------------------- definitions
    def create(self, spec: dict, actor: str, workflow_id: str | None = None,
               comment: str | None = None) -> dict[str, Any]:
        workflow_id = workflow_id or f"wf_{secrets.token_hex(6)}"
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(insert(workflows).values(
                id=workflow_id, name=spec["name"], description=spec.get("description"), latest_version=1,
                created_at=now, updated_at=now, created_by=actor, deleted=False))
            conn.execute(insert(workflow_versions).values(
                workflow_id=workflow_id, version=1, spec=spec, created_at=now, created_by=actor,
                comment=comment))
        self.audit({"action": "workflow_created", "workflow_id": workflow_id, "version": 1, "actor": actor})
        return self.get(workflow_id)

    def update(self, workflow_id: str, spec: dict, actor: str, comment: str | None = None,
               expected_version: int | None = None) -> dict[str, Any] | None:
        """A new immutable version; None when the workflow is unknown. A stale ``expected_version``
        raises :class:`StaleVersion`."""
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(select(workflows).where(workflows.c.id == workflow_id,
                                                       workflows.c.deleted.is_(False))).first()
            if row is None:
                return None
            if expected_version is not None and expected_version != row.latest_version:
                raise StaleVersion(workflow_id, expected_version, row.latest_version)
            version = row.latest_version + 1
            conn.execute(insert(workflow_versions).values(
                workflow_id=workflow_id, version=version, spec=spec, created_at=now, created_by=actor,
                comment=comment))
            conn.execute(update(workflows).where(workflows.c.id == workflow_id).values(
                latest_version=version, name=spec["name"], description=spec.get("description"),
                updated_at=now))
        self.audit({"action": "workflow_updated", "workflow_id": workflow_id, "version": version,
                    "actor": actor})
        return self.get(workflow_id)

    def delete(self, workflow_id: str, actor: str) -> bool:
        """Soft delete: versions and runs stay readable (history is never lost)."""
        with self.engine.begin() as conn:
            done = conn.execute(update(workflows).where(workflows.c.id == workflow_id,
                                                        workflows.c.deleted.is_(False))
                                .values(deleted=True, updated_at=time.time())).rowcount
        if done:
            self.audit({"action": "workflow_deleted", "workflow_id": workflow_id, "actor": actor})
        return bool(done)

    def get(self, workflow_id: str, version: int | None = None) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(workflows).where(workflows.c.id == workflow_id,
                                                       workflows.c.deleted.is_(False))).first()
            if row is None:
                return None
            version = version or row.latest_version
            spec_row = conn.execute(select(workflow_versions).where(
                workflow_versions.c.workflow_id == workflow_id,
                workflow_versions.c.version == version)).first()
        if spec_row is None:
            return None
        return {"workflow_id": row.id, "name": row.name, "description": row.description,
                "version": version, "latest_version": row.latest_version, "created_at": row.created_at,
                "updated_at": row.updated_at, "created_by": row.created_by, "spec": spec_row.spec,
                "version_created_by": spec_row.created_by, "comment": spec_row.comment}

    def list(self, name_prefix: str | None = None) -> list[dict[str, Any]]:
        query = select(workflows).where(workflows.c.deleted.is_(False)).order_by(workflows.c.created_at)
        if name_prefix:
            query = query.where(workflows.c.name.startswith(name_prefix, autoescape=True))
        with self.reader.connect() as conn:
            return [{"workflow_id": r.id, "name": r.name, "description": r.description,
                     "latest_version": r.latest_version, "created_at": r.created_at,
                     "updated_at": r.updated_at, "created_by": r.created_by}
                    for r in conn.execute(query)]

    def versions(self, workflow_id: str, with_specs: bool = False) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(select(workflow_versions)
                                .where(workflow_versions.c.workflow_id == workflow_id)
                                .order_by(workflow_versions.c.version)).all()
        return [{"version": r.version, "created_at": r.created_at, "created_by": r.created_by,
                 "comment": r.comment, "name": r.spec.get("name"), "nodes": len(r.spec.get("nodes", [])),
                 **({"spec": r.spec} if with_specs else {})}
                for r in rows]

    def version_spec(self, workflow_id: str, version: int) -> dict | None:
        """A version's spec, even after its workflow was deleted (runs of it stay checkable)."""
        with self.reader.connect() as conn:
            row = conn.execute(select(workflow_versions.c.spec).where(
                workflow_versions.c.workflow_id == workflow_id,
                workflow_versions.c.version == version)).first()
        return row.spec if row else None

    def spec(self, workflow_id: str, version: int | None = None) -> dict | None:
        found = self.get(workflow_id, version)
        return found["spec"] if found else None

    # ----------------------------------------------------------------------------- templates
    def put_template(self, name: str, template: dict, actor: str, description: str | None = None) -> dict:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(delete(workflow_templates).where(workflow_templates.c.name == name))
            conn.execute(insert(workflow_templates).values(
                name=name, template=template, description=description, created_at=now, created_by=actor))
        self.audit({"action": "template_saved", "template": name, "actor": actor})
        return {"name": name, "template": template, "description": description, "created_at": now,
                "created_by": actor}

    def templates(self) -> dict[str, dict]:
        with self.reader.connect() as conn:
            rows = conn.execute(select(workflow_templates).order_by(workflow_templates.c.name)).all()
        return {r.name: {"name": r.name, "template": r.template, "description": r.description,
                         "created_at": r.created_at, "created_by": r.created_by} for r in rows}

    def templates_stamp(self) -> tuple[int, float]:
        """Changes whenever a template is saved or deleted: what compiled jobs are keyed by."""
        with self.reader.connect() as conn:
            count, newest = conn.execute(
                select(func.count(), func.max(workflow_templates.c.created_at))).one()
        return count, newest or 0.0

    def delete_template(self, name: str, actor: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(delete(workflow_templates).where(workflow_templates.c.name == name)).rowcount
        if done:
            self.audit({"action": "template_deleted", "template": name, "actor": actor})
        return bool(done)

    # ---------------------------------------------------------------------------------- runs
    def create_run(self, run_id: str, workflow_id: str, version: int, job_name: str, variables: dict,
                   actor: str, *, owner: str | None = None, lease_seconds: float = 0.0,
                   parent_run_id: str | None = None, root_run_id: str | None = None) -> dict:
        """Record a run PENDING. With ``owner``, its lease is taken in the same transaction, so no
        moment exists where the run is active and unleased (which would read as an orphan)."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(insert(workflow_runs).values(
                run_id=run_id, workflow_id=workflow_id, version=version, job_name=job_name, status=PENDING,
                input_variables=variables, results={}, error=None, actor=actor, created_at=now,
                sla_checked=False))
            if owner is not None:
                conn.execute(insert(workflow_leases).values(
                    run_id=run_id, owner=owner, renewed_at=now, expires_at=now + lease_seconds))
            if parent_run_id is not None:
                conn.execute(insert(workflow_run_lineage).values(
                    run_id=run_id, parent_run_id=parent_run_id, root_run_id=root_run_id or parent_run_id))
        return self.run(run_id)

    def ensure_run(self, run_id: str, workflow_id: str, version: int, job_name: str, variables: dict) -> None:
        """A run launched outside the API (the Dagster UI, `dagster job launch`) gets its record on
        its first event."""
        with self.engine.begin() as conn:
            if conn.execute(select(workflow_runs.c.run_id).where(workflow_runs.c.run_id == run_id)).first():
                return
            conn.execute(insert(workflow_runs).values(
                run_id=run_id, workflow_id=workflow_id, version=version, job_name=job_name, status=PENDING,
                input_variables=variables, results={}, error=None, actor="dagster", created_at=time.time(),
                sla_checked=False))

    def run(self, run_id: str) -> dict | None:
        with self.reader.connect() as conn:
            row = conn.execute(_runs_query().where(workflow_runs.c.run_id == run_id)).first()
        return _run_dict(row) if row else None

    def runs(self, workflow_id: str | None = None, status: str | tuple[str, ...] | None = None,
             limit: int = 100, actor: str | None = None) -> list[dict]:
        query = _runs_query().order_by(workflow_runs.c.created_at.desc()).limit(limit)
        if workflow_id:
            query = query.where(workflow_runs.c.workflow_id == workflow_id)
        if status:
            statuses = (status,) if isinstance(status, str) else status
            query = query.where(workflow_runs.c.status.in_(statuses))
        if actor:
            query = query.where(workflow_runs.c.actor == actor)
        with self.reader.connect() as conn:
            return [_run_dict(r) for r in conn.execute(query)]

    def count_active(self) -> int:
        with self.reader.connect() as conn:
            return conn.execute(select(func.count()).select_from(workflow_runs)
                                .where(workflow_runs.c.status.in_((PENDING, RUNNING)))).scalar() or 0

    def unchecked_runs(self) -> list[dict]:
        """Runs the SLA check has not yet closed: active ones, and finished ones not yet checked."""
        with self.reader.connect() as conn:
            rows = conn.execute(_runs_query().where(workflow_runs.c.sla_checked.is_(False))).all()
        return [_run_dict(r) for r in rows]

    # -------------------------------------------------------------------------------- leases
    def renew_leases(self, owner: str, run_ids: list[str], lease_seconds: float) -> set[str]:
        """Push the leases ``owner`` holds on ``run_ids`` ``lease_seconds`` ahead; returns the ids
        still held. One missing was taken over (its run reclaimed while this process stalled) or
        ended."""
        if not run_ids:
            return set()
        now = time.time()
        held = and_(workflow_leases.c.run_id.in_(run_ids), workflow_leases.c.owner == owner)
        with self.engine.begin() as conn:
            conn.execute(update(workflow_leases).where(held)
                         .values(renewed_at=now, expires_at=now + lease_seconds))
            return {r.run_id for r in conn.execute(select(workflow_leases.c.run_id).where(held))}

    def holds_lease(self, run_id: str, owner: str) -> bool:
        with self.reader.connect() as conn:
            return conn.execute(select(workflow_leases.c.run_id).where(
                workflow_leases.c.run_id == run_id, workflow_leases.c.owner == owner)).first() is not None

    def lease(self, run_id: str) -> dict | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(workflow_leases).where(workflow_leases.c.run_id == run_id)).first()
        return dict(row._mapping) if row else None

    def orphaned_runs(self, now: float | None = None, run_id: str | None = None) -> list[dict]:
        """Active runs nobody executes (only ``run_id`` when given): their lease expired before
        ``now``, or an API run has none (recorded before leases existed). Runs launched from Dagster
        are Dagster's to monitor."""
        now = time.time() if now is None else now
        lapsed = or_(workflow_leases.c.expires_at < now,
                     and_(workflow_leases.c.run_id.is_(None), workflow_runs.c.actor != DAGSTER_ACTOR))
        query = (_runs_query().outerjoin(workflow_leases, workflow_leases.c.run_id == workflow_runs.c.run_id)
                 .where(workflow_runs.c.status.in_((PENDING, RUNNING)), lapsed)
                 .order_by(workflow_runs.c.created_at))
        if run_id is not None:
            query = query.where(workflow_runs.c.run_id == run_id)
        with self.reader.connect() as conn:
            return [_run_dict(r) for r in conn.execute(query)]

    def take_lease(self, run_id: str, owner: str, lease_seconds: float, now: float | None = None) -> bool:
        """Take an orphan's lease; False when it is not one any more (renewed, taken by another
        process first, or ended). The one conditional UPDATE (or INSERT) is what makes two
        reclaiming replicas agree on who acts."""
        now = time.time() if now is None else now
        values = {"owner": owner, "renewed_at": now, "expires_at": now + lease_seconds}
        with self.engine.begin() as conn:
            taken = conn.execute(update(workflow_leases).where(
                workflow_leases.c.run_id == run_id, workflow_leases.c.expires_at < now).values(**values))
            if not taken.rowcount:
                if conn.execute(select(workflow_leases.c.run_id)
                                .where(workflow_leases.c.run_id == run_id)).first():
                    return False
                try:
                    with conn.begin_nested():
                        conn.execute(insert(workflow_leases).values(run_id=run_id, **values))
                except IntegrityError:
                    return False
            status = conn.execute(select(workflow_runs.c.status)
                                  .where(workflow_runs.c.run_id == run_id)).scalar()
            if status not in (PENDING, RUNNING):  # it ended meanwhile: leave no lease behind
                conn.execute(delete(workflow_leases).where(workflow_leases.c.run_id == run_id))
                return False
        return True

    def release_lease(self, run_id: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(workflow_leases).where(workflow_leases.c.run_id == run_id,
                                                       workflow_leases.c.owner == owner))

    def unfinished_nodes(self, run_id: str) -> list[dict]:
        """The node_start events of a run with no node_end for the same attempt: the nodes that were
        executing when its process stopped."""
        open_: dict[tuple, dict] = {}
        for event in self.run_events(run_id):
            key = (event.get("node_id"), event.get("attempt"))
            if event["type"] == "node_start":
                open_[key] = event
            elif event["type"] == "node_end":
                open_.pop(key, None)
        return list(open_.values())

    def completed_nodes(self, run_id: str) -> dict[str, dict]:
        """node_id -> what a resumed run reuses of each node the run completed: its ``result`` (when
        it had one), a switch's ``chosen`` branch, and ``reused_from``, the run that executed it."""
        done: dict[str, dict] = {}
        for event in self.run_events(run_id):
            if event["type"] == "node_end" and event.get("status") == COMPLETED:
                done[event["node_id"]] = {
                    **{k: event[k] for k in ("result", "chosen") if k in event},
                    "reused_from": event.get("reused_from") or run_id}
        return done

    def mark_sla_checked(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(workflow_runs).where(workflow_runs.c.run_id == run_id)
                         .values(sla_checked=True))

    # -------------------------------------------------------------------------------- events
    def append_event(self, event: dict[str, Any], status: str | None = None,
                     results: dict[str, Any] | None = None) -> int:
        """Store one run event; returns its ``seq``. The event's own dict gains ``seq``. With
        ``status``, the run moves to it in the same transaction: whoever sees the end event sees
        the final record, and the other way round."""
        with self.engine.begin() as conn:
            if status is not None:
                conn.execute(_status_update(event["run_id"], status, event["at"], event.get("error"),
                                            results))
            if status in FINISHED:  # an ended run is nobody's to renew or reclaim
                conn.execute(delete(workflow_leases).where(workflow_leases.c.run_id == event["run_id"]))
            seq = conn.execute(insert(workflow_events).values(
                run_id=event["run_id"], type=event["type"], node_id=event.get("node_id"), event=event,
                at=event["at"])).inserted_primary_key[0]
        event["seq"] = seq
        run_id, kind = event["run_id"], event["type"]
        with self._run_logs_lock:  # a run's log stays open from run_started to its end event
            log = self._run_logs.get(run_id)
            if log is None and kind == "run_started":
                log = self._run_logs[run_id] = AppendLog(self.run_log_path(run_id))
            if kind in RUN_END:
                self._run_logs.pop(run_id, None)
        if log is None:  # a run launched from Dagster, or an SLA event after the end
            append_jsonl(self.run_log_path(run_id), event)
        else:
            log.append(event)
            if kind in RUN_END:
                log.close()
        self._audit.append(event)
        return seq

    def last_failure(self, run_id: str) -> str | None:
        """A failed run's error: the last node failure its events recorded."""
        for event in reversed(self.run_events(run_id)):
            if event["type"] == "node_end" and event.get("status") == FAILED:
                return f"node {event['node_id']} failed: {event.get('error')}"
        return None

    def latest_seq(self) -> int:
        with self.reader.connect() as conn:
            return conn.execute(select(func.max(workflow_events.c.seq))).scalar() or 0

    def events_since(self, seq: int, limit: int = 10_000) -> list[dict]:
        with self.reader.connect() as conn:
            rows = conn.execute(select(workflow_events.c.seq, workflow_events.c.event)
                                .where(workflow_events.c.seq > seq).order_by(workflow_events.c.seq)
                                .limit(limit)).all()
        return [{**r.event, "seq": r.seq} for r in rows]

    def run_events(self, run_id: str, after: int = 0) -> list[dict]:
        """A run's events in order (those after seq ``after``)."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(workflow_events.c.seq, workflow_events.c.event)
                                .where(workflow_events.c.run_id == run_id, workflow_events.c.seq > after)
                                .order_by(workflow_events.c.seq)).all()
        return [{**r.event, "seq": r.seq} for r in rows]

    def node_results(self, run_id: str) -> dict[str, Any]:
        """node_id -> result of each node that completed with one, from the run's events (so a run
        executed by any process, or one still going, has them)."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(workflow_events.c.event).where(
                workflow_events.c.run_id == run_id, workflow_events.c.type == "node_end")
                .order_by(workflow_events.c.seq)).all()
        return {r.event["node_id"]: r.event["result"] for r in rows
                if r.event.get("status") == COMPLETED and "result" in r.event}

    # ------------------------------------------------------------------------------ retention
    def cleanup(self, older_than: float) -> dict[str, int]:
        """Delete finished runs (and their events and log files) that ended before ``older_than``."""
        with self.engine.begin() as conn:
            ids = [r.run_id for r in conn.execute(select(workflow_runs.c.run_id).where(
                workflow_runs.c.status.in_(FINISHED), workflow_runs.c.finished_at < older_than))]
            events = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                gone = conn.execute(delete(workflow_events).where(workflow_events.c.run_id.in_(chunk)))
                events += gone.rowcount
                conn.execute(delete(workflow_run_lineage).where(workflow_run_lineage.c.run_id.in_(chunk)))
                conn.execute(delete(workflow_runs).where(workflow_runs.c.run_id.in_(chunk)))
        for run_id in ids:
            self.run_log_path(run_id).unlink(missing_ok=True)
        return {"runs_deleted": len(ids), "events_deleted": events}


class StaleVersion(Exception):
    def __init__(self, workflow_id: str, expected: int, latest: int) -> None:
        super().__init__(f"workflow {workflow_id} is at version {latest}, not {expected}")
        self.latest = latest


def _status_update(run_id: str, status: str, at: float, error: str | None = None,
                   results: dict[str, Any] | None = None):
    """The UPDATE that moves a run to ``status``, guarded so that a finished run stays finished
    (a cancel racing completion) and a late start never reopens one."""
    values: dict[str, Any] = {"status": status}
    if results is not None:
        values["results"] = results
    if status == RUNNING:
        values["started_at"] = at
    if status in FINISHED:
        values["finished_at"] = at
    if error is not None:
        values["error"] = error[:5000]
    query = update(workflow_runs).where(workflow_runs.c.run_id == run_id)
    if status in FINISHED:  # a finished run stays finished (cancel racing completion)
        query = query.where(workflow_runs.c.status.not_in(FINISHED))
    elif status == RUNNING:  # and a late start never reopens it
        query = query.where(workflow_runs.c.status == PENDING)
    return query.values(**values)


def _runs_query():
    """Run records with their lineage (None for a run that resumes nothing)."""
    return (select(workflow_runs, workflow_run_lineage.c.parent_run_id, workflow_run_lineage.c.root_run_id)
            .select_from(workflow_runs.outerjoin(
                workflow_run_lineage, workflow_run_lineage.c.run_id == workflow_runs.c.run_id)))


def _run_dict(row) -> dict[str, Any]:
    return {"run_id": row.run_id, "workflow_id": row.workflow_id, "version": row.version,
            "job_name": row.job_name, "status": row.status, "input_variables": row.input_variables,
            "results": row.results, "error": row.error, "actor": row.actor, "created_at": row.created_at,
            "started_at": row.started_at, "finished_at": row.finished_at,
            "duration_seconds": (row.finished_at - row.started_at)
            if row.finished_at and row.started_at else None,
            "parent_run_id": row.parent_run_id, "root_run_id": row.root_run_id or row.run_id}
