"""The audit log's repair: no committed change is left without its line.

A change's audit line is appended to ``logs/config_audit.jsonl`` right after its transaction
commits, so a process killed between the two left a committed change with no line (seen twice in
about 47 kill -9 cycles). Everything the line says is in that transaction, though: the event row
(revision, type, when) and the version row (actor, operation, comment, previous version, value).
Those rows are the write-ahead record; :func:`repair` rebuilds any missing line from them.

It compares the revisions of the file's tail (:data:`TAIL_BYTES`, thousands of lines) with the
events from the oldest of them on, leaving alone the last :data:`SETTLE_S` seconds of events, whose
writers may still be appending their own lines. Repairers take the writers' lock, so two replicas
never append the same line. Each repaired line carries ``"repaired": true``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from prioritymax.db import config_events, config_versions

log = logging.getLogger("api.config")

#: How much of the audit file's end is read to learn which revisions have their line.
TAIL_BYTES = 2 * 1024 * 1024
#: Events younger than this are left to the process that committed them.
SETTLE_S = 2.0


def audited_revisions(path: Path, tail_bytes: int = TAIL_BYTES) -> set[int]:
    """The revisions of the audit lines in the last ``tail_bytes`` of ``path`` (a partial first
    line, and anything that is not an audit line, skipped)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - tail_bytes))
            data = handle.read()
    except FileNotFoundError:
        return set()
    lines = data.split(b"\n")
    if size > tail_bytes:
        lines = lines[1:]
    revisions = set()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("revision"), int):
            revisions.add(record["revision"])
    return revisions


def missing_lines(conn: Connection, audited: set[int], settled_before: float) -> list[dict[str, Any]]:
    """The audit line of each event from the oldest audited revision on, committed before
    ``settled_before``, whose revision has no line; in revision order."""
    if not audited:
        return []  # a new or rotated file: nothing to compare with
    versions = config_versions
    rows = conn.execute(
        select(config_events, versions.c.actor, versions.c.operation, versions.c.comment,
               versions.c.previous_version, versions.c.is_secret, versions.c.deleted,
               versions.c.value.label("version_value"))
        .select_from(config_events.outerjoin(versions, and_(
            versions.c.kind == config_events.c.kind, versions.c.key == config_events.c.key,
            versions.c.tenant == config_events.c.tenant, versions.c.version == config_events.c.version)))
        .where(config_events.c.revision >= min(audited), config_events.c.at < settled_before)
        .order_by(config_events.c.revision)).all()
    return [line_of(row) for row in rows if row.revision not in audited]


def line_of(row) -> dict[str, Any]:
    """The audit line a change's rows describe, as :meth:`ConfigService.audit` writes it."""
    if row.kind == "system":  # reload, key rotation: their details ride in the payload
        payload = row.payload or {}
        return {"at": row.at, "operation": row.type, "actor": payload.get("actor"), "revision": row.revision,
                **payload.get("details", {}), "repaired": True}
    secret_or_gone = bool(row.is_secret) or bool(row.deleted)
    return {"at": row.at, "operation": row.operation, "actor": row.actor, "kind": row.kind, "key": row.key,
            "tenant": row.tenant or None, "version": row.version, "previous_version": row.previous_version,
            "comment": row.comment, "is_secret": bool(row.is_secret), "revision": row.revision,
            "value": None if secret_or_gone else row.version_value, "repaired": True}


def repair(conn: Connection, path: Path, append) -> int:
    """Append (with ``append(record)``) the line of every settled change the file lacks; the
    caller holds the writers' lock on ``conn``. How many lines were repaired."""
    missing = missing_lines(conn, audited_revisions(path), time.time() - SETTLE_S)
    for record in missing:
        append(record)
    if missing:
        log.warning("the audit log lacked %d committed change(s) (revisions %s): repaired from the store",
                    len(missing), ", ".join(str(r["revision"]) for r in missing[:20]))
    return len(missing)
