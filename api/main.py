"""The PriorityMax API: ``uvicorn api.main:app`` or ``pmx api``.

The app is built by :func:`create_app`; its lifespan opens the control plane (store, keyring,
first admin token) and the workflows plane, starts their background loops, and stops them on
shutdown (runs still going are asked to cancel)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import config, workflows
from api.config.plane import control_plane
from api.workflows.plane import workflows_plane


@asynccontextmanager
async def lifespan(app: FastAPI):
    plane = control_plane(app)
    config.start_config_background_loop(app)
    config.start_prometheus_metrics_loop(app)
    flows = workflows_plane(app)
    flows.start()
    try:
        yield
    finally:
        await flows.stop()
        await plane.stop()


def create_app() -> FastAPI:
    app = FastAPI(title="PriorityMax API", lifespan=lifespan)
    app.include_router(config.router)
    app.include_router(workflows.router)
    return app


app = create_app()
