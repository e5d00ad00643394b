"""Group commit (ConfigService.set_grouped): writes that arrive together share one SQLite
transaction, yet each is its own version, event and audit line, checked in arrival order."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import event, select

from api.config.keyring import Keyring
from api.config.service import CONFIG, MASK, ConfigService, Conflict
from prioritymax.db import config_events, config_versions, engine_for, reader_for


@pytest.fixture()
def statements() -> list[str]:
    """Every SQL statement run on the store's connections (sqlite3's trace callback)."""
    return []


@pytest.fixture()
def service(tmp_path, statements):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine, reader = engine_for(url), reader_for(url)
    for pool in (engine, reader):  # each checkout, so a connection pooled before is traced too
        event.listen(pool, "checkout",
                     lambda dbapi, _record, _proxy: dbapi.set_trace_callback(statements.append))
    return ConfigService(engine, Keyring(tmp_path / "fernet.key"), tmp_path / "audit.jsonl", reader=reader)


def transactions(statements: list[str]) -> int:
    return sum(statement == "BEGIN IMMEDIATE" for statement in statements)


def test_grouped_writes_are_each_a_version_event_and_audit_line(service, statements, tmp_path):
    seen: list[int] = []
    service.listeners.append(lambda changes: seen.extend(c.revision for c in changes))

    async def burst():
        return await asyncio.gather(
            *(service.set_grouped(CONFIG, "group.key", i, actor="t") for i in range(5)),
            service.set_grouped(CONFIG, "group.key", "stale", actor="t", expected_version=1),
            service.set_grouped(CONFIG, "group.secret", "s3cret", actor="t", is_secret=True),
            return_exceptions=True)

    statements.clear()
    results = asyncio.run(burst())
    # The seven writes shared one write transaction: with set() each would have begun its own.
    assert transactions(statements) == 1 and statements.count("COMMIT") == 1
    assert [r["version"] for r in results[:5]] == [1, 2, 3, 4, 5]  # arrival order
    assert isinstance(results[5], Conflict)  # If-Match checked against the writes before it
    assert results[6]["value"] == MASK
    with service.engine.connect() as conn:
        versions = conn.execute(select(config_versions.c.version, config_versions.c.value).where(
            config_versions.c.key == "group.key").order_by(config_versions.c.version)).all()
        revisions = conn.execute(select(config_events.c.revision).order_by(config_events.c.revision)
                                 ).scalars().all()
    assert [tuple(v) for v in versions] == [(i + 1, i) for i in range(5)]
    assert revisions == list(range(revisions[0], revisions[0] + 6)) and seen == revisions
    assert service.snapshot[(CONFIG, "group.key", "")]["value"] == 4
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["revision"] for line in audit] == revisions
    assert "s3cret" not in (tmp_path / "audit.jsonl").read_text()
    # A later single write continues the same sequence.
    assert service.set(CONFIG, "group.key", 9, actor="t")["version"] == 6


def test_a_failed_group_transaction_commits_each_write_on_its_own(service, statements, tmp_path):
    """A database error (not a ConfigError) in one write rolls the group's transaction back; each
    write is then committed alone and gets its own outcome: the others are written, in order."""
    with service.engine.begin() as conn:  # a real store failure, on one key only
        conn.exec_driver_sql("CREATE TRIGGER refuse_boom BEFORE INSERT ON config_events "
                             "WHEN NEW.key = 'group.boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END")

    async def burst():
        return await asyncio.gather(
            service.set_grouped(CONFIG, "group.a", 1, actor="t"),
            service.set_grouped(CONFIG, "group.boom", 2, actor="t"),
            service.set_grouped(CONFIG, "group.a", 3, actor="t", expected_version=1),
            service.set_grouped(CONFIG, "group.a", 4, actor="t", expected_version=1),
            return_exceptions=True)

    statements.clear()
    first, boom, second, stale = asyncio.run(burst())
    # The group's transaction, rolled back, then one per write.
    assert transactions(statements) == 5 and statements.count("ROLLBACK") >= 2
    assert (first["version"], first["value"]) == (1, 1)
    assert "boom refused" in str(boom) and not isinstance(boom, Conflict)
    assert (second["version"], second["value"]) == (2, 3)
    assert isinstance(stale, Conflict)
    with service.engine.connect() as conn:
        rows = conn.execute(select(config_events.c.key, config_events.c.version)
                            .order_by(config_events.c.revision)).all()
    assert [tuple(r) for r in rows] == [("group.a", 1), ("group.a", 2)]  # nothing of the group left
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(line["key"], line["version"]) for line in audit] == [("group.a", 1), ("group.a", 2)]
    assert "group.boom" not in {key for _, key, _ in service.snapshot}
