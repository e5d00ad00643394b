"""The configuration control plane (the seed's ``api/config.py``): ``router`` serves /config/*.

The seed's integration works as written::

    from api import config
    app.include_router(config.router)
    start_config_background_loop(app)      # in a startup hook; idempotent
    start_prometheus_metrics_loop(app)     # idempotent

Our own app (:mod:`api.main`) does the same from its lifespan.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.config.plane import control_plane
from api.config.routes import features, items, secrets, system, ws

router = APIRouter()
# Fixed paths first: /config/{key} would otherwise claim /config/status and friends.
for _module in (system, secrets, features, ws, items):
    router.include_router(_module.router, prefix="/config")


def start_config_background_loop(app) -> bool:
    """Verification every 5 minutes (all secrets decrypt, versions consistent), the poll for
    other replicas' changes and, with REDIS_URL, their pokes over Redis. Call from a running
    event loop; False when already running."""
    return control_plane(app).start_background()


def start_prometheus_metrics_loop(app) -> bool:
    """Refresh the gauges every 60 s. False when already running."""
    return control_plane(app).start_metrics()


__all__ = ["router", "start_config_background_loop", "start_prometheus_metrics_loop"]
