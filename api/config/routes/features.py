"""/config/features: boolean flags, globally or per tenant, with sticky percentage rollouts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.config.routes.common import (
    IfMatch,
    TimedRoute,
    VersionPath,
    expected_version,
    http_errors,
    rollback_and_tell,
)
from api.config.schemas import FlagEvaluation, FlagWrite, ItemPublic, VersionPublic
from api.config.service import FLAG
from api.deps import Admin, Operator, PlaneDep, Viewer

router = APIRouter(prefix="/config/features", route_class=TimedRoute, tags=["features"])

Tenant = Annotated[str | None, Query(max_length=80, description="org:<id>; omit for global")]


@router.get("", response_model=list[ItemPublic], summary="List flags")
async def list_flags(plane: PlaneDep, _: Viewer, tenant: Tenant = None):
    with http_errors():
        return plane.service.list(FLAG, tenant=tenant)


@router.put("/{name}", response_model=ItemPublic, summary="Set a flag (globally or for a tenant)")
async def set_flag(name: str, body: FlagWrite, plane: PlaneDep, caller: Operator,
                   if_match: IfMatch = None):
    if body.name is not None and body.name != name:
        raise HTTPException(422, f"body name {body.name!r} differs from the path's {name!r}")
    value = {"enabled": body.enabled, "description": body.description,
             "rollout_percent": body.rollout_percent, "context_key": body.context_key}
    with http_errors():
        item = plane.service.set(FLAG, name, value, tenant=body.tenant, actor=caller.name,
                                 comment=body.description or None, namespace="features",
                                 expected_version=expected_version(if_match, body.expected_version))
    plane.metrics.changes.labels(kind=FLAG, operation="set").inc()
    return item


@router.get("/{name}", response_model=ItemPublic, summary="One flag of one layer")
async def get_flag(name: str, plane: PlaneDep, _: Viewer, tenant: Tenant = None):
    with http_errors():
        return plane.service.get(FLAG, name, tenant)


@router.get("/{name}/evaluate", response_model=FlagEvaluation,
            summary="Evaluate a flag for a tenant and context (tenant -> global)")
async def evaluate_flag(name: str, plane: PlaneDep, _: Viewer, tenant: Tenant = None,
                        targeting_key: Annotated[str | None, Query(max_length=200)] = None,
                        context_key: Annotated[str | None, Query(max_length=100)] = None,
                        context_value: Annotated[str | None, Query(max_length=200)] = None):
    context = {"targetingKey": targeting_key} if targeting_key is not None else {}
    if context_key is not None and context_value is not None:
        context[context_key] = context_value
    with http_errors():
        return plane.service.evaluate_flag(name, tenant, context).to_dict()


@router.delete("/{name}", response_model=ItemPublic, summary="Delete a flag of one layer")
async def delete_flag(name: str, plane: PlaneDep, caller: Operator, tenant: Tenant = None,
                      if_match: IfMatch = None):
    with http_errors():
        item = plane.service.delete(FLAG, name, tenant=tenant, actor=caller.name,
                                    expected_version=expected_version(if_match, None))
    plane.metrics.changes.labels(kind=FLAG, operation="delete").inc()
    return item


@router.get("/{name}/versions", response_model=list[VersionPublic], summary="Every version of a flag")
async def flag_versions(name: str, plane: PlaneDep, _: Viewer, tenant: Tenant = None):
    with http_errors():
        return plane.service.versions(FLAG, name, tenant)


@router.post("/{name}/rollback/{version}", response_model=ItemPublic, summary="Roll a flag back")
async def rollback_flag(name: str, version: VersionPath, plane: PlaneDep, caller: Admin,
                        tenant: Tenant = None):
    return await rollback_and_tell(plane, FLAG, name, version, tenant, caller.name)
