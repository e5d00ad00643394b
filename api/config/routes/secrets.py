"""/config/secrets: write (admin), list masked (operator), delete (admin). No route ever returns
a secret's plaintext; services that need one read it through the keyring in-process."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.config.routes.common import IfMatch, TimedRoute, expected_version, http_errors
from api.config.schemas import ItemPublic, SecretWrite
from api.config.service import CONFIG
from api.deps import Admin, Operator, PlaneDep

router = APIRouter(prefix="/config/secrets", route_class=TimedRoute, tags=["secrets"])

Tenant = Annotated[str | None, Query(max_length=80)]


@router.post("/{name}", response_model=ItemPublic, summary="Create or replace a secret (stored encrypted)")
async def write_secret(name: str, body: SecretWrite, plane: PlaneDep, caller: Admin,
                       if_match: IfMatch = None):
    with http_errors():
        item = plane.service.set(CONFIG, name, body.secret_value, tenant=body.tenant,
                                 actor=caller.name, comment=body.comment, is_secret=True,
                                 expected_version=expected_version(if_match, body.expected_version))
    plane.metrics.changes.labels(kind="secret", operation="set").inc()
    return item


@router.get("", response_model=list[ItemPublic], summary="Secrets, values masked")
async def list_secrets(plane: PlaneDep, _: Operator, tenant: Tenant = None):
    with http_errors():
        return plane.service.list(CONFIG, tenant=tenant, secrets=True)


@router.delete("/{name}", response_model=ItemPublic, summary="Delete a secret")
async def delete_secret(name: str, plane: PlaneDep, caller: Admin, tenant: Tenant = None,
                        if_match: IfMatch = None):
    with http_errors():
        if not plane.service.get(CONFIG, name, tenant)["is_secret"]:
            raise HTTPException(404, f"{name!r} is not a secret")
        item = plane.service.delete(CONFIG, name, tenant=tenant, actor=caller.name,
                                    expected_version=expected_version(if_match, None))
    plane.metrics.changes.labels(kind="secret", operation="delete").inc()
    return item
