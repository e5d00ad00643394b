"""The config plane's reads on SQLite go through prioritymax.db.reader_for: a deferred BEGIN (one WAL
snapshot per read, no write lock), never the writers' BEGIN IMMEDIATE."""

from __future__ import annotations

from sqlalchemy import event

from api.config.keyring import Keyring
from api.config.service import CONFIG, ConfigService
from api.security import create_token, role_of
from prioritymax.db import engine_for, reader_for
from prioritymax.roles import Role


def test_reads_begin_deferred_and_writes_immediate(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine, reader = engine_for(url), reader_for(url)
    statements: list[str] = []
    for pool in (engine, reader):
        event.listen(pool, "checkout",
                     lambda dbapi, _record, _proxy: dbapi.set_trace_callback(statements.append))
    keyring = Keyring(tmp_path / "fernet.key")
    mine = ConfigService(engine, keyring, tmp_path / "a.jsonl", reader=reader)
    other = ConfigService(engine, keyring, tmp_path / "b.jsonl", reader=reader)  # another replica
    for i in range(3):
        other.set(CONFIG, "readers.key", i, actor="t")
    token = create_token(engine, Role.viewer, "reader-test")

    statements.clear()
    assert [change.version for change in mine.catch_up()] == [1, 2, 3]
    mine.load()
    assert len(mine.versions(CONFIG, "readers.key", None)) == 3
    assert mine.verify()["ok"] and len(mine.export()["items"]) == 1
    assert role_of(reader, token) == (Role.viewer, "reader-test")
    assert "BEGIN" in statements and "BEGIN IMMEDIATE" not in statements

    statements.clear()
    mine.set(CONFIG, "readers.key", 9, actor="t")
    assert statements.count("BEGIN IMMEDIATE") == 1
