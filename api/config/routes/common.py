"""What every /config route shares: domain errors as HTTP errors, If-Match, strict JSON bodies,
latency metrics."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Header, HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError
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
    if not (text.isascii() and text.isdigit()):  # str.isdigit() alone lets "²" through to int()
        raise HTTPException(422, f"If-Match {if_match!r}: expected a version number")
    header_version = int(text)
    if body_version is not None and body_version != header_version:
        raise HTTPException(422, "If-Match and expected_version disagree")
    return header_version


IfMatch = Annotated[str | None, Header(description="the version the write expects (409 if stale)")]
#: A version in a path. Bounded because the store's INTEGER is: an unbounded int reached SQLite as
#: an OverflowError, a 500 (found by tests/api/test_schemathesis.py); now it is a 422.
VersionPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="a version number (from 1)")]


def _no_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)", name, 0)


def _lone_surrogate(value) -> bool:
    """Whether a parsed body holds a string (key or value) that is not valid Unicode text: JSON's
    ``"\\ud800"`` escape parses to a lone surrogate, which no UTF-8 response can carry."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


class StrictJSONRequest(Request):
    """A request whose JSON body may hold neither ``NaN``/``Infinity``/``-Infinity`` nor a lone
    UTF-16 surrogate (``"\\ud800"``), both of which Python's parser accepts. Let through, each was
    a 500 further on, found by fuzzing: a 422 that echoes the input cannot be rendered, and once
    stored, the value made every response that includes it (list, snapshot, backup) fail to
    serialize. Refused here, before anything echoes or stores them, they are FastAPI's usual 422
    ``json_invalid``."""

    async def json(self):
        if not hasattr(self, "_json"):
            body = await self.body()
            parsed = json.loads(body, parse_constant=_no_constant)
            if _lone_surrogate(parsed):
                raise json.JSONDecodeError("a lone UTF-16 surrogate (\\ud800-\\udfff) is not text",
                                           "", 0)
            self._json = parsed
        return self._json


class TimedRoute(APIRoute):
    """Records each request's latency in the control plane's histogram (route template, not
    the raw path, so the label set stays small), and parses bodies as :class:`StrictJSONRequest`.
    A route class, not a middleware, so an app that only includes the router still gets both.
    Subclasses name another histogram with :meth:`histogram` (the workflows API does)."""

    @staticmethod
    def histogram(app):
        return control_plane(app).metrics.requests

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        template = self.path_format

        async def timed(request: Request) -> Response:
            started = time.perf_counter()
            status = 500
            request = StrictJSONRequest(request.scope, request.receive)
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except HTTPException as error:
                status = error.status_code
                raise
            except RequestValidationError:
                status = 422  # counted as a 500 before: it is not an HTTPException
                raise
            finally:
                self.histogram(request.app).labels(
                    method=request.method, route=template, status=str(status)
                ).observe(time.perf_counter() - started)

        return timed


async def rollback_and_tell(plane, kind: str, key: str, version: int, tenant: str | None, actor: str,
                            expected: int | None = None) -> dict:
    """A rollback of an item or a flag: the new version, the metrics, the Slack alert."""
    with http_errors():
        item = plane.service.rollback(kind, key, version, tenant=tenant, actor=actor,
                                      expected_version=expected)
    plane.metrics.changes.labels(kind=kind, operation="rollback").inc()
    plane.metrics.rollbacks.inc()
    await plane.alert(f"{actor} rolled {'flag ' if kind == 'flag' else ''}{key!r} back to version {version}"
                      + (f" for {tenant}" if tenant else ""))
    return item
