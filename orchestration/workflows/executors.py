"""The four task executors (python, http, container, external) behind one call: :func:`execute`.

The compiler turns every task node into a Dagster op whose body calls::

    execute(template, payload, meta, settings=settings, cancel=cancel_event)

``template`` is the node's resolved :class:`~orchestration.workflows.spec.TaskTemplate` (``executor``
set; ``timeout_seconds`` may be None). The result is JSON-serializable (see *Results* below).

``meta`` (provided by the compiler; every key is optional here, missing ones read as ``"?"``/empty):

============  =======================================================================================
workflow_id   the workflow's id
version       the workflow version the run executes
run_id        the run's id (the Dagster run id)
root_run_id   the first run of its resume chain (the run itself unless it resumes another)
node_id       the node being executed (used in error messages and container/job names)
attempt       1-based attempt number (1 + the Dagster retry number)
variables     dict: the run's variables (spec defaults overridden by the run's input variables)
results       dict node_id -> result of the upstream nodes that ran
============  =======================================================================================

``payload`` is what the node works on: the run's variables, plus ``upstream``: node_id -> result of
every node upstream of this one (built by the compiler). A python callable receives it as
``fn(payload, meta)``; an http task sends it as the JSON
body when its config has no ``body``; a container gets it as ``PRIORITYMAX_PAYLOAD`` (JSON).

Executors and their ``config`` keys:

* **python** -- ``callable: "module:function"``. The module must equal one of
  ``settings.workflow_module_prefixes`` or start with ``prefix + "."``; the function name is one
  identifier (no dots, no leading underscore) and the object found must be callable and *defined* in an
  allowed module (``fn.__module__``), so a name an allowed module merely imported (``os.system``...) is
  refused. Any exception the callable raises becomes :class:`ExecutorError` (the original is its
  ``__cause__``).
* **http** -- ``url``, ``method`` (default POST), ``headers``, ``params``, ``body``. A ``body`` that is a
  string is sent as-is; any other ``body`` is sent as JSON; without ``body`` the payload is sent as JSON
  for POST/PUT/PATCH and nothing for the other methods. Redirects are not followed (a 3xx is a result), so
  a redirect cannot leave the host allowlist.
  Every request carries an ``Idempotency-Key`` header (unless ``headers`` sets one):
  :func:`idempotency_key` of the run's root run id and the node id, the same for every attempt of
  the node and for its call in a resumed run, so a receiver can recognise a repeated side effect.
  Result: ``{"status_code": int, "body": JSON or text, "elapsed_ms": float}`` -- ``body`` is parsed
  JSON when the response's content type says JSON, else text; at most 64 KiB of the body is read, and a
  cut body is returned as text with ``"truncated": True`` added. A status >= 400 raises
  :class:`ExecutorError` (``"HTTP 502 from <url>: <beginning of the body>"``).
* **external** -- a webhook: ``POST`` of ``payload_template`` (dict/list/str; default
  ``{"text": "Workflow {workflow_id} run {run_id} node {node_id}"}``) to ``url`` with optional
  ``headers``. Every string in it (dict keys included) is filled by :func:`fill_template`; the result
  has http's shape.
* **container** -- ``image`` (required), ``command`` (str or list: the image's CMD/arguments, like
  ``docker run IMAGE COMMAND``; in k8s it becomes the container's ``args``), ``env`` (dict),
  ``namespace`` (k8s, default ``"default"``), ``log_tail`` (lines, default 200), ``pass_payload``
  (default True). The container also gets ``PRIORITYMAX_WORKFLOW_ID``, ``PRIORITYMAX_RUN_ID``,
  ``PRIORITYMAX_NODE_ID``, ``PRIORITYMAX_ATTEMPT`` and ``PRIORITYMAX_PAYLOAD`` (JSON; over 96 KiB is an
  error: set ``pass_payload: false``). ``WORKFLOW_CONTAINER_MODE=docker`` runs it with the Docker SDK,
  ``k8s`` as a Kubernetes Job through ``kubectl`` (the Job is polled with ``kubectl get``, because
  ``kubectl wait`` watches one condition only and a Job ends in one of two). The container/Job is
  removed afterwards, also on timeout and cancel. Result: ``{"exit_code": int, "logs": str}`` (the tail
  of the logs, at most 64 KiB); a non-zero exit raises :class:`ExecutorError` with the logs' tail.

Hosts of http/external URLs are checked at call time against ``settings.workflow_url_hosts``
(:func:`host_allowed`); only ``http``/``https`` URLs are accepted.

Timeouts and cancellation (Dagster has no op timeout, so they live here, per node):

* ``template.timeout_seconds`` is the node's total deadline. The python callable (and the http/external
  request) runs in a daemon worker thread while the caller waits, checking ``cancel`` every 50 ms. On
  timeout :class:`NodeTimeout` is raised. **A Python thread cannot be killed**: a timed-out or cancelled
  python call is abandoned -- it keeps running in the background until it returns by itself, and its
  result is discarded. http/external also give httpx ``timeout_seconds`` (default 30 s) as its timeout.
  Python and container nodes without a timeout have none.
* ``cancel`` (a :class:`threading.Event`): set before the start -> :class:`Cancelled` without running
  anything; set while waiting -> :class:`Cancelled` (a container is stopped and removed, a Job deleted).

Results are made JSON-serializable with ``json.loads(json.dumps(result, default=str))``: tuples become
lists, non-JSON objects (datetimes, sets, Paths...) their ``str()``; a result that still cannot be
serialized (circular, non-string/number dict keys) raises :class:`ExecutorError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import json
import math
import os
import re
import secrets
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from orchestration.workflows.spec import TaskTemplate
from prioritymax.settings import Settings, get_settings

__all__ = [
    "DEFAULT_EXTERNAL_TEMPLATE",
    "DEFAULT_HTTP_TIMEOUT",
    "HTTP_METHODS",
    "Cancelled",
    "ExecutorError",
    "NodeTimeout",
    "check_url",
    "config_problems",
    "execute",
    "fill_template",
    "host_allowed",
    "host_matches",
    "idempotency_key",
    "job_manifest",
    "module_allowed",
    "resolve_callable",
    "to_json",
]

#: httpx timeout (seconds) of http/external nodes without ``timeout_seconds``.
DEFAULT_HTTP_TIMEOUT = 30.0
#: How often a waiting caller looks at ``cancel`` (seconds).
POLL_SECONDS = 0.05
#: How often a k8s Job's status is read (seconds).
K8S_POLL_SECONDS = 1.0
#: Most bytes of a response body / characters of container logs kept in a result.
MAX_BODY_BYTES = 64 * 1024
#: Characters of a body / log tail quoted in an error message.
ERROR_SNIPPET_CHARS = 500
MAX_PAYLOAD_ENV_BYTES = 96 * 1024
DEFAULT_EXTERNAL_TEMPLATE: dict[str, Any] = {"text": "Workflow {workflow_id} run {run_id} node {node_id}"}
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_BODY_METHODS = ("POST", "PUT", "PATCH")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_FUNCTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: The namespace of :func:`idempotency_key`'s UUIDs.
_IDEMPOTENCY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://prioritymax/workflows/idempotency-key")


class ExecutorError(Exception):
    """A node failed; the message says why (e.g. ``"HTTP 502 from http://...: <body>"``)."""


class NodeTimeout(ExecutorError):
    """The node ran past ``timeout_seconds``: ``"node X exceeded its timeout of N s"``."""


class Cancelled(ExecutorError):
    """The run was cancelled before or while the node ran."""


# --- public helpers (also usable by validation) -------------------------------------------------


def module_allowed(module: str, prefixes: Sequence[str]) -> bool:
    """True when ``module`` equals a prefix or starts with ``prefix + "."`` (empty prefixes ignored)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes if p)


