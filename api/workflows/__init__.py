"""The workflows API (the seed's ``api/workflows.py``): ``router`` serves /workflows/*.

Specs are validated, versioned and compiled to Dagster jobs; runs are Dagster runs in the data
home's instance. The seed's integration works as written::

    from api import workflows
    app.include_router(workflows.router)

(the plane and its loops then start on first use; our app also stops them in its lifespan).
"""

from __future__ import annotations

from fastapi import APIRouter

from api.workflows.routes import definitions, runs, system, templates, ws

router = APIRouter()
# Fixed paths first: /workflows/{workflow_id} would otherwise claim /workflows/templates and friends.
for _module in (system, templates, runs, ws, definitions):
    router.include_router(_module.router, prefix="/workflows", tags=["workflows"])


__all__ = ["router"]
