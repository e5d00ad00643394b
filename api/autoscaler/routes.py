"""``/autoscaler/*``: decisions, health, models, recent decisions and metrics of one worker.

Mount it in any FastAPI app with :func:`attach`; the app's lifespan starts and closes the worker
(``api/autoscaler/app.py`` is the standalone one that ``pmx autoscaler`` serves). With
PRIORITYMAX_AUTOSCALER_TOKEN set, every route but ``/health`` asks for it as a bearer token.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.autoscaler.decide import ReadingError
from api.autoscaler.schemas import Decision, Health, ModelState, Reading
from api.autoscaler.worker import AutoscalerWorker
from api.config.routes.common import StrictJSONRequest

bearer = HTTPBearer(auto_error=False, description="PRIORITYMAX_AUTOSCALER_TOKEN, when the worker has one")


def get_worker(request: Request) -> AutoscalerWorker:
    worker = getattr(request.app.state, "autoscaler", None)
    if worker is None:
        raise HTTPException(503, "no autoscaler worker is attached to this app")
    return worker


WorkerDep = Annotated[AutoscalerWorker, Depends(get_worker)]


def check_token(worker: WorkerDep,
                credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    expected = worker.settings.autoscaler_token
    if expected is None:
        return
    given = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(given, expected.get_secret_value().encode()):
        raise HTTPException(401, "a bearer token (PRIORITYMAX_AUTOSCALER_TOKEN) is required",
                            headers={"WWW-Authenticate": "Bearer"})


class StrictRoute(APIRoute):
    """Bodies parsed as :class:`StrictJSONRequest`: a NaN is a 422, not a 500 when echoed."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


router = APIRouter(prefix="/autoscaler", tags=["autoscaler"], route_class=StrictRoute)
guarded = APIRouter(dependencies=[Depends(check_token)], route_class=StrictRoute)


@guarded.post("/decide", response_model=Decision, summary="A scaling decision for the pool's queue metrics",
              responses={422: {"description": "a missing, non-numeric or negative metric, or queue "
                                              "classes that are not the policy's"}})
async def decide(reading: Reading, worker: WorkerDep) -> Response:
    # The load forecast (~50 ms of DuckDB and LightGBM) runs on a thread, so other requests are
    # not held up; the decision itself stays on the event loop: ~0.1 ms of numpy, less than a
    # thread hop (KEDA's gRPC threads decide too: the worker's lock keeps its state whole). The
    # model is serialized once here; returned as a model, FastAPI would validate it again first.
    forecast = await run_in_threadpool(worker.forecast, reading)
    try:
        decision = worker.decide(reading, forecast)
    except ReadingError as error:
        raise HTTPException(422, str(error)) from None
    return Response(decision.model_dump_json(), media_type="application/json")


@guarded.get("/models", response_model=list[ModelState], summary="The model versions in use")
async def models(worker: WorkerDep) -> list[dict[str, Any]]:
    return worker.health()["models"]


@guarded.get("/decisions", summary="The latest decisions, newest last")
async def decisions(worker: WorkerDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[dict]:
    return worker.recent_decisions(limit)


@guarded.get("/swaps", summary="The latest model swaps, newest last")
async def swaps(worker: WorkerDep) -> list[dict]:
    return list(worker.swaps)


@guarded.get("/metrics", summary="Prometheus metrics of this worker",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(worker: WorkerDep) -> Response:
    return Response(worker.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/health", response_model=Health, summary="Whether the worker serves, and what with")
async def health(worker: WorkerDep) -> dict[str, Any]:
    return worker.health()


router.include_router(guarded)


def attach(app: FastAPI, worker: AutoscalerWorker) -> None:
    """Serve ``worker`` under ``/autoscaler`` in ``app``. Start it (:meth:`AutoscalerWorker.start`)
    and close it in the app's lifespan."""
    app.state.autoscaler = worker
    app.include_router(router)
