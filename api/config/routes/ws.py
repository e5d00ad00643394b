"""WebSocket /config/ws/config: every change, live, in revision order (viewer role and up).

Authenticate with ``?token=`` or an ``Authorization: Bearer`` header; ``?since=REV`` first
replays every change after REV. Messages: ``{type, kind, key, tenant, version, revision, value,
item, at}`` with secrets masked; the first message is ``{"type": "hello", "revision": R}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect

from api.config.hub import Hub
from api.config.plane import ControlPlane, control_plane
from api.deps import authenticate
from prioritymax.roles import Role

router = APIRouter(prefix="/config")


@router.websocket("/ws/config")
async def config_ws(websocket: WebSocket, token: str | None = None, since: str | None = None):
    plane = control_plane(websocket.app)
    if not await admit(websocket, plane, token, since):
        return
    await websocket.accept()
    with watched(plane, websocket, token):
        await serve_subscriber(websocket, plane.hub, revision_of(since),
                               lambda: {"type": "hello", "revision": plane.service.revision})


@contextlib.contextmanager
def watched(plane: ControlPlane, websocket: WebSocket, token: str | None):
    """While inside, the socket is closed with 4401 once its token is revoked (the plane checks
    open sockets' tokens every second, and at once after a revocation through this API)."""
    bearer = token or _bearer(websocket)
    if bearer:
        plane.watch_socket(websocket, bearer, lambda: websocket.close(code=4401, reason="token revoked"))
    try:
        yield
    finally:
        plane.unwatch_socket(websocket)


def _bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


def revision_of(since: str | int | None) -> int | None:
    """``?since=`` as a revision: a decimal integer, 0 <= since < 2**63 (bounded above too: a
    revision past SQLite's INTEGER reached the store as an OverflowError). Taken as a string and
    checked here, not by FastAPI: its refusal of ``since=abc`` closed the handshake, which a
    client sees as a bare HTTP 403, indistinguishable from a bad token."""
    if since is None:
        return None
    text = str(since).strip()
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        raise ValueError("since must be an integer, 0 <= since < 2**63")
    return int(text)


async def admit(websocket: WebSocket, plane: ControlPlane, token: str | None, since: str | int | None, *,
                shared_token: str | None = None) -> bool:
    """Whether a WebSocket may subscribe; if not, it is refused (closed with a code) here. The
    caller is a viewer or above by ``?token=`` or an ``Authorization: Bearer`` header, checked
    against ``plane`` (4401 without a valid token, 4403 below viewer), unless ``?token=`` equals
    ``shared_token``; ``since`` is a revision (4422 otherwise)."""
    bearer = _bearer(websocket)
    # Compared as bytes: compare_digest refuses a str that is not ASCII with a TypeError.
    if not (shared_token and token and hmac.compare_digest(token.encode(), shared_token.encode())):
        try:
            authenticate(plane, token or bearer, Role.viewer)
        except HTTPException as error:
            await refuse(websocket, 4401 if error.status_code == 401 else 4403, error.detail)
            return False
    try:
        revision_of(since)
    except ValueError as error:
        await refuse(websocket, 4422, str(error))
        return False
    return True


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
