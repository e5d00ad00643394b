"""Hub.subscribe(since) replays every change after ``since`` up to the source's revision, however
far back, paging through changes_since: the subscriber gets them all, in order, or is marked
overflowed (closed 4408, resumes later) - never a silent gap."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from api.config import hub as hub_module
from api.config.hub import Hub


@dataclass(frozen=True)
class Event:
    revision: int

    def message(self) -> dict:
        return {"revision": self.revision}


class Log:
    """What a Hub needs of its source, over an in-memory log of revisions 1..``size``."""

    def __init__(self, size: int, page: int = 10_000) -> None:
        self.revision = size
        self.page = page
        self.listeners: list = []

    def changes_since(self, revision: int, limit: int = 10_000) -> list[Event]:
        last = min(revision + min(limit, self.page), self.revision)
        return [Event(r) for r in range(revision + 1, last + 1)]

    def catch_up(self) -> list[Event]:
        return []


def queued(subscriber) -> list[int]:
    revisions = []
    while not subscriber.queue.empty():
        revisions.append(json.loads(subscriber.queue.get_nowait())["revision"])
    return revisions


def replay(log: Log, since: int):
    async def subscribe():  # the queue and event belong to a running loop
        return Hub(log).subscribe(since)

    return asyncio.run(subscribe())


def test_a_resume_10_050_back_overflows_rather_than_skipping():
    subscriber = replay(Log(20_000), 20_000 - 10_050)
    assert subscriber.overflowed.is_set()  # more than one queue's worth: closed, to resume


@pytest.mark.parametrize("page", [10_000, 3_000])
def test_a_resume_10_050_back_gets_every_event_when_they_fit(monkeypatch, page):
    monkeypatch.setattr(hub_module, "QUEUE_LIMIT", 20_000)
    since = 20_000 - 10_050
    subscriber = replay(Log(20_000, page), since)
    assert not subscriber.overflowed.is_set()
    assert queued(subscriber) == list(range(since + 1, 20_001))
    assert subscriber.last_revision == 20_000


def test_a_resume_from_now_or_ahead_replays_nothing():
    assert queued(replay(Log(50), 50)) == [] and queued(replay(Log(50), 70)) == []
    assert queued(replay(Log(50), 45)) == [46, 47, 48, 49, 50]
