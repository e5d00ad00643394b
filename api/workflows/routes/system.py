"""Health, Prometheus metrics, tracing setup and retention cleanup."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response

from api.deps import Admin, Viewer
from api.workflows.routes.common import Plane, WorkflowsRoute
from api.workflows.schemas import OtelInit

router = APIRouter(route_class=WorkflowsRoute)


@router.get("/health", summary="Liveness and the subsystem's state (no token needed)")
async def health(plane: Plane):
    return plane.health()


@router.get("/metrics", summary="Prometheus text format", response_class=Response)
async def metrics(plane: Plane, _: Viewer):
    return Response(plane.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.post("/observability/otel/init", summary="Export OpenTelemetry spans per run and node (OTLP)")
async def otel_init(plane: Plane, caller: Admin, body: OtelInit):
    try:
        described = await asyncio.to_thread(plane.tracing.configure, service_name=body.service_name,
                                            endpoint=body.endpoint, jaeger_host=body.jaeger_host,
                                            jaeger_port=body.jaeger_port)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    plane.store.audit({"action": "otel_init", "actor": caller.name, **described})
    return described


@router.post("/admin/cleanup", summary="Delete finished runs older than WORKFLOW_RETENTION_DAYS")
async def cleanup(plane: Plane, caller: Admin):
    result = await asyncio.to_thread(plane.cleanup, None, caller.name)
    return {**result, "actor": caller.name}
