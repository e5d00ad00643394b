"""Reusable task templates: a node's ``template_ref`` names one; its inline ``template`` overrides it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import Operator, Viewer
from api.workflows.routes.common import Plane, WorkflowsRoute, found, template_problems
from api.workflows.schemas import TEMPLATE_NAME, TemplateCreate

router = APIRouter(route_class=WorkflowsRoute)
TemplateName = Annotated[str, Path(pattern=TEMPLATE_NAME)]


@router.post("/templates", status_code=201, summary="Create or replace a task template")
async def put_template(plane: Plane, caller: Operator, body: TemplateCreate):
    if problems := template_problems(plane, body.template):
        raise HTTPException(422, {"message": f"the template has {len(problems)} problem(s)",
                                  "problems": [{"node_id": None, "message": m} for m in problems]})
    saved = plane.store.put_template(body.name, body.template.model_dump(mode="json", exclude_none=True),
                                     caller.name, body.description)
    return saved


@router.get("/templates", summary="List task templates")
async def list_templates(plane: Plane, _: Viewer):
    return {"templates": list(plane.store.templates().values())}


@router.get("/templates/{name}", summary="One task template")
async def get_template(plane: Plane, _: Viewer, name: TemplateName):
    return found(plane.store.templates().get(name), f"template {name}")


@router.delete("/templates/{name}", summary="Delete a task template")
async def delete_template(plane: Plane, caller: Operator, name: TemplateName):
    found(plane.store.delete_template(name, caller.name) or None, f"template {name}")
    return {"deleted": name}
