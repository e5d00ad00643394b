"""Every /config route, called with no token and with each role's token: the seed's role table
(viewer reads, operator writes configs and flags and reloads, admin does secrets, rollback,
rotation, cleanup and backups; health and status are open for probes)."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.integration

LEVEL = {None: 0, "viewer": 1, "operator": 2, "admin": 3}
OPEN, VIEWER, OPERATOR, ADMIN = 0, 1, 2, 3
MINIMUM = {
    ("GET", "/config/health"): OPEN,
    ("GET", "/config/status"): OPEN,
    ("GET", "/config/metrics"): VIEWER,
    ("GET", "/config/snapshot"): VIEWER,
    ("POST", "/config/reload"): OPERATOR,
    ("POST", "/config/rotate_fernet_key"): ADMIN,
    ("POST", "/config/cleanup"): ADMIN,
    ("GET", "/config/backup"): ADMIN,
    ("POST", "/config/backup/restore"): ADMIN,
    ("POST", "/config/backup/upload"): ADMIN,
    ("POST", "/config/verify"): ADMIN,
    ("POST", "/config/secrets/{name}"): ADMIN,
    ("GET", "/config/secrets"): OPERATOR,
    ("DELETE", "/config/secrets/{name}"): ADMIN,
    ("GET", "/config/features"): VIEWER,
    ("PUT", "/config/features/{name}"): OPERATOR,
    ("GET", "/config/features/{name}"): VIEWER,
    ("GET", "/config/features/{name}/evaluate"): VIEWER,
    ("DELETE", "/config/features/{name}"): OPERATOR,
    ("GET", "/config/features/{name}/versions"): VIEWER,
    ("POST", "/config/features/{name}/rollback/{version}"): ADMIN,
    ("POST", "/config"): OPERATOR,
    ("POST", "/config/batch"): OPERATOR,
    ("GET", "/config"): VIEWER,
    ("GET", "/config/{key}"): VIEWER,
    ("GET", "/config/{key}/resolve"): VIEWER,
    ("DELETE", "/config/{key}"): OPERATOR,
    ("GET", "/config/{key}/versions"): VIEWER,
    ("POST", "/config/{key}/rollback/{version}"): ADMIN,
}
BODIES = {
    ("POST", "/config"): {"key": "roles.key", "value": 2},
    ("POST", "/config/batch"): {"items": [{"key": "roles.key", "value": 3}]},
    ("PUT", "/config/features/{name}"): {"enabled": True},
    ("POST", "/config/secrets/{name}"): {"secret_value": "x"},
    ("POST", "/config/backup/restore"): {"format": 1, "items": []},
}


def test_every_route_is_in_the_role_table(server):
    with server.client("viewer") as viewer:
        schema = viewer.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, methods in schema["paths"].items() for method in methods
              if path.startswith("/config")}  # /workflows has its own table (tests/api/workflows)
    assert routes == set(MINIMUM)


@pytest.mark.parametrize("role", [None, "viewer", "operator", "admin"])
def test_each_role_gets_exactly_its_routes(server, role):
    with server.client("admin") as admin:
        admin.post("/config", json={"key": "roles.key", "value": 1})
        admin.put("/config/features/roles_flag", json={"enabled": False})
    # Deletes that will succeed go last, so the routes after them still find the items.
    routes = sorted(MINIMUM.items(), key=lambda route: route[0][0] == "DELETE" and LEVEL[role] >= route[1])
    with server.client(role) as caller:
        for (method, template), minimum in routes:
            path = (template.replace("{key}", "roles.key").replace("{name}", "roles_flag")
                    .replace("{version}", "1"))
            response = caller.request(method, path, json=BODIES.get((method, template)))
            if LEVEL[role] < minimum:
                expected = 401 if role is None else 403
                assert response.status_code == expected, (method, path, response.text)
                assert response.json()["detail"]
            else:
                assert response.status_code not in (401, 403), (method, path, response.text)


def test_websocket_needs_a_token(server):
    """Refused with a close code a browser can read (4401), not a bare HTTP 403 at the handshake."""
    for url in (server.ws_url, f"{server.ws_url}?token=wrong"):
        with pytest.raises(ConnectionClosed) as refused, connect(url) as socket:
            socket.recv(timeout=5)
        assert refused.value.rcvd.code == 4401
    with connect(f"{server.ws_url}?token={server.tokens['viewer']}") as socket:
        assert '"hello"' in socket.recv(timeout=5)
