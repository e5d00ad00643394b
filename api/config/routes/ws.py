"""WebSocket /config/ws/config: every change, live, in revision order (viewer role and up).

Authenticate with ``?token=`` or an ``Authorization: Bearer`` header; ``?since=REV`` first
replays every change after REV. Messages: ``{type, kind, key, tenant, version, revision, value,
item, at}`` with secrets masked; the first message is ``{"type": "hello", "revision": R}``.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect

from api.config.plane import control_plane
from api.deps import authenticate
from api.security import Role

router = APIRouter()


@router.websocket("/ws/config")
async def config_ws(websocket: WebSocket, token: str | None = None, since: int | None = None):
    plane = control_plane(websocket.app)
    header = websocket.headers.get("authorization", "")
    bearer = header[7:] if header.lower().startswith("bearer ") else None
    try:
        authenticate(plane, token or bearer, Role.viewer)
    except HTTPException as error:
        await websocket.close(code=4401 if error.status_code == 401 else 4403, reason=error.detail)
        return
    # Bounded above too: a revision past SQLite's INTEGER reached the store as an OverflowError.
    if since is not None and not 0 <= since < 2**63:
        await websocket.close(code=4422, reason="since must be a revision, 0 <= since < 2**63")
        return
    await websocket.accept()
    subscriber = plane.hub.subscribe(since)
    await websocket.send_json({"type": "hello", "revision": plane.service.revision})

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
        plane.hub.unsubscribe(subscriber)
        for task in (*tasks, overflow):
            task.cancel()
        for task in (*tasks, overflow):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, Exception):
                await task
