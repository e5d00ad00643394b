"""Every /workflows route, called with no token and with each role's token: viewer reads (and
validates/previews, which store nothing), operator writes workflows and templates and starts,
resumes and cancels runs, admin cleans up and sets up tracing; health is open for probes. The table must name
exactly the routes the served OpenAPI schema lists, so a new route without a row fails here."""

from __future__ import annotations

import pytest

from tests.api.conftest import start_server, stop_server
from tests.api.workflows.support import chain, create, task, wait_run, ws_outcome

pytestmark = pytest.mark.integration

LEVEL = {None: 0, "viewer": 1, "operator": 2, "admin": 3}
OPEN, VIEWER, OPERATOR, ADMIN = 0, 1, 2, 3
MINIMUM = {
    ("GET", "/workflows/health"): OPEN,
    ("GET", "/workflows/metrics"): VIEWER,
    ("POST", "/workflows/observability/otel/init"): ADMIN,
    ("POST", "/workflows/admin/cleanup"): ADMIN,
    ("POST", "/workflows/templates"): OPERATOR,
    ("GET", "/workflows/templates"): VIEWER,
    ("GET", "/workflows/templates/{name}"): VIEWER,
    ("DELETE", "/workflows/templates/{name}"): OPERATOR,
    ("POST", "/workflows/run/start"): OPERATOR,
    ("GET", "/workflows/runs"): VIEWER,
    ("GET", "/workflows/run/{run_id}"): VIEWER,
    ("GET", "/workflows/run/{run_id}/logs"): VIEWER,
    ("POST", "/workflows/run/{run_id}/cancel"): OPERATOR,
    ("POST", "/workflows/run/{run_id}/resume"): OPERATOR,
    ("GET", "/workflows/trace/replay/{run_id}"): VIEWER,
    ("POST", "/workflows/"): OPERATOR,
    ("GET", "/workflows/"): VIEWER,
    ("POST", "/workflows/validate"): VIEWER,
    ("POST", "/workflows/preview"): VIEWER,
    ("POST", "/workflows/import"): OPERATOR,
    ("GET", "/workflows/{workflow_id}"): VIEWER,
    ("PUT", "/workflows/{workflow_id}"): OPERATOR,
    ("DELETE", "/workflows/{workflow_id}"): OPERATOR,
    ("GET", "/workflows/{workflow_id}/versions"): VIEWER,
    ("GET", "/workflows/{workflow_id}/export"): VIEWER,
    ("GET", "/workflows/{workflow_id}/preview"): VIEWER,
}
SPEC = chain("roles", task("work", "noop"))
TEMPLATE = {"name": "roles_tpl",
            "template": {"executor": "python", "config": {"callable": "workflows.tasks:noop"}}}
BODIES = {
    ("POST", "/workflows/"): SPEC,
    ("POST", "/workflows/validate"): SPEC,
    ("POST", "/workflows/preview"): SPEC,
    ("POST", "/workflows/import"): SPEC,
    ("PUT", "/workflows/{workflow_id}"): SPEC,
    ("POST", "/workflows/templates"): TEMPLATE,
    ("POST", "/workflows/observability/otel/init"): {"service_name": "roles-test"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("wf-roles-home"))
    yield running
    stop_server(running)


def test_every_route_is_in_the_role_table(server):
    with server.client("viewer") as viewer:
        schema = viewer.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, methods in schema["paths"].items() for method in methods
              if path.startswith("/workflows")}
    assert routes == set(MINIMUM), {"missing from the table": routes - set(MINIMUM),
                                    "not served": set(MINIMUM) - routes}


@pytest.mark.parametrize("role", [None, "viewer", "operator", "admin"])
def test_each_role_gets_exactly_its_routes(server, role):
    with server.client("admin") as admin:
        workflow_id = create(admin, SPEC)
        assert admin.post("/workflows/templates", json=TEMPLATE).status_code == 201
        started = admin.post("/workflows/run/start", json={"workflow_id": workflow_id, "input_variables": {}})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        # Each run finishes before the next starts, so cancel and the reads see settled runs.
        wait_run(admin, run_id)
    # Deletes that will succeed go last, so the routes before them still find what they read.
    routes = sorted(MINIMUM.items(), key=lambda route: route[0][0] == "DELETE" and LEVEL[role] >= route[1])
    with server.client(role) as caller:
        for (method, template), minimum in routes:
            path = (template.replace("{workflow_id}", workflow_id).replace("{run_id}", run_id)
                    .replace("{name}", TEMPLATE["name"]))
            body = BODIES.get((method, template))
            if template == "/workflows/run/start":
                body = {"workflow_id": workflow_id, "input_variables": {}}
            response = caller.request(method, path, json=body)
            if LEVEL[role] < minimum:
                expected = 401 if role is None else 403
                assert response.status_code == expected, (role, method, path, response.text)
                assert response.json()["detail"]
            else:
                assert response.status_code not in (401, 403), (role, method, path, response.text)
                assert response.status_code < 500, (role, method, path, response.text)
            if template == "/workflows/run/start" and response.status_code == 202:
                wait_run(caller, response.json()["run_id"])


def test_a_bad_token_is_401(server):
    with server.client(None) as anonymous:
        response = anonymous.get("/workflows/", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401


def test_websocket_needs_a_viewer_token(server):
    url = server.url.replace("http://", "ws://") + "/workflows/ws/workflows"
    for role in ("viewer", "operator", "admin"):
        outcome = ws_outcome(f"{url}?token={server.tokens[role]}")
        assert outcome[0] == "accepted" and outcome[1]["type"] == "hello", (role, outcome)
    # Refused with a close code the client can read (a refused handshake would be a bare HTTP 403).
    assert ws_outcome(url) == 4401
    assert ws_outcome(f"{url}?token=not-a-token") == 4401
