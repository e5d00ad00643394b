"""WebSocket /workflows/ws/workflows: every run event, live, in ``seq`` order.

``?token=`` is checked against WORKFLOWS_WS_AUTH_TOKEN when that is set (the seed's way); a viewer
bearer token (``?token=`` or an ``Authorization`` header) is always accepted. ``?since=SEQ`` first
replays every event after SEQ. The first message is ``{"type": "hello", "seq": S}``.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from api.config.plane import control_plane
from api.config.routes.ws import admit, revision_of, serve_subscriber, watched
from api.workflows.plane import workflows_plane

router = APIRouter()


@router.websocket("/ws/workflows")
async def workflows_ws(websocket: WebSocket, token: str | None = None, since: str | None = None):
    plane, control = workflows_plane(websocket.app), control_plane(websocket.app)
    shared = plane.settings.workflows_ws_auth_token.get_secret_value() \
        if plane.settings.workflows_ws_auth_token else None
    if not await admit(websocket, control, token, since, shared_token=shared):
        return
    await websocket.accept()  # the connections gauge reads plane.hub.connections
    bearer = None if shared is not None and token == shared else token  # the shared one is not revoked
    with watched(control, websocket, bearer):
        await serve_subscriber(websocket, plane.hub, revision_of(since),
                               lambda: {"type": "hello", "seq": plane.feed.revision})
