"""The workflows API (the seed's ``api/workflows.py``): ``router`` serves /workflows/*.

Specs are validated, versioned and compiled to Dagster jobs; runs are Dagster runs in the data
home's instance. The seed's integration works as written::

    from api import workflows
    app.include_router(workflows.router)

(the plane then starts on first use; our app starts it, and stops it, in its lifespan).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.workflows.plane import workflows_plane
from api.workflows.routes import definitions, runs, system, templates, ws

router = APIRouter()
# Fixed paths first: /workflows/{workflow_id} would otherwise claim /workflows/templates and friends.
for _module in (system, templates, runs, ws, definitions):
    router.include_router(_module.router, prefix="/workflows", tags=["workflows"])


def start_workflows_background_loop(app) -> None:
    """Event push, poll, fan-out and the maintenance loop (SLA, retention). Idempotent."""
    workflows_plane(app).start()


__all__ = ["router", "start_workflows_background_loop"]
