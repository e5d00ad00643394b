"""api.config.routes.ws.admit, the WebSocket admission both planes' routes share: a viewer token
(query or header) or the shared token, and a since in range; refusals are close codes."""

from __future__ import annotations

import warnings

import pytest
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from api.config.plane import ControlPlane
from api.config.routes.ws import admit
from api.security import create_token
from prioritymax.roles import Role
from prioritymax.settings import Settings

with warnings.catch_warnings():  # it prefers the httpx2 package to plain httpx (STACK.md)
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ADMIN = "pmx_ws_admission_admin"
SHARED = "shared-ws-token"


@pytest.fixture()
def client(tmp_path):
    settings = Settings(PRIORITYMAX_HOME=str(tmp_path), PRIORITYMAX_ADMIN_TOKEN=ADMIN).layout_home()
    plane = ControlPlane(settings)
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, token: str | None = None, since: int | None = None):
        if await admit(websocket, plane, token, since, shared_token=SHARED):
            await websocket.accept()
            await websocket.send_json({"admitted": True})
            await websocket.close()

    with TestClient(app) as test_client:
        test_client.plane = plane
        yield test_client
    plane.service.close()


def close_code(client: TestClient, path: str, headers: dict | None = None) -> int | None:
    """The close code a connection gets, or None when it was admitted."""
    with client.websocket_connect(path, headers=headers or {}) as socket:
        try:
            assert socket.receive_json() == {"admitted": True}
        except WebSocketDisconnect as closed:
            return closed.code
    return None


def test_tokens_the_shared_token_and_since(client):
    viewer = create_token(client.plane.engine, Role.viewer, "ws-viewer")
    assert close_code(client, f"/ws?token={viewer}") is None
    assert close_code(client, "/ws", {"Authorization": f"Bearer {viewer}"}) is None
    assert close_code(client, f"/ws?token={SHARED}&since=0") is None
    assert close_code(client, "/ws") == 4401
    assert close_code(client, "/ws?token=wrong") == 4401
    assert close_code(client, f"/ws?token={viewer}&since=-1") == 4422
    assert close_code(client, f"/ws?token={SHARED}&since={2**63}") == 4422


def test_a_non_ascii_token_is_refused_not_a_crash(client):
    # hmac.compare_digest raised TypeError on a str that is not ASCII.
    assert close_code(client, "/ws?token=%C3%A9t%C3%A9") == 4401
