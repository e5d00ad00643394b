"""What the /workflows routes share: spec parsing + validation into one 422 that lists every
problem with its node id, and the store's lookups as 404s."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from api.config.routes.common import TimedRoute
from api.workflows.plane import WorkflowsPlane, workflows_plane
from orchestration.workflows.executors import config_problems
from orchestration.workflows.spec import EXECUTORS, TaskTemplate, WorkflowSpec
from orchestration.workflows.validate import Problem, parse_spec, validate_spec


class WorkflowsRoute(TimedRoute):
    """The config routes' latency timing and strict JSON bodies, into the workflows histogram."""

    @staticmethod
    def histogram(app):
        return workflows_plane(app).metrics.requests


async def get_plane(request: Request) -> WorkflowsPlane:
    return workflows_plane(request.app)


Plane = Annotated[WorkflowsPlane, Depends(get_plane)]


def problems_of(plane: WorkflowsPlane, raw: Any,
                workflow_id: str | None = None) -> tuple[WorkflowSpec | None, list[Problem]]:
    """Every problem of a spec; its size is measured by parse_spec (each spec of an import alone)."""
    spec, problems = parse_spec(raw)
    if spec is None:
        return None, problems
    settings = plane.settings
    problems = validate_spec(spec, templates=plane.runner.templates(),
                             resolve_workflow=plane.runner.resolve_workflow,
                             allowed_modules=settings.workflow_module_prefixes,
                             url_hosts=settings.workflow_url_hosts,
                             default_executor=settings.workflow_executor_default, workflow_id=workflow_id)
    return spec, problems


def template_problems(plane: WorkflowsPlane, template: TaskTemplate) -> list[str]:
    """What a stored template's executor would refuse, checked as a spec's task is (executor and
    module allowlists, URL schemes and hosts): a template is run by every node that names it, so
    it is refused when stored, not when a run reaches it."""
    settings = plane.settings
    executor = template.executor or settings.workflow_executor_default
    if executor not in EXECUTORS:
        return [f"unknown executor {executor!r}; known executors: {', '.join(EXECUTORS)}"]
    return config_problems(executor, template.config, module_prefixes=settings.workflow_module_prefixes,
                           url_hosts=settings.workflow_url_hosts)


def valid_spec(plane: WorkflowsPlane, raw: Any, workflow_id: str | None = None) -> WorkflowSpec:
    """The spec, or a 422 ``{"message", "problems": [{"node_id", "message"}]}``."""
    spec, problems = problems_of(plane, raw, workflow_id)
    if problems or spec is None:
        raise HTTPException(422, {"message": f"the workflow spec has {len(problems)} problem(s)",
                                  "problems": [p.as_dict() for p in problems]})
    return spec


def found(value, what: str):
    if value is None:
        raise HTTPException(404, f"{what} not found")
    return value
