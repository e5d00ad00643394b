"""Workflow definitions: create, list, read, update (a new version), delete, versions, export,
import, validate, preview."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query

from api.config.routes.common import IfMatch, expected_version
from api.deps import Operator, Viewer
from api.workflows.routes.common import Plane, WorkflowsRoute, found, problems_of, valid_spec
from api.workflows.schemas import Problems
from orchestration.workflows.preview import preview as layout
from orchestration.workflows.spec import WorkflowSpec
from orchestration.workflows.store import StaleVersion

router = APIRouter(route_class=WorkflowsRoute)
EXPORT_FORMAT = "prioritymax-workflow/1"
SpecBody = Annotated[dict[str, Any], Body(description="a workflow spec (see examples/order_workflow.json)")]
VersionQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1, description="default: the latest")]


def _stored(spec: WorkflowSpec) -> dict[str, Any]:
    """A validated spec as stored: JSON, defaults filled in, unset optionals left out."""
    return spec.model_dump(mode="json", exclude_none=True)


@router.post("/", status_code=201, summary="Create a workflow (validated; 422 lists every problem)")
async def create_workflow(plane: Plane, caller: Operator, raw: SpecBody):
    spec = valid_spec(plane, raw)
    return plane.store.create(_stored(spec), caller.name)


@router.get("/", summary="List workflows")
async def list_workflows(plane: Plane, _: Viewer,
                         name_prefix: Annotated[str | None, Query(max_length=200)] = None):
    return {"workflows": plane.store.list(name_prefix)}


@router.post("/validate", response_model=Problems, summary="Validate a spec without storing it")
async def validate(plane: Plane, _: Viewer, raw: SpecBody):
    _, problems = problems_of(plane, raw)
    return {"valid": not problems, "problems": [p.as_dict() for p in problems]}


@router.post("/preview", summary="Nodes with layered layout coordinates and edges, for a UI")
async def preview_spec(plane: Plane, _: Viewer, raw: SpecBody):
    return layout(valid_spec(plane, raw))


@router.post("/import", status_code=201,
             summary="Import an export document (or a bare spec) as a new workflow")
async def import_workflow(plane: Plane, caller: Operator, raw: SpecBody):
    if raw.get("format") == EXPORT_FORMAT:
        versions = raw.get("versions")
        if not isinstance(versions, list) or not versions:
            raise HTTPException(422, "an export document needs a non-empty 'versions' list")
        specs = []
        for entry in versions:
            if not isinstance(entry, dict) or not isinstance(entry.get("spec"), dict):
                raise HTTPException(422, "each version of an export document needs a 'spec' object")
            specs.append(_stored(valid_spec(plane, entry["spec"])))
    else:
        specs = [_stored(valid_spec(plane, raw))]
    created = plane.store.create(specs[0], caller.name, comment="imported")
    for spec in specs[1:]:
        created = plane.store.update(created["workflow_id"], spec, caller.name, comment="imported")
    return created


@router.get("/{workflow_id}", summary="A workflow (latest version, or ?version=N)")
async def get_workflow(plane: Plane, _: Viewer, workflow_id: str, version: VersionQuery = None):
    label = f"workflow {workflow_id}" + (f" v{version}" if version else "")
    return found(plane.store.get(workflow_id, version), label)


@router.put("/{workflow_id}", summary="Update: a new version (old versions stay runnable); If-Match -> 409")
async def update_workflow(plane: Plane, caller: Operator, workflow_id: str, raw: SpecBody,
                          if_match: IfMatch = None,
                          comment: Annotated[str | None, Query(max_length=1000)] = None):
    found(plane.store.get(workflow_id), f"workflow {workflow_id}")
    spec = valid_spec(plane, raw, workflow_id=workflow_id)
    try:
        updated = plane.store.update(workflow_id, _stored(spec), caller.name, comment=comment,
                                     expected_version=expected_version(if_match, None))
    except StaleVersion as error:
        raise HTTPException(409, str(error)) from None
    return found(updated, f"workflow {workflow_id}")


@router.delete("/{workflow_id}", summary="Delete (versions and runs stay readable in history)")
async def delete_workflow(plane: Plane, caller: Operator, workflow_id: str):
    found(plane.store.delete(workflow_id, caller.name) or None, f"workflow {workflow_id}")
    return {"deleted": workflow_id}


@router.get("/{workflow_id}/versions", summary="Every version of a workflow")
async def list_versions(plane: Plane, _: Viewer, workflow_id: str):
    found(plane.store.get(workflow_id), f"workflow {workflow_id}")
    return {"workflow_id": workflow_id, "versions": plane.store.versions(workflow_id)}


@router.get("/{workflow_id}/export", summary="Every version as one JSON document (import takes it back)")
async def export_workflow(plane: Plane, _: Viewer, workflow_id: str):
    current = found(plane.store.get(workflow_id), f"workflow {workflow_id}")
    return {"format": EXPORT_FORMAT, "workflow_id": workflow_id, "name": current["name"],
            "versions": plane.store.versions(workflow_id, with_specs=True)}


@router.get("/{workflow_id}/preview", summary="Layout of a stored version, for a UI")
async def preview_workflow(plane: Plane, _: Viewer, workflow_id: str, version: VersionQuery = None):
    spec = found(plane.store.spec(workflow_id, version), f"workflow {workflow_id}")
    return layout(WorkflowSpec.model_validate(spec))

