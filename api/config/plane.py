"""The control plane of one API process: store, keyring, service, hub, metrics, background loops.

It lives on ``app.state.control_plane``. Our app builds it in its lifespan; an app that only does
the seed's ``app.include_router(config.router)`` gets one on its first request, and the seed's
``start_config_background_loop(app)`` / ``start_prometheus_metrics_loop(app)`` start the loops
(idempotent: a second call does nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from api.config.fanout import Fanout
from api.config.hub import Hub
from api.config.keyring import Keyring
from api.config.metrics import ConfigMetrics
from api.config.service import ConfigService
from api.security import ensure_admin_token, role_of
from api.tasks import BackgroundTasks
from prioritymax.alerts import post_slack_async
from prioritymax.db import engine_for, reader_for
from prioritymax.roles import Role
from prioritymax.settings import Settings, get_settings

log = logging.getLogger("api.config")

VERIFY_EVERY_S = 300.0
METRICS_EVERY_S = 60.0
POLL_EVERY_S = 1.0
#: How long a token's lookup is reused: a revocation made elsewhere (another replica, ``pmx tokens
#: revoke``) is refused here within this time; one made through this replica's API, at once.
TOKEN_CACHE_S = 0.5
#: How often open WebSockets' tokens are checked again (a revoked one is closed with 4401).
SOCKET_CHECK_S = 1.0
#: How often the audit log is checked for committed changes without their line.
AUDIT_REPAIR_EVERY_S = 5.0


class ControlPlane:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings().layout_home()
        self.engine = engine_for(self.settings.db_url)
        #: Reads (the snapshot, the event log, versions, tokens) take no write lock on SQLite.
        self.reader = reader_for(self.settings.db_url)
        key = self.settings.fernet_key.get_secret_value() if self.settings.fernet_key else None
        self.keyring = Keyring(self.settings.fernet_key_path, key)
        self.service = ConfigService(self.engine, self.keyring,
                                     self.settings.logs_dir / "config_audit.jsonl", reader=self.reader)
        self.hub = Hub(self.service)
        self.metrics = ConfigMetrics()
        #: Pokes other replicas through Redis after each commit here (None without REDIS_URL).
        self.fanout = (Fanout(self.hub, self.settings.redis_url, on_news=self.metrics.fanout_pokes.inc)
                       if self.settings.redis_url else None)
        if self.fanout is not None:
            self.service.on_commit.append(self.fanout.poke)
        self.started_at = time.time()
        self.last_verification: dict[str, Any] | None = None
        self.tasks = BackgroundTasks("config")
        self._tokens: dict[str, tuple[float, tuple[Role, str] | None]] = {}
        #: Each open WebSocket's token and how to close it (see :meth:`watch_socket`).
        self._sockets: dict[object, tuple[str, Any]] = {}
        admin = self.settings.admin_token.get_secret_value() if self.settings.admin_token else None
        if ensure_admin_token(self.engine, self.settings.secrets_dir, admin) and not admin:
            log.warning("created the first admin token in %s", self.settings.secrets_dir / "admin.token")
        self.refresh_metrics()

    # ----------------------------------------------------------------------------- tokens
    def lookup_token(self, token: str) -> tuple[Role, str] | None:
        """A token's role and name, cached for :data:`TOKEN_CACHE_S` seconds (a revocation takes
        effect within that time) so a request costs no store read."""
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = role_of(self.reader, token)
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[token] = (now + TOKEN_CACHE_S, found)
        return found

    def forget_token(self, name: str) -> None:
        """Drop every cached lookup of the token named ``name`` (just revoked here)."""
        for token, (_, found) in list(self._tokens.items()):
            if found is not None and found[1] == name:
                self._tokens.pop(token, None)

    def watch_socket(self, socket: object, token: str, close) -> None:
        """Keep checking ``token`` while ``socket`` is open: once it is revoked, ``close()`` (an
        awaitable factory) is called. Unwatched with :meth:`unwatch_socket`."""
        self._sockets[socket] = (token, close)

    def unwatch_socket(self, socket: object) -> None:
        self._sockets.pop(socket, None)

    async def close_revoked_sockets(self) -> int:
        """Close every watched WebSocket whose token is no longer valid; how many were closed.
        Each distinct token is looked up once, off the event loop (a cache miss reads the store)."""
        watched = list(self._sockets.items())
        tokens = {token for _, (token, _) in watched}
        invalid = await asyncio.to_thread(lambda: {t for t in tokens if self.lookup_token(t) is None})
        revoked = [(socket, close) for socket, (token, close) in watched if token in invalid]
        for socket, close in revoked:
            self._sockets.pop(socket, None)
            with contextlib.suppress(Exception):  # already gone: nothing to close
                await close()
        return len(revoked)

    async def _check_sockets_forever(self) -> None:
        while True:
            await asyncio.sleep(SOCKET_CHECK_S)
            await self.close_revoked_sockets()

    # ------------------------------------------------------------------------------ loops
    def start_background(self) -> bool:
        """Verification every 5 minutes, the poll for other replicas' changes and, with
        REDIS_URL, their pokes over Redis; revoked tokens' WebSockets closed within a second.
        False when already running."""
        started = self.tasks.start("verify", self._verify_forever)
        self.tasks.start("sockets", self._check_sockets_forever)
        self.tasks.start("audit", self._repair_audit_forever)
        self.tasks.start("poll", lambda: self.hub.poll_forever(POLL_EVERY_S))
        if self.fanout is not None:
            self.tasks.start("fanout", self.fanout.run)
        return started

    def start_metrics(self) -> bool:
        """Refresh the gauges every 60 s. False when already running."""
        return self.tasks.start("metrics", self._metrics_forever)

    async def stop(self) -> None:
        """Stop the loops and close the audit log (a later write reopens it)."""
        await self.tasks.stop()
        self.service.close()

    async def _repair_audit_forever(self) -> None:
        """At start (a change of a process killed before its audit line) and every few seconds
        (one killed on another replica)."""
        while True:
            try:
                await asyncio.to_thread(self.service.repair_audit)
            except Exception:  # a busy or unreachable store: try again next time
                log.exception("audit repair failed")
            await asyncio.sleep(AUDIT_REPAIR_EVERY_S)

    async def _verify_forever(self) -> None:
        while True:
            await self.verify_once()
            await asyncio.sleep(VERIFY_EVERY_S)

    async def verify_once(self) -> dict[str, Any]:
        report = self.service.verify()
        self.last_verification = report
        if not report["ok"]:
            self.metrics.verification_failures.inc()
            log.error("config verification failed: %s", "; ".join(report["problems"]))
            await self.alert(f"config verification failed: {'; '.join(report['problems'][:5])}")
        return report

    async def _metrics_forever(self) -> None:
        while True:
            self.refresh_metrics()
            await asyncio.sleep(METRICS_EVERY_S)

    def refresh_metrics(self) -> None:
        self.metrics.refresh(self.service.snapshot, self.service.revision, self.hub.connections)

    # ----------------------------------------------------------------------------- alerts
    async def alert(self, text: str) -> None:
        """Post to Slack when SLACK_WEBHOOK_URL is set; failures are logged, never raised."""
        await post_slack_async(text, source="config", settings=self.settings)

    def status(self) -> dict[str, Any]:
        return {"ok": True, "uptime_seconds": int(time.time() - self.started_at),
                "config_items_cached": len(self.service.snapshot),
                "ws_connections": self.hub.connections}


def control_plane(app) -> ControlPlane:
    """The app's control plane, created on first use."""
    plane = getattr(app.state, "control_plane", None)
    if plane is None:
        plane = app.state.control_plane = ControlPlane()
    return plane
