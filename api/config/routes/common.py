"""What every /config route shares: domain errors as HTTP errors, If-Match, latency metrics."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Header, HTTPException, Request, Response
from fastapi.routing import APIRoute

from api.config.plane import control_plane
from api.config.service import ConfigError


@contextlib.contextmanager
def http_errors() -> Iterator[None]:
    """ConfigError subclasses carry their status (404, 409, 413, 422)."""
    try:
        yield
    except ConfigError as error:
        raise HTTPException(error.status, error.message) from None


def expected_version(if_match: str | None, body_version: int | None) -> int | None:
    """The version a write expects, from ``If-Match: "3"`` (or ``3``) or the body."""
    if if_match is None or if_match.strip() == "*":
        return body_version
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise HTTPException(422, f"If-Match {if_match!r}: expected a version number")
    header_version = int(text)
    if body_version is not None and body_version != header_version:
        raise HTTPException(422, "If-Match and expected_version disagree")
    return header_version


IfMatch = Annotated[str | None, Header(description="the version the write expects (409 if stale)")]


class TimedRoute(APIRoute):
    """Records each request's latency in the control plane's histogram (route template, not
    the raw path, so the label set stays small). A route class, not a middleware, so an app that
    only includes the router still gets it."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        template = self.path_format

        async def timed(request: Request) -> Response:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except HTTPException as error:
                status = error.status_code
                raise
            finally:
                control_plane(request.app).metrics.requests.labels(
                    method=request.method, route=template, status=str(status)
                ).observe(time.perf_counter() - started)

        return timed
