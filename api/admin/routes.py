"""``/admin/*``: the models (list, promote, rollback, archive), token revocation, and training
(launch a Dagster job, its status, logs, cancel). The seed's ``app/api/admin.py``.

Roles: everything needs an operator; forcing a promotion past its gate and archiving need an admin.
A promotion or a rollback goes through ``ml.registry`` (the code path of ``pmx models``, with the
caller's token name as the actor) and then writes the new champion's version to the control plane
(``predictor.model_version`` / ``autoscaler.policy_version``), which every autoscaler worker
follows: that write is what makes it live.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from api import security
from api.admin import training
from api.config.routes.common import TimedRoute, http_errors
from api.config.service import CONFIG
from api.deps import Admin, Operator
from api.security import NAME_LIMIT
from api.workflows.routes.common import Plane
from ml import registry
from prioritymax.roles import Role

router = APIRouter(prefix="/admin", route_class=TimedRoute, tags=["admin"])
log = logging.getLogger("api.admin")

ModelName = Annotated[Literal["predictor", "rl_agent"], Path(description="the registered model")]
JobName = Annotated[Literal[training.TRAINING_JOBS], Path(description="a job of orchestration/jobs.py")]  # type: ignore[valid-type]
RunId = Annotated[str, Path(max_length=64, pattern=r"^[0-9a-fA-F-]+$")]


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictInt = Field(..., ge=1, description="the registry version to make champion")
    force: StrictBool = Field(False, description="promote without a passed gate (admin only)")
    reason: str = Field("", max_length=500, description="why, for the audit log")


class Archive(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictInt = Field(..., ge=1)


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_config: dict[str, Any] = Field(default_factory=dict,
                                       description="Dagster run config (ops, resources)")


def registry_errors(error: registry.RegistryError) -> HTTPException:
    status = 404 if isinstance(error, registry.UnknownVersion) else \
        403 if isinstance(error, registry.NotAllowed) else \
        422 if isinstance(error, registry.Unservable) else 409
    return HTTPException(status, str(error))


async def publish(caller, name: str, version: str, comment: str) -> dict[str, Any]:
    """Write the champion's version to the control plane: live on every worker that follows it."""
    key = registry.CONFIG_KEYS[name]
    plane = caller.plane
    with http_errors():
        item = await plane.service.set_grouped(CONFIG, key, int(version), actor=caller.name, comment=comment)
    plane.metrics.changes.labels(kind=CONFIG, operation="set").inc()
    return {"key": key, "value": int(version), "config_version": item["version"]}


# ----------------------------------------------------------------------------------- models
@router.get("/models", summary="Registered versions with aliases, metrics and gate results")
async def list_models(caller: Operator, name: Annotated[Literal["predictor", "rl_agent"] | None,
                                                         Query()] = None) -> list[dict[str, Any]]:
    names = (name,) if name else registry.MODEL_NAMES
    return await asyncio.to_thread(registry.list_versions, names)


@router.post("/models/{name}/promote", summary="Make a version the champion and publish it live",
             responses={403: {"description": "force without the admin role"},
                        404: {"description": "no such version"},
                        409: {"description": "its gate has not passed, or it already is the champion"},
                        422: {"description": "its checkpoint does not load as a worker would load it "
                                             "(the alias does not move, even with force)"}})
async def promote(name: ModelName, body: Promotion, caller: Operator) -> dict[str, Any]:
    if body.force and caller.role < Role.admin:
        raise HTTPException(403, "promoting past the gate (force) needs the admin role")
    try:
        record = await asyncio.to_thread(registry.promote, name, body.version, actor=caller.name,
                                         role=caller.role.name, force=body.force,
                                         reason=body.reason or "admin API")
    except registry.RegistryError as error:
        raise registry_errors(error) from None
    comment = f"{name} version {record['version']} promoted by {caller.name} (admin API)"
    return {**record, "published": await publish(caller, name, record["version"], comment)}


@router.post("/models/{name}/rollback", summary="Give champion back to the previous one and publish it",
             responses={409: {"description": "no champion, or no previous champion"}})
async def rollback(name: ModelName, caller: Operator) -> dict[str, Any]:
    try:
        record = await asyncio.to_thread(registry.rollback, name, actor=caller.name, role=caller.role.name)
    except registry.RegistryError as error:
        raise registry_errors(error) from None
    comment = f"{name} rolled back to version {record['version']} by {caller.name} (admin API)"
    return {**record, "published": await publish(caller, name, record["version"], comment)}


