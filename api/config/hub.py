"""Live push: every committed change to every WebSocket subscriber, in revision order.

The event log in the store is the source of truth. :meth:`ConfigService.catch_up` reads the
changes after the last revision applied - after a local write, on a poke from another replica
over Redis pub/sub (REDIS_URL), or on the fallback poll timer - and hands them, in order, to its
listeners; the hub is one, and queues each change to every subscriber. Everything runs on the
event loop's thread, so a subscriber joins between two deliveries, never during one. Each
subscriber has its own bounded queue and sender task, so a slow client cannot stall the others;
one that falls :data:`QUEUE_LIMIT` changes behind is disconnected and resumes with ``?since=REV``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from api.config.service import Change, ConfigService

QUEUE_LIMIT = 10_000


class Subscriber:
    def __init__(self, last_revision: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
        self.last_revision = last_revision
        self.overflowed = asyncio.Event()

    def offer(self, revision: int, text: str) -> None:
        """Queue one change's JSON text unless this subscriber already has that revision."""
        if revision <= self.last_revision:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflowed.set()
            return
        self.last_revision = revision


class Hub:
    def __init__(self, service: ConfigService) -> None:
        self.service = service
        self.subscribers: set[Subscriber] = set()
        service.listeners.append(self._deliver)

    @property
    def connections(self) -> int:
        return len(self.subscribers)

    def _deliver(self, changes: list[Change]) -> None:
        if not self.subscribers:
            return  # nobody to tell: no JSON to encode
        for change in changes:
            text = json.dumps(change.message())  # once per change, not once per subscriber
            for subscriber in self.subscribers:
                subscriber.offer(change.revision, text)

    def pump(self) -> int:
        """Deliver the changes other replicas committed since the last one seen here."""
        return len(self.service.catch_up())

    def subscribe(self, since: int | None) -> Subscriber:
        """A new subscriber; with ``since``, it first gets every change after that revision, up to
        the source's :attr:`revision` (later ones come with catch_up), read a page at a time. One
        that does not fit its queue is :attr:`~Subscriber.overflowed` (closed, to resume later),
        never silently short of some."""
        if since is None:
            subscriber = Subscriber(self.service.revision)
        else:
            subscriber = Subscriber(since)
            target = self.service.revision
            while subscriber.last_revision < target and not subscriber.overflowed.is_set():
                changes = self.service.changes_since(subscriber.last_revision)
                for change in changes:
                    if change.revision > target or subscriber.overflowed.is_set():
                        break
                    subscriber.offer(change.revision, json.dumps(change.message()))
                if not changes or changes[-1].revision > target:
                    break  # the log has nothing more up to the revision applied here
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def poll_forever(self, interval: float) -> None:
        """Without Redis, other replicas' changes are found on a timer."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                self.pump()
