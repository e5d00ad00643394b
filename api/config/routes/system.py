"""/config operations: health, status, metrics, snapshot, reload, key rotation, cleanup, verification,
backups (download, restore, upload to S3)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from api.config import backups
from api.config.keyring import KeyringError
from api.config.routes.common import TimedRoute, http_errors
from api.config.schemas import BackupDocument, BackupUploaded, Snapshot, Status, Verification
from api.deps import Admin, Operator, PlaneDep, Viewer

router = APIRouter(prefix="/config", route_class=TimedRoute, tags=["config operations"])


@router.get("/health", response_model=Status, summary="Liveness (no token needed)")
async def health(plane: PlaneDep):
    return plane.status()


@router.get("/status", response_model=Status, summary="The seed's status shape (no token needed)")
async def status(plane: PlaneDep):
    return plane.status()


@router.get("/metrics", summary="Prometheus text format", response_class=Response)
async def metrics(plane: PlaneDep, _: Viewer):
    plane.refresh_metrics()
    return Response(plane.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/snapshot", response_model=Snapshot,
            summary="Every current item and flag at one revision (a client's starting point)")
async def snapshot(plane: PlaneDep, _: Viewer):
    service = plane.service
    return {"revision": service.revision, "items": list(service.snapshot.values())}


@router.post("/reload", summary="Reload this replica's snapshot from the store and tell subscribers")
async def reload(plane: PlaneDep, caller: Operator):
    count = plane.service.load()
    plane.service.record_event("system.reload", caller.name, items=count)
    return {"reloaded": True, "config_items_cached": count, "revision": plane.service.revision}


@router.post("/rotate_fernet_key", summary="Re-encrypt every secret under a new key; retire the old")
async def rotate_fernet_key(plane: PlaneDep, caller: Admin):
    with http_errors():
        try:
            result = plane.service.rotate_key(caller.name)
        except KeyringError as error:
            raise HTTPException(409, str(error)) from None
    await plane.alert(f"{caller.name} rotated the Fernet key ({result['secrets']} secrets re-encrypted)")
    return result


@router.post("/cleanup", summary="Prune old versions and events")
async def cleanup(plane: PlaneDep, caller: Admin,
                  keep_versions: Annotated[int, Query(ge=1, le=100_000)] = 50,
                  event_days: Annotated[float, Query(ge=0, le=36_500)] = 30.0):
    result = plane.service.cleanup(caller.name, keep_versions, event_days)
    await plane.alert(f"{caller.name} ran cleanup: {result}")
    return result


@router.post("/verify", response_model=Verification,
             summary="Check now that every secret decrypts and every version exists (Slack on failure)")
async def verify(plane: PlaneDep, _: Admin):
    """The same check the background loop runs every 5 minutes, on demand: after a restore, a
    key change or a manual fix of the store. A failed check is a 200 with ``ok: false`` (the
    verification itself worked) and alerts like the loop's."""
    return await plane.verify_once()


@router.get("/backup", summary="Export every item as JSON (secrets stay encrypted)")
async def export_backup(plane: PlaneDep, caller: Admin):
    document = plane.service.export()
    plane.service.audit("backup.export", caller.name, items=len(document["items"]))
    return document


@router.post("/backup/restore", summary="Write every item of a backup as a new version")
async def restore_backup(plane: PlaneDep, caller: Admin, document: BackupDocument):
    with http_errors():
        return plane.service.restore(document.model_dump(), caller.name)


@router.post("/backup/upload", response_model=BackupUploaded,
             summary="Upload a backup (secrets stay encrypted) to s3://$S3_BUCKET/$S3_PREFIX...")
async def upload_backup(plane: PlaneDep, caller: Admin):
    """400 when S3_BUCKET is unset, 502 with S3's message when the put fails. The put runs in a
    thread so a slow S3 never stalls the event loop (and with it every other request)."""
    document = plane.service.export()
    with http_errors():
        uploaded = await asyncio.to_thread(backups.upload, document, plane.settings.s3_bucket,
                                           plane.settings.s3_prefix)
    plane.service.audit("backup.upload", caller.name, bucket=uploaded.bucket, key=uploaded.key,
                        items=uploaded.items, revision=uploaded.revision, bytes=uploaded.bytes)
    return uploaded.response()
