"""/config items: write, list, get, delete, versions, resolve, rollback."""

from __future__ import annotations

from dataclasses import asdict
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
from api.config.schemas import BatchResult, ConfigBatch, ConfigWrite, ItemPublic, Resolved, VersionPublic
from api.config.service import CONFIG, BatchRefused
from api.deps import Admin, Operator, PlaneDep, Viewer
from prioritymax.roles import Role

router = APIRouter(prefix="/config", route_class=TimedRoute, tags=["config"])

Tenant = Annotated[str | None, Query(max_length=80, description="org:<id>; omit for global")]


@router.post("", response_model=ItemPublic, summary="Create or update a config item")
async def write_item(body: ConfigWrite, caller: Operator, if_match: IfMatch = None):
    plane = caller.plane
    if body.is_secret and caller.role < Role.admin:
        raise HTTPException(403, "writing a secret needs the admin role")
    with http_errors():
        item = await plane.service.set_grouped(
            CONFIG, body.key, body.value, tenant=body.tenant, actor=caller.name, comment=body.comment,
            is_secret=body.is_secret, namespace=body.namespace,
            expected_version=expected_version(if_match, body.expected_version))
    plane.metrics.changes.labels(kind=CONFIG, operation="set").inc()
    return item


@router.post("/batch", response_model=BatchResult, summary="Write several config items in one transaction",
             responses={409: {"description": "atomic: items refused (listed in detail.refused); "
                                             "nothing written (also 404, 413 or 422)"}})
async def write_batch(body: ConfigBatch, caller: Operator):
    """Each item becomes its own version, event (consecutive revisions) and audit line, as
    POST /config writes it, checked in order against the state the items before it left. With
    ``atomic`` (the default) one refused item refuses the whole batch: nothing is written and the
    4xx's ``detail.refused`` lists every refused item by index. Without it, refused items are
    skipped and listed in ``refused``. Secrets cannot be batched."""
    plane = caller.plane
    try:
        written, refused = plane.service.set_many(
            CONFIG, [item.model_dump(exclude={"is_secret"}) for item in body.items], actor=caller.name,
            atomic=body.atomic)
    except BatchRefused as error:
        raise HTTPException(error.status, {"message": error.message,
                                           "refused": [asdict(r) for r in error.refused]}) from None
    if written:
        plane.metrics.changes.labels(kind=CONFIG, operation="set").inc(len(written))
    return {"written": written, "refused": refused}


@router.get("", response_model=list[ItemPublic], summary="List config items")
async def list_items(plane: PlaneDep, _: Viewer, prefix: Annotated[str | None, Query(max_length=200)] = None,
               namespace: Annotated[str | None, Query(max_length=200)] = None, tenant: Tenant = None):
    with http_errors():
        return plane.service.list(CONFIG, prefix=prefix, namespace=namespace, tenant=tenant)


@router.get("/{key}", response_model=ItemPublic, summary="One config item of one layer")
async def get_item(key: str, caller: Viewer, tenant: Tenant = None):
    with http_errors():
        return caller.plane.service.get(CONFIG, key, tenant)


@router.get("/{key}/resolve", response_model=Resolved,
            summary="The value a tenant sees (its override, else global) and its layer")
async def resolve_item(key: str, plane: PlaneDep, _: Viewer, tenant: Tenant = None):
    with http_errors():
        return plane.service.resolve(CONFIG, key, tenant)


@router.delete("/{key}", response_model=ItemPublic, summary="Delete a config item (a version too)")
async def delete_item(key: str, plane: PlaneDep, caller: Operator, tenant: Tenant = None,
                if_match: IfMatch = None):
    with http_errors():
        current = plane.service.get(CONFIG, key, tenant)
        if current["is_secret"] and caller.role < Role.admin:
            raise HTTPException(403, "deleting a secret needs the admin role")
        item = plane.service.delete(CONFIG, key, tenant=tenant, actor=caller.name,
                                    expected_version=expected_version(if_match, None))
    plane.metrics.changes.labels(kind=CONFIG, operation="delete").inc()
    return item


@router.get("/{key}/versions", response_model=list[VersionPublic], summary="Every version of an item")
async def item_versions(key: str, plane: PlaneDep, _: Viewer, tenant: Tenant = None):
    with http_errors():
        return plane.service.versions(CONFIG, key, tenant)


@router.post("/{key}/rollback/{version}", response_model=ItemPublic,
             summary="Write an earlier version's value as a new version")
async def rollback_item(key: str, version: VersionPath, plane: PlaneDep, caller: Admin, tenant: Tenant = None,
                        if_match: IfMatch = None):
    return await rollback_and_tell(plane, CONFIG, key, version, tenant, caller.name,
                                   expected_version(if_match, None))
