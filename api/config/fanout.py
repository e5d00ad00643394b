"""Redis pub/sub fan-out between API replicas (on when ``REDIS_URL`` is set).

The event log in the store stays the only truth; Redis carries no change, only a *poke*: the
revision a replica has just committed, published on :data:`CHANNEL`. Every replica subscribes,
and on a poke newer than what it has applied calls :meth:`Hub.pump` on its event loop, which
reads the log from its last revision on and pushes the changes to its WebSocket subscribers in
revision order. So a write on replica A reaches B's subscribers in milliseconds instead of at
B's next poll, and nothing in Redis can reorder, duplicate or lose a change: a poke lost, late or
out of order only makes a pump happen later (the 1 s poll, which keeps running, is the safety
net) or find nothing new.

Failures never reach a writer: :meth:`Fanout.poke` (the service's ``on_commit`` hook) only
records the revision and wakes the publisher task; a publish that fails is logged and dropped.
The subscriber reconnects with jittered exponential backoff and pumps once after each
(re)subscribe, for whatever it missed while it was not listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.config.hub import Hub

log = logging.getLogger("api.config.fanout")

CHANNEL = "prioritymax:config:events"
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
#: The subscriber pings Redis this often when idle, so a dead connection is noticed.
HEALTH_CHECK_S = 5.0
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0


class Fanout:
    def __init__(self, hub: Hub, url: str, channel: str = CHANNEL,
                 on_news: Callable[[], None] | None = None) -> None:
        self.hub = hub
        #: Called for each poke that announces changes not applied here (a metric).
        self.on_news = on_news
        self.url = url
        self.channel = channel
        self.subscribed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._latest = 0  # the newest revision committed here
        self._announced = 0  # the newest revision published
        self._publishing_ok = True

    # ------------------------------------------------------------------ the on_commit hook
    def poke(self, revision: int) -> None:
        """Schedule a poke for ``revision``; callable from any thread, never blocks, never raises.
        Before :meth:`run` starts (or after it stops) it does nothing: polling covers that."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nothing to tell
            loop.call_soon_threadsafe(self._note, revision)

    def _note(self, revision: int) -> None:
        self._latest = max(self._latest, revision)
        if self._wake is not None:
            self._wake.set()

    # ---------------------------------------------------------------------------- the task
    async def run(self) -> None:
        """Publisher and subscriber, until cancelled (ControlPlane.stop)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._publish_forever(), name="fanout-publish")
                group.create_task(self._listen_forever(), name="fanout-listen")
        finally:
            self._loop = None
            self.subscribed = False

    def _client(self) -> aioredis.Redis:
        # No retries inside redis-py: a dropped connection must surface here, so the subscriber
        # can reconnect (and pump) itself, and a publish to a dead Redis fails at once.
        return aioredis.Redis.from_url(
            self.url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=COMMAND_TIMEOUT_S,
            socket_keepalive=True, health_check_interval=HEALTH_CHECK_S, retry=Retry(NoBackoff(), 0),
            decode_responses=True)

    async def _publish_forever(self) -> None:
        """Publish the newest committed revision; pokes that pile up meanwhile become one."""
        assert self._wake is not None
        client = self._client()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                revision = self._latest
                if revision <= self._announced:
                    continue
                try:
                    await client.publish(self.channel, str(revision))
                except Exception as error:  # Redis down or slow: the poll loop covers it
                    if self._publishing_ok:
                        log.warning("cannot publish config revision %d to Redis (%s); other "
                                    "replicas will see it at their next poll", revision, error)
                    self._publishing_ok = False
                    continue
                self._announced = revision
                if not self._publishing_ok:
                    log.warning("publishing config revisions to Redis again")
                    self._publishing_ok = True
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen_forever(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            client = self._client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if not self.subscribed:
                    log.info("subscribed to %s for other replicas' config changes", self.channel)
                self.subscribed = True
                backoff = BACKOFF_MIN_S
                self._pump()  # what was committed while we were not listening
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=HEALTH_CHECK_S)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        revision = int(message["data"])
                    except (TypeError, ValueError):
                        continue
                    # Our own pokes, and pokes for changes a pump already found, are no news.
                    if revision > self.hub.service.revision:
                        if self.on_news is not None:
                            self.on_news()
                        self._pump()
            except Exception as error:
                if self.subscribed:
                    log.warning("lost the Redis subscription (%s); reconnecting, polling meanwhile",
                                error)
                self.subscribed = False
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            # Jitter, so replicas that lost Redis together do not come back in lockstep.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _pump(self) -> None:
        try:
            self.hub.pump()
        except Exception:  # the store is down; the next poke or poll tries again
            log.exception("catching up on config changes failed")
