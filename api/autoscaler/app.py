"""The standalone autoscaler worker app, served by ``pmx autoscaler``."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.autoscaler.routes import attach
from api.autoscaler.worker import AutoscalerWorker


def create_app(worker: AutoscalerWorker, grpc_port: int | None = None,
               grpc_host: str = "127.0.0.1") -> FastAPI:
    """An app that serves ``worker``: started with the app, closed with it. With ``grpc_port``, KEDA's
    external scaler (``api/autoscaler/keda``) is served beside it for the same worker."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        keda = None
        if grpc_port is not None:
            from api.autoscaler.keda.scaler import serve

            keda = serve(worker, grpc_port, grpc_host)
        try:
            yield
        finally:
            if keda is not None:
                from api.autoscaler.keda.scaler import stop

                stop(*keda)
            worker.close()

    app = FastAPI(title="PriorityMax autoscaler worker", lifespan=lifespan,
                  description="Scaling decisions from the champion RL policy, hot-swapped on promotion.")
    attach(app, worker)
    return app