def host_matches(host: str, hosts: Sequence[str]) -> bool:
    """``*`` matches any host, ``*.example.com`` any subdomain of example.com (not example.com
    itself), other entries exactly (case-insensitive)."""
    host = host.lower().rstrip(".")
    for pattern in hosts:
        pattern = pattern.strip().lower().rstrip(".")
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
    return False


def check_url(url: Any, hosts: Sequence[str], executor: str) -> str:
    """``url`` when an ``executor`` (http/external) node may call it, else :class:`ExecutorError` saying
    why: not a string, not a URL, not http/https, no host, a port out of range, or a host that does not
    :func:`host_matches` ``hosts``. The host is the one httpx connects to (``user@host`` tricks included).
    """
    if not isinstance(url, str) or not url:
        raise ExecutorError(f"{executor} executor: config.url is required (a string)")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ExecutorError(f"{executor} executor: invalid URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ExecutorError(f"{executor} executor: URL {url!r} must use http or https")
    if not parsed.host:
        raise ExecutorError(f"{executor} executor: URL {url!r} has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ExecutorError(f"{executor} executor: URL {url!r} has a port out of range (1-65535)")
    if not host_matches(parsed.host, hosts):
        raise ExecutorError(
            f"{executor} executor: host {parsed.host!r} of {url} is not allowed "
            f"(PRIORITYMAX_WORKFLOW_URL_ALLOWLIST={','.join(hosts) or 'empty'})"
        )
    return url


def host_allowed(url: str, hosts: Sequence[str]) -> bool:
    """True when :func:`check_url` accepts ``url``."""
    try:
        check_url(url, hosts, "http")
    except ExecutorError:
        return False
    return True


def config_problems(
    executor: str, config: Mapping[str, Any], *, module_prefixes: Sequence[str], url_hosts: Sequence[str]
) -> list[str]:
    """What ``executor`` would refuse in ``config`` before running anything -- each problem as the
    :class:`ExecutorError` message the run would fail with. Validation calls this, so a spec that
    validates passes the same checks at run time. A python callable is imported here only when its
    module is inside ``module_prefixes`` (:func:`resolve_callable`)."""
    checks: dict[str, tuple[Callable[[], Any], ...]] = {
        "python": (lambda: resolve_callable(config.get("callable"), module_prefixes),),
        "http": (
            lambda: check_url(config.get("url"), url_hosts, "http"),
            lambda: _method(config),
            lambda: _headers(config, "http"),
        ),
        "external": (
            lambda: check_url(config.get("url"), url_hosts, "external"),
            lambda: _payload_template(config),
            lambda: _headers(config, "external"),
        ),
        "container": (
            lambda: _image(config),
            lambda: _command(config),
            lambda: _env(config),
            lambda: _log_tail_lines(config),
        ),
    }
    if executor not in checks:
        return [f"unknown executor {executor!r} (one of {', '.join(checks)})"]
    problems = []
    for check in checks[executor]:
        try:
            check()
        except ExecutorError as exc:
            problems.append(str(exc))
    return problems


def fill_template(value: Any, values: Mapping[str, Any]) -> Any:
    """Fill ``{name}`` placeholders in every string of ``value`` (recursively through dicts, their keys
    included, and lists). ``name`` must be an identifier present in ``values``; anything else --
    ``{a.b}``, ``{a[0]}``, ``{0}``, unknown names -- is left exactly as written. ``{{`` and ``}}`` become
    literal braces. Strings are inserted as they are, other values as JSON. No ``str.format``, so no
    attribute or index access is possible."""
    if isinstance(value, str):
        return _fill_string(value, values)
    if isinstance(value, dict):
        return {
            (_fill_string(k, values) if isinstance(k, str) else k): fill_template(v, values)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [fill_template(v, values) for v in value]
    return value


def to_json(value: Any, *, what: str = "result") -> Any:
    """The documented coercion: ``json.loads(json.dumps(value, default=str))``."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError) as exc:
        raise ExecutorError(f"{what} is not JSON-serializable: {exc}") from exc


# --- the one call --------------------------------------------------------------------------------


def execute(
    template: TaskTemplate,
    payload: dict,
    meta: dict,
    *,
    settings: Settings | None = None,
    cancel: threading.Event | None = None,
) -> Any:
    """Run one task node with its executor and return its JSON-serializable result.

    Raises :class:`ExecutorError` (a failure with a clear message), :class:`NodeTimeout` or
    :class:`Cancelled`. See the module docstring for ``meta``, ``payload`` and each executor's config.
    """
    settings = settings or get_settings()
    node = str(meta.get("node_id", "?"))
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"node {node} was cancelled before it started")
    executor = template.executor or settings.workflow_executor_default
    runner = _EXECUTORS.get(executor)
    if runner is None:
        raise ExecutorError(f"node {node}: unknown executor {executor!r} (one of {', '.join(_EXECUTORS)})")
    config = template.config or {}
    result = runner(config, payload, meta, template.timeout_seconds, settings, cancel)
    return to_json(result, what=f"the result of node {node}")


# --- waiting with a deadline and cancel ----------------------------------------------------------


def _timeout_error(node: str, timeout: float) -> NodeTimeout:
    return NodeTimeout(f"node {node} exceeded its timeout of {timeout:g} s")


def _run_guarded(
    fn: Callable[[], Any], *, node: str, timeout: float | None, cancel: threading.Event | None
) -> Any:
    """Run ``fn`` in a daemon thread (in a copy of the caller's context, so tracing spans nest) and
    wait for it at most ``timeout`` seconds, checking ``cancel`` every POLL_SECONDS. On timeout or
    cancel the thread is abandoned (it cannot be killed) and its outcome discarded."""
    box: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(fn)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"pmx-node-{node}", daemon=True).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))
        if done.wait(wait):
            break
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"node {node} was cancelled while running (its call was abandoned)")
        if deadline is not None and time.monotonic() >= deadline:
            raise _timeout_error(node, timeout)  # type: ignore[arg-type]
    if "error" in box:
        raise box["error"]
    return box.get("value")


# --- python ----------------------------------------------------------------------------------------


def resolve_callable(spec: Any, prefixes: Sequence[str]) -> Callable[..., Any]:
    """The function ``spec`` (``"module:function"``) names, under the python executor's rules (module
    docstring); :class:`ExecutorError` saying why it can't be used. The module is imported only when it
    is inside ``prefixes``."""
    if spec is None:
        raise ExecutorError("python executor: config.callable is required ('module:function')")
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ExecutorError(f"python executor: config.callable must be 'module:function', got {spec!r}")
    module_name, func_name = (part.strip() for part in spec.split(":"))
    if not _MODULE_RE.match(module_name):
        raise ExecutorError(f"python executor: {module_name!r} is not a module name")
    if not _FUNCTION_RE.match(func_name):
        raise ExecutorError(
            f"python executor: {func_name!r} is not a public function name (one identifier, no leading _)"
        )
    if not module_allowed(module_name, prefixes):
        raise ExecutorError(
            f"python executor: module {module_name!r} is not allowed "
            f"(PRIORITYMAX_WORKFLOW_PYTHON_MODULES allows {', '.join(prefixes) or 'nothing'})"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ExecutorError(f"python executor: cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a broken module is a node failure
        raise ExecutorError(
            f"python executor: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    fn = getattr(module, func_name, None)
    if fn is None:
        raise ExecutorError(f"python executor: module {module_name!r} has no attribute {func_name!r}")
    if not callable(fn):
        raise ExecutorError(f"python executor: {spec} is not callable")
    defined_in = getattr(fn, "__module__", None)
    if not isinstance(defined_in, str) or not module_allowed(defined_in, prefixes):
        raise ExecutorError(
            f"python executor: {spec} is defined in {defined_in!r}, outside the allowed modules"
        )
    return fn


def _run_python(config, payload, meta, timeout, settings, cancel) -> Any:
    node = str(meta.get("node_id", "?"))
    spec = config.get("callable")
    fn = resolve_callable(spec, settings.workflow_module_prefixes)

    def call() -> Any:
        try:
            return fn(payload, meta)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: a node must not end the process
            raise ExecutorError(f"{spec} raised {type(exc).__name__}: {exc}") from exc

    return _run_guarded(call, node=node, timeout=timeout, cancel=cancel)


# --- http / external -------------------------------------------------------------------------------


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, default=str).encode()


def _http_request(
    *,
    node: str,
    url: str,
    method: str,
    headers: dict[str, str],
    params: Any,
    content: bytes | None,
    timeout: float,
    abandoned: threading.Event,
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream(method, url, headers=headers, params=params, content=content) as response,
        ):
            chunks: list[bytes] = []
            size = 0
            truncated = False
            for chunk in response.iter_bytes():
                if abandoned.is_set():
                    return {}
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    truncated = True
                    break
            raw = b"".join(chunks)[:MAX_BODY_BYTES]
    except httpx.TimeoutException as exc:
        raise NodeTimeout(
            f"{_timeout_error(node, timeout)} (HTTP {method} {url}: {type(exc).__name__})"
        ) from exc
    except httpx.HTTPError as exc:
        raise ExecutorError(f"HTTP {method} {url} failed: {type(exc).__name__}: {exc}") from exc
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    body: Any = text
    if not truncated and "json" in response.headers.get("content-type", "").lower():
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    if response.status_code >= 400:
        snippet = text[:ERROR_SNIPPET_CHARS]
        raise ExecutorError(f"HTTP {response.status_code} from {url}: {snippet}")
    result: dict[str, Any] = {"status_code": response.status_code, "body": body, "elapsed_ms": elapsed_ms}
    if truncated:
        result["truncated"] = True
    return result


def _guarded_http(node, timeout, cancel, **request) -> dict[str, Any]:
    http_timeout = timeout if timeout is not None else DEFAULT_HTTP_TIMEOUT
    abandoned = threading.Event()
    try:
        return _run_guarded(
            lambda: _http_request(node=node, timeout=http_timeout, abandoned=abandoned, **request),
            node=node,
            timeout=http_timeout,
            cancel=cancel,
        )
    except (NodeTimeout, Cancelled):
        abandoned.set()  # the abandoned request stops reading at its next chunk
        raise


def _headers(config: Mapping[str, Any], executor: str) -> dict[str, str]:
    headers = config.get("headers") or {}
    if not isinstance(headers, dict):
        raise ExecutorError(f"{executor} executor: config.headers must be an object")
    return {str(k): str(v) for k, v in headers.items()}


def _method(config: Mapping[str, Any]) -> str:
    method = str(config.get("method") or "POST").upper()
    if method not in HTTP_METHODS:
        raise ExecutorError(
            f"http executor: unsupported method {method!r} (one of {', '.join(HTTP_METHODS)})"
        )
    return method


def _has_header(headers: dict[str, str], name: str) -> bool:
    return any(k.lower() == name for k in headers)


def idempotency_key(root_run_id: str, node_id: str) -> str:
    """The ``Idempotency-Key`` of a node's http call: a UUID5 of (root run id, node id). Neither
    the attempt nor the resumed run's own id enters it, so a retry, or the same node executed again
    when a run is resumed, sends the key of the first call and a receiver can deduplicate it."""
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{root_run_id}\n{node_id}"))


def _with_idempotency_key(headers: dict[str, str], meta: Mapping[str, Any]) -> dict[str, str]:
    """``headers`` plus the node's key, when the node belongs to a run and none is set already."""
    run_id = meta.get("root_run_id") or meta.get("run_id")
    if run_id and "node_id" in meta and not _has_header(headers, "idempotency-key"):
        headers["Idempotency-Key"] = idempotency_key(str(run_id), str(meta["node_id"]))
    return headers


def _run_http(config, payload, meta, timeout, settings, cancel, *, executor: str = "http") -> Any:
    node = str(meta.get("node_id", "?"))
    url = check_url(config.get("url"), settings.workflow_url_hosts, executor)
    method = _method(config)
    headers = _with_idempotency_key(_headers(config, executor), meta)
    content: bytes | None = None
    if "body" in config and config["body"] is not None:
        body = config["body"]
        content = body.encode() if isinstance(body, str) else _json_bytes(body)
        is_json = not isinstance(body, str)
    elif method in _BODY_METHODS:
        content, is_json = _json_bytes(payload), True
    else:
        is_json = False
    if is_json and not _has_header(headers, "content-type"):
        headers["Content-Type"] = "application/json"
    return _guarded_http(
        node,
        timeout,
        cancel,
        url=url,
        method=method,
        headers=headers,
        params=config.get("params"),
        content=content,
    )


def _fill_string(text: str, values: Mapping[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name not in values:
            return token
        value = values[name]
        return value if isinstance(value, str) else json.dumps(value, default=str)

    return _PLACEHOLDER_RE.sub(replace, text)


def _template_values(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What an external payload_template may name: the run's variables, then (winning over variables of
    the same name) workflow_id, run_id, node_id, version."""
    values: dict[str, Any] = {}
    variables = meta.get("variables") or {}
    if isinstance(variables, Mapping):
        values.update({str(k): v for k, v in variables.items()})
    for key in ("workflow_id", "run_id", "node_id", "version"):
        if key in meta:
            values[key] = meta[key]
    return values


def _payload_template(config: Mapping[str, Any]) -> dict | list | str:
    template = config.get("payload_template", DEFAULT_EXTERNAL_TEMPLATE)
    if not isinstance(template, (dict, list, str)):
        raise ExecutorError(
            "external executor: config.payload_template must be an object, a list or a string, "
            f"not {type(template).__name__}"
        )
    return template


def _run_external(config, payload, meta, timeout, settings, cancel) -> Any:
    """An http POST of the filled ``payload_template``, always as JSON: http sends a string body as it
    is, so a string template goes as JSON text with a JSON content type."""
    template = _payload_template(config)
    headers = _headers(config, "external")
    body = fill_template(template, _template_values(meta))
    if isinstance(body, str):
        body = json.dumps(body)
        if not _has_header(headers, "content-type"):
            headers["Content-Type"] = "application/json"
    request = {"url": config.get("url"), "method": "POST", "headers": headers, "body": body}
    return _run_http(request, payload, meta, timeout, settings, cancel, executor="external")


# --- container -------------------------------------------------------------------------------------


def _sanitize_name(text: str, limit: int) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-")
    return name[:limit].rstrip("-") or "x"


def _workload_name(meta: Mapping[str, Any]) -> str:
    """``pmx-<node>-<run>-<attempt>-<random>``: lowercase RFC 1123 (a valid Job and container name),
    at most 63 characters; the random part keeps retries and leftovers from colliding."""
    base = f"pmx-{meta.get('node_id', 'node')}-{str(meta.get('run_id', 'run'))[:8]}-{meta.get('attempt', 1)}"
    return f"{_sanitize_name(base, 56)}-{secrets.token_hex(3)}"


def _image(config: Mapping[str, Any]) -> str:
    image = config.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ExecutorError("container executor: config.image is required (a non-empty string)")
    return image


def _env(config: Mapping[str, Any]) -> dict[str, str]:
    env = config.get("env") or {}
    if not isinstance(env, dict):
        raise ExecutorError("container executor: config.env must be an object")
    return {str(k): str(v) for k, v in env.items()}


def _log_tail_lines(config: Mapping[str, Any]) -> int:
    tail = config.get("log_tail", 200)
    try:
        return int(tail)
    except (TypeError, ValueError, OverflowError):
        raise ExecutorError(
            f"container executor: config.log_tail must be a number of lines, not {tail!r}"
        ) from None


def _container_env(config: Mapping[str, Any], payload: dict, meta: Mapping[str, Any]) -> dict[str, str]:
    env = _env(config)
    out = {
        "PRIORITYMAX_WORKFLOW_ID": str(meta.get("workflow_id", "")),
        "PRIORITYMAX_RUN_ID": str(meta.get("run_id", "")),
        "PRIORITYMAX_NODE_ID": str(meta.get("node_id", "")),
        "PRIORITYMAX_ATTEMPT": str(meta.get("attempt", 1)),
    }
    if config.get("pass_payload", True):
        encoded = json.dumps(payload, default=str)
        if len(encoded.encode()) > MAX_PAYLOAD_ENV_BYTES:
            raise ExecutorError(
                f"container executor: the payload is {len(encoded.encode())} bytes, over the "
                f"{MAX_PAYLOAD_ENV_BYTES} bytes PRIORITYMAX_PAYLOAD may hold; set config.pass_payload false"
            )
        out["PRIORITYMAX_PAYLOAD"] = encoded
    out.update(env)
    return out


def _command(config: Mapping[str, Any]) -> list[str] | None:
    command = config.get("command")
    if command is None:
        return None
    if isinstance(command, str):
        try:
            return shlex.split(command)
        except ValueError as exc:  # an unclosed quote
            raise ExecutorError(f"container executor: config.command {command!r}: {exc}") from None
    if isinstance(command, list):
        return [str(part) for part in command]
    raise ExecutorError("container executor: config.command must be a string or a list")


def _log_tail(text: str) -> str:
    return text[-MAX_BODY_BYTES:]


def _run_container(config, payload, meta, timeout, settings, cancel) -> Any:
    image = _image(config)
    if settings.workflow_container_mode == "k8s":
        return _run_k8s(image, config, payload, meta, timeout, cancel)
    return _run_docker(image, config, payload, meta, timeout, cancel)


def _run_docker(image, config, payload, meta, timeout, cancel) -> dict[str, Any]:
    import docker  # the SDK is imported only when a container node runs
    from docker.errors import DockerException

    node = str(meta.get("node_id", "?"))
    tail = _log_tail_lines(config)
    env = _container_env(config, payload, meta)
    command = _command(config)
    where = os.environ.get("DOCKER_HOST") or "unset, default unix:///var/run/docker.sock"
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, requests errors, bad DOCKER_HOST...
        raise ExecutorError(
            f"container executor: no Docker engine reachable (DOCKER_HOST={where}): {exc}"
        ) from exc
    deadline = None if timeout is None else time.monotonic() + timeout
    container = None
    try:
        try:
            container = client.containers.run(
                image,
                command,
                environment=env,
                detach=True,
                name=_workload_name(meta),
                labels={"prioritymax.node_id": node, "prioritymax.run_id": str(meta.get("run_id", ""))},
            )
        except DockerException as exc:
            raise ExecutorError(f"container executor: could not start {image}: {exc}") from exc
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                break
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"node {node} was cancelled; container {container.name} stopped")
            if deadline is not None and time.monotonic() >= deadline:
                raise _timeout_error(node, timeout)
            (cancel or threading.Event()).wait(min(0.25, _remaining(deadline)))
        exit_code = int(container.wait().get("StatusCode", -1))
        logs = _log_tail(container.logs(tail=tail).decode("utf-8", errors="replace"))
    except DockerException as exc:
        raise ExecutorError(f"container executor: docker failed while running {image}: {exc}") from exc
    finally:
        if container is not None:
            with contextlib.suppress(DockerException):
                container.remove(force=True)
    if exit_code != 0:
        raise ExecutorError(f"container {image} exited with code {exit_code}: {logs[-ERROR_SNIPPET_CHARS:]}")
    return {"exit_code": exit_code, "logs": logs}


def _remaining(deadline: float | None) -> float:
    return 3600.0 if deadline is None else max(0.0, deadline - time.monotonic())


def _kubectl(kubectl: str, args: list[str], *, stdin: str | None = None, timeout: float = 60.0) -> str:
    try:
        done = subprocess.run(
            [kubectl, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ExecutorError(
            f"container executor (k8s): kubectl {args[0]} did not answer in {timeout:g} s"
        ) from exc
    except OSError as exc:
        raise ExecutorError(f"container executor (k8s): cannot run kubectl: {exc}") from exc
    if done.returncode != 0:
        raise ExecutorError(
            f"container executor (k8s): kubectl {args[0]} failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[:ERROR_SNIPPET_CHARS]}"
        )
    return done.stdout


def job_manifest(
    name: str,
    namespace: str,
    image: str,
    command: list[str] | None,
    env: dict[str, str],
    meta: Mapping[str, Any],
    timeout: float | None,
) -> dict[str, Any]:
    """The Kubernetes Job a container node runs as (restartPolicy Never, backoffLimit 0)."""
    labels = {
        "app.kubernetes.io/managed-by": "prioritymax",
        "prioritymax/node-id": _sanitize_name(str(meta.get("node_id", "")), 63),
        "prioritymax/run-id": _sanitize_name(str(meta.get("run_id", "")), 63),
    }
    container: dict[str, Any] = {
        "name": "task",
        "image": image,
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    if command is not None:
        container["args"] = command
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [container]},
        },
    }
    if timeout is not None:  # the cluster stops it too, should this process die first
        spec["activeDeadlineSeconds"] = max(1, math.ceil(timeout))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def _run_k8s(image, config, payload, meta, timeout, cancel) -> dict[str, Any]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ExecutorError("container executor (k8s): no kubectl on PATH")
    node = str(meta.get("node_id", "?"))
    namespace = str(config.get("namespace") or "default")
    tail = _log_tail_lines(config)
    name = _workload_name(meta)
    manifest = job_manifest(
        name, namespace, image, _command(config), _container_env(config, payload, meta), meta, timeout
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    ns = ["--namespace", namespace]
    _kubectl(kubectl, ["create", "-f", "-", *ns], stdin=json.dumps(manifest), timeout=60)
    try:
        failed: str | None = None
        while True:
            answer = _kubectl(kubectl, ["get", "job", name, *ns, "-o", "json"], timeout=30)
            try:
                status = json.loads(answer or "{}")
            except ValueError as exc:
                raise ExecutorError(f"container executor (k8s): kubectl get job {name}: {exc}") from exc
            conditions = {
                c.get("type"): c
                for c in status.get("status", {}).get("conditions", []) or []
                if c.get("status") == "True"
            }
            if "Complete" in conditions:
                break
            if "Failed" in conditions:
                cond = conditions["Failed"]
                failed = f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".rstrip(": ")
                break
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"node {node} was cancelled; job {name} deleted")
            if deadline is not None and time.monotonic() >= deadline:
                raise _timeout_error(node, timeout)
            (cancel or threading.Event()).wait(min(K8S_POLL_SECONDS, _remaining(deadline)))
        try:
            logs = _log_tail(_kubectl(kubectl, ["logs", f"job/{name}", *ns, f"--tail={tail}"], timeout=60))
        except ExecutorError as exc:
            logs = f"(no logs: {exc})"
    finally:
        with contextlib.suppress(ExecutorError):
            _kubectl(
                kubectl,
                ["delete", "job", name, *ns, "--ignore-not-found", "--wait=false", "--cascade=background"],
                timeout=30,
            )
    if failed is not None:
        raise ExecutorError(f"k8s job {name} ({image}) failed: {failed}: {logs[-ERROR_SNIPPET_CHARS:]}")
    return {"exit_code": 0, "logs": logs}


_EXECUTORS: dict[str, Callable[..., Any]] = {
    "python": _run_python,
    "http": _run_http,
    "container": _run_container,
    "external": _run_external,
}
