"""The standalone autoscaler worker app, served by ``pmx autoscaler``."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.autoscaler.routes import attach
from api.autoscaler.worker import AutoscalerWorker


def create_app(worker: AutoscalerWorker) -> FastAPI:
    """An app that serves ``worker``: started with the app, closed with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        try:
            yield
        finally:
            worker.close()

    app = FastAPI(title="PriorityMax autoscaler worker", lifespan=lifespan,
                  description="Scaling decisions from the champion RL policy, hot-swapped on promotion.")
    attach(app, worker)
    return app