@router.post("/models/{name}/archive", summary="A tarball of a version's checkpoint and metadata")
async def archive(name: ModelName, body: Archive, caller: Admin) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(registry.archive, name, version=body.version, actor=caller.name)
    except registry.RegistryError as error:
        raise registry_errors(error) from None


# ----------------------------------------------------------------------------------- tokens
@router.delete("/tokens/{name}", summary="Revoke the token(s) of that name, refused from the next request",
               responses={404: {"description": "no token of that name"}})
async def revoke_token(name: Annotated[str, Path(min_length=1, max_length=NAME_LIMIT)],
                       caller: Admin) -> dict[str, Any]:
    """What ``pmx tokens revoke`` does, plus: this replica forgets the token at once and closes
    its WebSockets with 4401; other replicas refuse it within half a second (their token cache) and
    close its WebSockets at their next check (every second)."""
    plane = caller.plane
    count = await asyncio.to_thread(security.revoke_token, plane.engine, name)
    if not count:
        raise HTTPException(404, f"no token named {name!r}")
    plane.forget_token(name)
    closed = await plane.close_revoked_sockets()
    log.warning("token %r revoked by %s through the admin API", name, caller.name)
    return {"name": name, "revoked": count, "websockets_closed": closed}


# --------------------------------------------------------------------------------- training
# The instance is the workflows plane's: one Dagster instance per API process.
@router.get("/training/jobs", summary="The jobs the admin API launches")
async def training_jobs(caller: Operator) -> list[str]:
    return list(training.TRAINING_JOBS)


@router.post("/training/{job}", status_code=202, summary="Launch a Dagster job through the run queue",
             responses={422: {"description": "Dagster refused the run config"},
                        502: {"description": "Dagster refused the launch for another reason"},
                        503: {"description": "Dagster's webserver does not answer"}})
async def launch(job: JobName, body: Launch, caller: Operator, plane: Plane) -> dict[str, Any]:
    url = plane.settings.dagster_url
    try:
        run_id = await asyncio.to_thread(training.launch, url, job, body.run_config, caller.name)
    except training.DagsterUnavailable as error:
        raise HTTPException(503, str(error)) from None
    except training.LaunchRefused as error:
        raise HTTPException(422 if error.config else 502, str(error)) from None
    summary = await asyncio.to_thread(training.run_summary, plane.runner.instance, run_id, url)
    return summary or {"run_id": run_id, "job_name": job}


@router.get("/training/runs", summary="The latest runs of the training jobs, newest first")
async def training_runs(caller: Operator, plane: Plane,
                        limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[dict[str, Any]]:
    return await asyncio.to_thread(training.recent_runs, plane.runner.instance, plane.settings.dagster_url,
                                   limit)


async def _run_or_404(plane, run_id: str) -> dict[str, Any]:
    found = await asyncio.to_thread(training.run_summary, plane.runner.instance, run_id,
                                    plane.settings.dagster_url)
    if found is None:
        raise HTTPException(404, f"no Dagster run {run_id}")
    return found


@router.get("/training/runs/{run_id}", summary="A run's status (Dagster's)")
async def training_run(run_id: RunId, caller: Operator, plane: Plane) -> dict[str, Any]:
    return await _run_or_404(plane, run_id)


@router.get("/training/runs/{run_id}/logs", summary="A run's event log from index `after` on")
async def training_logs(run_id: RunId, caller: Operator, plane: Plane,
                        after: Annotated[int, Query(ge=0)] = 0,
                        limit: Annotated[int, Query(ge=1, le=5000)] = 1000) -> dict[str, Any]:
    run = await _run_or_404(plane, run_id)
    entries = await asyncio.to_thread(training.run_logs, plane.runner.instance, run_id, after, limit)
    return {"run_id": run_id, "status": run["status"], "entries": entries,
            "next": after + len(entries)}


@router.post("/training/runs/{run_id}/cancel", summary="Cancel a queued or running run",
             responses={409: {"description": "the run has finished"}})
async def training_cancel(run_id: RunId, caller: Operator, plane: Plane) -> dict[str, Any]:
    run = await _run_or_404(plane, run_id)
    if run["finished"]:
        raise HTTPException(409, f"run {run_id} has finished ({run['status']})")
    cancelled = await asyncio.to_thread(training.cancel, plane.runner.instance, run_id)
    return {**await _run_or_404(plane, run_id), "cancel_requested": cancelled}
