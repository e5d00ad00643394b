"""Group commit (ConfigService.set_grouped): writes that arrive together share one SQLite
transaction, yet each is its own version, event and audit line, checked in arrival order."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from api.config.keyring import Keyring
from api.config.service import CONFIG, MASK, ConfigService, Conflict
from api.db import config_events, config_versions, engine_for


@pytest.fixture()
def service(tmp_path):
    engine = engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    return ConfigService(engine, Keyring(tmp_path / "fernet.key"), tmp_path / "audit.jsonl")


def test_grouped_writes_are_each_a_version_event_and_audit_line(service, tmp_path):
    seen: list[int] = []
    service.listeners.append(lambda changes: seen.extend(c.revision for c in changes))

    async def burst():
        return await asyncio.gather(
            *(service.set_grouped(CONFIG, "group.key", i, actor="t") for i in range(5)),
            service.set_grouped(CONFIG, "group.key", "stale", actor="t", expected_version=1),
            service.set_grouped(CONFIG, "group.secret", "s3cret", actor="t", is_secret=True),
            return_exceptions=True)

    results = asyncio.run(burst())
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
