"""Runs: start, resume, read, logs (download or stream), cancel, list, and the trace replay for a UI."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response, StreamingResponse

from api.deps import Operator, Viewer
from api.workflows.routes.common import Plane, WorkflowsRoute, found
from api.workflows.schemas import RunStart
from orchestration.workflows.runner import NotResumable
from orchestration.workflows.store import FINISHED, INTERRUPTED, RUN_END

router = APIRouter(route_class=WorkflowsRoute)
STREAM_POLL_S = 0.2
STATUS_PATTERN = "^(PENDING|RUNNING|COMPLETED|FAILED|CANCELLED)$"


@router.post("/run/start", status_code=202,
             summary="Start a run of a workflow version (PENDING until a slot frees)")
async def start_run(plane: Plane, caller: Operator, body: RunStart):
    try:
        return await asyncio.to_thread(plane.runner.start, body.workflow_id, body.version,
                                       body.input_variables, caller.name)
    except KeyError as error:  # unknown workflow or version
        raise HTTPException(404, error.args[0]) from None
    except ValueError as error:  # a template or subworkflow it references was deleted since
        raise HTTPException(422, str(error)) from None


@router.post("/run/{run_id}/resume", status_code=202,
             summary="Re-execute a FAILED/CANCELLED run from its first unfinished node, as a new run")
async def resume_run(plane: Plane, caller: Operator, run_id: str):
    """Like Dagster's re-execution from failure: a new run (``parent_run_id``, ``root_run_id``) that
    reuses the outputs of the nodes the run completed and executes the rest."""
    found(plane.store.run(run_id), f"run {run_id}")
    try:
        run = await asyncio.to_thread(plane.runner.resume, run_id, caller.name)
    except NotResumable as error:
        raise HTTPException(409, str(error)) from None
    except KeyError as error:  # its workflow version was deleted since
        raise HTTPException(409, f"run {run_id} cannot be resumed: {error.args[0]}") from None
    except ValueError as error:  # a template or subworkflow it references was deleted since
        raise HTTPException(422, str(error)) from None
    plane.store.audit({"action": "run_resumed", "run_id": run["run_id"], "parent_run_id": run_id,
                       "actor": caller.name})
    return run


@router.get("/runs", summary="Runs, newest first")
async def list_runs(plane: Plane, _: Viewer, workflow_id: Annotated[str | None, Query(max_length=64)] = None,
                    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    return {"runs": plane.store.runs(workflow_id, status, limit)}


@router.get("/run/{run_id}", summary="A run: status, variables, per-node results and states")
async def get_run(plane: Plane, _: Viewer, run_id: str):
    run = found(plane.store.run(run_id), f"run {run_id}")
    nodes: dict[str, dict] = {}
    results: dict[str, object] = {}
    for event in plane.store.run_events(run_id):
        if event["type"] == "node_end" and "result" in event:
            results[event["node_id"]] = event["result"]
        node = event.get("node_id")
        if event["type"] == "node_start":
            nodes[node] = {"node_id": node, "node_type": event.get("node_type"), "status": "RUNNING",
                           "attempts": event["attempt"], "started_at": event["at"]}
        elif event["type"] == "node_end" and node in nodes:
            nodes[node].update(status=event["status"], finished_at=event["at"],
                               duration_ms=event.get("duration_ms"), error=event.get("error"))
    # From the events, which have them while the run goes on (the record gets them at its end).
    return {**run, "results": results, "nodes": list(nodes.values())}


@router.get("/run/{run_id}/logs",
            summary="The run's JSONL log: a download, or ?stream=true to follow it live")
async def run_logs(plane: Plane, _: Viewer, run_id: str, stream: bool = False):
    found(plane.store.run(run_id), f"run {run_id}")
    path = plane.store.run_log_path(run_id)
    if not stream:
        if not path.exists():  # no event yet (a run waiting for a slot)
            return Response(b"", media_type="application/x-ndjson")
        return FileResponse(path, media_type="application/x-ndjson", filename=f"{run_id}.jsonl")

    async def follow():
        """Every event from the store in order, then new ones as they come, until the run's end
        event (stored after its record is final)."""
        seq = 0
        while True:
            for event in await asyncio.to_thread(plane.store.run_events, run_id, seq):
                seq = event["seq"]
                yield (json.dumps(event, default=str) + "\n").encode()
                if event["type"] in RUN_END:
                    return
            await asyncio.sleep(STREAM_POLL_S)

    return StreamingResponse(follow(), media_type="application/x-ndjson")


@router.post("/run/{run_id}/cancel", summary="Cancel a run: no further node starts; it ends CANCELLED")
async def cancel_run(plane: Plane, caller: Operator, run_id: str):
    """A run whose process stopped is cancelled here (reclaimed: it ends CANCELLED "interrupted");
    one already reclaimed answers 200 with nothing to stop, since a client cancelling a run stuck
    in a dead process has what it asked for."""
    run = found(plane.store.run(run_id), f"run {run_id}")
    if plane.runner.cancel(run_id):
        reclaimed = False
    elif run["status"] in FINISHED:
        if (run["error"] or "").startswith(INTERRUPTED):
            return {"run_id": run_id, "cancel_requested": False, "status": run["status"],
                    "error": run["error"]}
        raise HTTPException(409, f"run {run_id} already finished ({run['status']})")
    elif await asyncio.to_thread(plane.runner.cancel_orphan, run_id, caller.name):
        reclaimed = True
    else:
        raise HTTPException(409, f"run {run_id} is executed by another process (an API replica or a "
                                 "Dagster run worker); cancel it there or in the Dagster UI")
    plane.store.audit({"action": "run_cancel_requested", "run_id": run_id, "actor": caller.name,
                       "reclaimed": reclaimed})
    return {"run_id": run_id, "cancel_requested": True, "reclaimed": reclaimed}


@router.get("/trace/replay/{run_id}", summary="The run's events in order with timings, for a UI to animate")
async def replay(plane: Plane, _: Viewer, run_id: str):
    run = found(plane.store.run(run_id), f"run {run_id}")
    events = plane.store.run_events(run_id)
    origin = events[0]["at"] if events else run["created_at"]
    timeline = [{**event, "offset_ms": round((event["at"] - origin) * 1000, 3)} for event in events]
    spans: dict[tuple[str, int], dict] = {}
    for event in events:
        if event["type"] in ("node_start", "node_end"):
            key = (event["node_id"], event["attempt"])
            span = spans.setdefault(key, {"node_id": key[0], "node_type": event.get("node_type"),
                                          "attempt": key[1]})
            if event["type"] == "node_start":
                span["start_ms"] = round((event["at"] - origin) * 1000, 3)
            else:
                span.update(end_ms=round((event["at"] - origin) * 1000, 3), status=event["status"])
    last = events[-1]["at"] if events else origin
    return {"run_id": run_id, "workflow_id": run["workflow_id"], "version": run["version"],
            "status": run["status"], "started_at": origin, "duration_ms": round((last - origin) * 1000, 3),
            "events": timeline, "spans": list(spans.values())}
