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
# One flat list of routes rather than include_router() per module: FastAPI resolves included
# routers lazily, walking (and re-matching) every nested router on each request, which cost more
# CPU than the whole store write. Each module's router carries its full /config prefix.
# Order: the two exact /config routes (the write and the list, the hot path) first; then fixed
# paths, since /config/{key} would otherwise claim /config/status and friends; items' last.
_exact = [route for route in items.router.routes if getattr(route, "path", None) == "/config"]
router.routes.extend(_exact)
for _module in (system, secrets, features, ws, items):
    router.routes.extend(route for route in _module.router.routes if route not in _exact)


def start_config_background_loop(app) -> bool:
    """Verification every 5 minutes (all secrets decrypt, versions consistent), the poll for
    other replicas' changes and, with REDIS_URL, their pokes over Redis. Call from a running
    event loop; False when already running."""
    return control_plane(app).start_background()


def start_prometheus_metrics_loop(app) -> bool:
    """Refresh the gauges every 60 s. False when already running."""
    return control_plane(app).start_metrics()


__all__ = ["router", "start_config_background_loop", "start_prometheus_metrics_loop"]
