"""What every /config route shares: domain errors as HTTP errors, If-Match, strict JSON bodies,
latency metrics."""

from __future__ import annotations

import contextlib
import json
import math
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


#: How deep any request body may nest. Each schema has its own, lower limit where it matters (a
#: config value: 64); this one only keeps hostile nesting from reaching code that recurses.
MAX_BODY_DEPTH = 128


def _unfit(value) -> str | None:
    """Why a parsed body cannot be taken, or None. Python's parser accepts three things no JSON
    response can carry back: a number out of a double's range (``1e400`` reads as infinity), a
    lone UTF-16 surrogate (``"\\ud800"``), and nesting deep enough to exhaust the stack of
    whatever walks it later. Each names where it is (``$.items[0].value``)."""
    stack = [(value, "$", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return f"{where}: a number out of range (JSON numbers here are finite doubles)"
        if isinstance(node, str) and not node.isascii() and not _encodable(node):
            return f"{where}: a lone UTF-16 surrogate (\\ud800-\\udfff) is not text"
        if isinstance(node, dict | list) and depth >= MAX_BODY_DEPTH:
            return f"{where}: nested more than {MAX_BODY_DEPTH} levels deep"
        if isinstance(node, dict):
            for key, child in node.items():
                if not key.isascii() and not _encodable(key):
                    return f"{where}: a key holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
                stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(node, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(node))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class StrictJSONRequest(Request):
    """A request whose JSON body holds only what a JSON response can carry back (:func:`_unfit`):
    no ``NaN``/``Infinity``, no number out of range, no lone surrogate, no hostile nesting.
    Let through, each was a 500 further on, found by fuzzing: a 422 that echoes the input cannot
    be rendered, and once stored, the value made every response that includes it (list, snapshot,
    backup, the WebSocket) fail to serialize. Refused here, before anything echoes or stores them,
    they are FastAPI's usual 422 ``json_invalid``, with where and why in ``ctx.error``."""

    async def json(self):
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                parsed = json.loads(body, parse_constant=_no_constant)
            except RecursionError:
                raise json.JSONDecodeError(f"nested more than {MAX_BODY_DEPTH} levels deep", "", 0) from None
            if (problem := _unfit(parsed)) is not None:
                raise json.JSONDecodeError(problem, "", 0)
            self._json = parsed
        return self._json


def _carries_a_secret(request: StrictJSONRequest) -> bool:
    """Whether the request's body holds a secret's plaintext (a secret route, or ``is_secret``)."""
    if request.url.path.startswith("/config/secrets"):
        return True
    body = getattr(request, "_json", None)
    return isinstance(body, dict) and body.get("is_secret") is True


def _without_inputs(errors) -> list[dict]:
    """Validation errors that say where and why but never echo what was sent: a 422 for a secret
    too long repeated the plaintext to the client and to every log that keeps responses."""
    return [{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in errors]


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
            except RequestValidationError as error:
                status = 422  # counted as a 500 before: it is not an HTTPException
                if _carries_a_secret(request):
                    raise RequestValidationError(_without_inputs(error.errors())) from None
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
