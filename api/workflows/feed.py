"""The run event log as a feed for the config plane's WebSocket :class:`~api.config.hub.Hub` and
Redis :class:`~api.config.fanout.Fanout`, so workflow events reuse the same push machinery: the
store's ``seq`` is the revision, ``?since=SEQ`` replays, and events other processes commit (other
replicas, runs launched from Dagster) arrive on a poke or the poll."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestration.workflows.store import WorkflowStore


@dataclass(frozen=True)
class EventChange:
    revision: int
    event: dict[str, Any]

    def message(self) -> dict[str, Any]:
        return self.event


class EventFeed:
    """What :class:`~api.config.hub.Hub` needs of a source: ``listeners``, ``revision``,
    ``changes_since`` and ``catch_up``. Used on the event loop's thread only."""

    def __init__(self, store: WorkflowStore) -> None:
        self.store = store
        self.revision = store.latest_seq()
        self.listeners: list[Callable[[list[EventChange]], None]] = []
        #: Events stored here that came before an earlier seq was seen (another thread's, in flight).
        self.pending: dict[int, dict[str, Any]] = {}

    def changes_since(self, revision: int, limit: int = 10_000) -> list[EventChange]:
        return [EventChange(e["seq"], e) for e in self.store.events_since(revision, limit)]

    def offer(self, event: dict[str, Any]) -> list[EventChange]:
        """An event this process just stored, delivered without reading it back when it is the next
        ``seq``; one that comes early waits in :attr:`pending` for the events before it (or for a
        :meth:`catch_up`, when those were stored by another process)."""
        if event["seq"] <= self.revision:
            return []
        self.pending[event["seq"]] = event
        changes = []
        while self.revision + 1 in self.pending:
            self.revision += 1
            changes.append(EventChange(self.revision, self.pending.pop(self.revision)))
        self._deliver(changes)
        return changes

    def catch_up(self) -> list[EventChange]:
        """Every event stored after :attr:`revision`, by any process, read from the store."""
        changes = self.changes_since(self.revision)
        if changes:
            self.revision = changes[-1].revision
            self.pending = {seq: e for seq, e in self.pending.items() if seq > self.revision}
        self._deliver(changes)
        return changes

    def _deliver(self, changes: list[EventChange]) -> None:
        if changes:
            for listener in self.listeners:
                listener(changes)
