"""WebSocket /config/ws/config: every change, live, in revision order (viewer role and up).

Authenticate with ``?token=`` or an ``Authorization: Bearer`` header; ``?since=REV`` first
replays every change after REV. Messages: ``{type, kind, key, tenant, version, revision, value,
item, at}`` with secrets masked; the first message is ``{"type": "hello", "revision": R}``.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect

from api.config.hub import Hub
from api.config.plane import control_plane
from api.deps import authenticate
from api.security import Role

router = APIRouter(prefix="/config")


@router.websocket("/ws/config")
async def config_ws(websocket: WebSocket, token: str | None = None, since: int | None = None):
    plane = control_plane(websocket.app)
    header = websocket.headers.get("authorization", "")
    bearer = header[7:] if header.lower().startswith("bearer ") else None
    try:
        authenticate(plane, token or bearer, Role.viewer)
    except HTTPException as error:
        await refuse(websocket, 4401 if error.status_code == 401 else 4403, error.detail)
        return
    # Bounded above too: a revision past SQLite's INTEGER reached the store as an OverflowError.
    if since is not None and not 0 <= since < 2**63:
        await refuse(websocket, 4422, "since must be a revision, 0 <= since < 2**63")
        return
    await websocket.accept()
    await serve_subscriber(websocket, plane.hub, since,
                           lambda: {"type": "hello", "revision": plane.service.revision})


async def refuse(websocket: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code``: a close before the handshake completes reaches the client
    as a bare HTTP 403, and a browser's WebSocket cannot read that, only a close code and reason."""
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


async def serve_subscriber(websocket: WebSocket, hub: Hub, since: int | None, hello) -> None:
    """Push a hub's changes to one accepted WebSocket until either side goes away: ``hello()``
    first, then every change after ``since`` (or from now), in order. A subscriber that falls too
    far behind is closed with 4408 and resumes with ``?since=``. The workflows WS uses it too."""
    subscriber = hub.subscribe(since)
    await websocket.send_json(hello())

    async def drain_client() -> None:  # notices a client that went away
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()

    async def send_changes() -> None:
        while True:
            await websocket.send_text(await subscriber.queue.get())

    tasks = {asyncio.create_task(drain_client()), asyncio.create_task(send_changes())}
    overflow = asyncio.create_task(subscriber.overflowed.wait())
    try:
        done, _ = await asyncio.wait({*tasks, overflow}, return_when=asyncio.FIRST_COMPLETED)
        if overflow in done:
            await websocket.close(code=4408, reason="too far behind; reconnect with ?since=")
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.unsubscribe(subscriber)
        for task in (*tasks, overflow):
            task.cancel()
        for task in (*tasks, overflow):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, Exception):
                await task
