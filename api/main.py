"""The PriorityMax API: ``uvicorn api.main:app`` or ``pmx api``.

The app is built by :func:`create_app`; its lifespan opens the control plane (store, keyring,
first admin token) and the workflows plane, starts their background loops, and stops them on
shutdown (runs still going are asked to cancel)."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from api import admin, config, mock_payments, workflows
from api.config.plane import control_plane
from api.workflows.plane import workflows_plane


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Stopped in reverse order, each even when the one before it fails to stop.
    async with AsyncExitStack() as stack:
        plane = control_plane(app)
        stack.push_async_callback(plane.stop)
        config.start_config_background_loop(app)
        config.start_prometheus_metrics_loop(app)
        flows = workflows_plane(app)
        stack.push_async_callback(flows.stop)
        # workflows_plane() starts a plane it creates on a running loop, but not one that already
        # exists: created outside a loop, or stopped by this app's previous lifespan. Idempotent.
        flows.start()
        yield


def create_app() -> FastAPI:
    app = FastAPI(title="PriorityMax API", lifespan=lifespan)
    app.include_router(config.router)
    app.include_router(workflows.router)
    app.include_router(admin.router)
    app.include_router(mock_payments.router)  # the example workflow's payment step (a mock)
    return app


app = create_app()
