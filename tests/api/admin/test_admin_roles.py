"""Every /admin route, called with no token and with each role's token, on an empty data home (no
registered model, no Dagster webserver): the role table holds, and an allowed caller gets the
route's own answer (404 no such version, 409 nothing to roll back, 503 Dagster down), never 401/403."""

from __future__ import annotations

import pytest

from tests.api.test_roles import LEVEL

pytestmark = pytest.mark.integration

OPERATOR, ADMIN = 2, 3
MINIMUM = {
    ("GET", "/admin/models"): OPERATOR,
    ("POST", "/admin/models/{name}/promote"): OPERATOR,
    ("POST", "/admin/models/{name}/rollback"): OPERATOR,
    ("POST", "/admin/models/{name}/archive"): ADMIN,
    ("DELETE", "/admin/tokens/{name}"): ADMIN,
    ("GET", "/admin/training/jobs"): OPERATOR,
    ("POST", "/admin/training/{job}"): OPERATOR,
    ("GET", "/admin/training/runs"): OPERATOR,
    ("GET", "/admin/training/runs/{run_id}"): OPERATOR,
    ("GET", "/admin/training/runs/{run_id}/logs"): OPERATOR,
    ("POST", "/admin/training/runs/{run_id}/cancel"): OPERATOR,
}
BODIES = {
    ("POST", "/admin/models/{name}/promote"): {"version": 7},
    ("POST", "/admin/models/{name}/archive"): {"version": 7},
    ("POST", "/admin/training/{job}"): {},
}
EXPECTED = {
    ("GET", "/admin/models"): 200,
    ("POST", "/admin/models/{name}/promote"): 404,
    ("POST", "/admin/models/{name}/rollback"): 409,
    ("POST", "/admin/models/{name}/archive"): 404,
    ("DELETE", "/admin/tokens/{name}"): 404,  # no token named rl_agent
    ("GET", "/admin/training/jobs"): 200,
    ("POST", "/admin/training/{job}"): 503,
    ("GET", "/admin/training/runs"): 200,
    ("GET", "/admin/training/runs/{run_id}"): 404,
    ("GET", "/admin/training/runs/{run_id}/logs"): 404,
    ("POST", "/admin/training/runs/{run_id}/cancel"): 404,
}


def test_every_admin_route_is_in_the_role_table(server):
    with server.client("viewer") as viewer:
        schema = viewer.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, methods in schema["paths"].items() for method in methods
              if path.startswith("/admin")}
    assert routes == set(MINIMUM)


@pytest.mark.parametrize("role", [None, "viewer", "operator", "admin"])
def test_each_role_gets_exactly_its_admin_routes(server, role):
    with server.client(role) as caller:
        for (method, template), minimum in MINIMUM.items():
            path = (template.replace("{name}", "rl_agent").replace("{job}", "train_rl_job")
                    .replace("{run_id}", "0123abcd"))
            response = caller.request(method, path, json=BODIES.get((method, template)), timeout=90)
            if LEVEL[role] < minimum:
                assert response.status_code == (401 if role is None else 403), (method, path, response.text)
            else:
                assert response.status_code == EXPECTED[(method, template)], (method, path, response.text)
            assert response.status_code == 200 or response.json()["detail"]


def test_forcing_a_promotion_past_the_gate_needs_an_admin(server):
    with server.client("operator") as operator:
        refused = operator.post("/admin/models/rl_agent/promote", json={"version": 1, "force": True})
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]


def test_bad_admin_input_is_a_422(server):
    with server.client("admin") as admin:
        assert admin.post("/admin/models/nope/promote", json={"version": 1}).status_code == 422
        assert admin.post("/admin/models/rl_agent/promote", json={"version": 0}).status_code == 422
        assert admin.post("/admin/models/rl_agent/promote", json={"version": "x"}).status_code == 422
        assert admin.post("/admin/models/rl_agent/promote", json={"version": "3"}).status_code == 422
        assert admin.post("/admin/models/rl_agent/promote",
                          json={"version": 3, "force": "yes"}).status_code == 422
        assert admin.post("/admin/training/not_a_job", json={}).status_code == 422
        assert admin.get("/admin/training/runs/not-hex!").status_code == 422
