"""WebSocket /workflows/ws/workflows: every run event, live, in ``seq`` order.

``?token=`` is checked against WORKFLOWS_WS_AUTH_TOKEN when that is set (the seed's way); a viewer
bearer token (``?token=`` or an ``Authorization`` header) is always accepted. ``?since=SEQ`` first
replays every event after SEQ. The first message is ``{"type": "hello", "seq": S}``.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, WebSocket

from api.config.plane import control_plane
from api.config.routes.ws import refuse, serve_subscriber
from api.deps import authenticate
from api.security import Role
from api.workflows.plane import workflows_plane

router = APIRouter()


@router.websocket("/ws/workflows")
async def workflows_ws(websocket: WebSocket, token: str | None = None, since: int | None = None):
    plane = workflows_plane(websocket.app)
    header = websocket.headers.get("authorization", "")
    bearer = header[7:] if header.lower().startswith("bearer ") else None
    shared = plane.settings.workflows_ws_auth_token
    if not (shared and token and hmac.compare_digest(token, shared.get_secret_value())):
        try:
            authenticate(control_plane(websocket.app), token or bearer, Role.viewer)
        except HTTPException as error:
            await refuse(websocket, 4401 if error.status_code == 401 else 4403, error.detail)
            return
    if since is not None and not 0 <= since < 2**63:
        await refuse(websocket, 4422, "since must be a seq, 0 <= since < 2**63")
        return
    await websocket.accept()
    plane.metrics.ws_connections.inc()
    try:
        await serve_subscriber(websocket, plane.hub, since,
                               lambda: {"type": "hello", "seq": plane.feed.revision})
    finally:
        plane.metrics.ws_connections.dec()
