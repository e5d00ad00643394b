"""The four executors against real local parts: a loopback HTTP server, the real Docker SDK (with no
engine), kubectl absent or a fake kubectl script on PATH."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import socket
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestration.workflows import executors
from orchestration.workflows.executors import (
    Cancelled,
    ExecutorError,
    NodeTimeout,
    check_url,
    execute,
    fill_template,
    host_allowed,
    job_manifest,
    module_allowed,
    resolve_callable,
)
from orchestration.workflows.spec import TaskTemplate
from prioritymax.settings import Settings

THIS_MODULE = __name__


def make_settings(tmp_path: Path, **env: str) -> Settings:
    return Settings(PRIORITYMAX_HOME=str(tmp_path / "home"), **env)


def meta(node_id: str = "n1", **more) -> dict:
    base = {
        "workflow_id": "wf-1",
        "version": 3,
        "run_id": "run-abc",
        "node_id": node_id,
        "attempt": 1,
        "variables": {},
        "results": {},
    }
    base.update(more)
    return base


def task(executor: str, config: dict, timeout: float | None = None) -> TaskTemplate:
    return TaskTemplate(executor=executor, config=config, timeout_seconds=timeout)


# --- callables living in this module (allowed only when the settings name it) ----------------------


def returns_odd_types(payload, meta):
    return {"when": dt.datetime(2024, 1, 2, 3, 4, 5), "pair": (1, 2), "tags": {"x"}}


def returns_unserializable(payload, meta):
    return {("a", 1): 2}


# --- a recording loopback HTTP server ----------------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        self.requests.append(
            {
                "method": self.command,
                "path": url.path,
                "query": parse_qs(url.query),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        if url.path == "/json":
            self._send(200, json.dumps({"ok": True, "got": body.decode() or None}), "application/json")
        elif url.path == "/text":
            self._send(200, "plain words", "text/plain; charset=utf-8")
        elif url.path == "/big":
            self._send(200, "x" * (executors.MAX_BODY_BYTES + 5000), "application/json")
        elif url.path == "/fail":
            self._send(500, "upstream broke: database unavailable", "text/plain")
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://elsewhere.invalid/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("seconds", ["2"])[0]))
            self._send(200, "{}", "application/json")
        else:
            self._send(404, "no such path", "text/plain")

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def _send(self, status: int, text: str, content_type: str) -> None:
        data = text.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass


@pytest.fixture
def server():
    Recorder.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Recorder.requests
    httpd.shutdown()
    httpd.server_close()


# --- python ---------------------------------------------------------------------------------------


def test_python_calls_the_function_with_payload_and_meta(tmp_path):
    result = execute(
        task("python", {"callable": "workflows.tasks:echo"}),
        {"order_id": 7},
        meta("verify"),
        settings=make_settings(tmp_path),
    )
    assert result == {"payload": {"order_id": 7}, "node_id": "verify"}


def test_executor_none_uses_the_default_executor(tmp_path):
    template = TaskTemplate(config={"callable": "workflows.tasks:noop"})
    assert execute(template, {}, meta(), settings=make_settings(tmp_path)) == {}


@pytest.mark.parametrize(
    "callable_spec, reason",
    [
        ("os:system", "is not allowed"),
        ("workflowsevil.tasks:run", "is not allowed"),  # a prefix lookalike
        ("subprocess:run", "is not allowed"),
        ("workflows.tasks:Any", "outside the allowed modules"),  # imported into an allowed module
        ("workflows.tasks:_private", "not a public function name"),
        ("workflows.tasks:echo.__globals__", "not a public function name"),
        ("workflows.tasks", "must be 'module:function'"),
        (".tasks:echo", "is not a module name"),
    ],
)
def test_python_refuses_callables_outside_the_allowlist(tmp_path, callable_spec, reason):
    with pytest.raises(ExecutorError, match=reason):
        execute(task("python", {"callable": callable_spec}), {}, meta(), settings=make_settings(tmp_path))


def test_python_missing_module_or_attribute_says_why(tmp_path):
    settings = make_settings(tmp_path)
    with pytest.raises(ExecutorError, match="has no attribute 'nope'"):
        execute(task("python", {"callable": "workflows.tasks:nope"}), {}, meta(), settings=settings)
    with pytest.raises(ExecutorError, match="cannot import module 'workflows.missing'"):
        execute(task("python", {"callable": "workflows.missing:run"}), {}, meta(), settings=settings)


def test_python_module_prefixes_come_from_settings(tmp_path):
    settings = make_settings(tmp_path, PRIORITYMAX_WORKFLOW_PYTHON_MODULES="workflows, tests.orchestration")
    result = execute(
        task("python", {"callable": f"{THIS_MODULE}:returns_odd_types"}), {}, meta(), settings=settings
    )
    # The documented coercion: json.loads(json.dumps(x, default=str)).
    assert result == {"when": "2024-01-02 03:04:05", "pair": [1, 2], "tags": "{'x'}"}
    with pytest.raises(ExecutorError, match="not JSON-serializable"):
        execute(
            task("python", {"callable": f"{THIS_MODULE}:returns_unserializable"}),
            {},
            meta(),
            settings=settings,
        )
    with pytest.raises(ExecutorError, match="is not allowed"):
        execute(
            task("python", {"callable": f"{THIS_MODULE}:returns_odd_types"}),
            {},
            meta(),
            settings=make_settings(tmp_path),
        )


def test_module_allowed():
    assert module_allowed("workflows", ("workflows",))
    assert module_allowed("workflows.a.b", ("workflows",))
    assert not module_allowed("workflows_x", ("workflows",))
    assert not module_allowed("anything", ())


def test_python_exception_becomes_executor_error_with_its_cause(tmp_path):
    with pytest.raises(ExecutorError, match="workflows.tasks:fail raised RuntimeError: boom") as info:
        execute(
            task("python", {"callable": "workflows.tasks:fail"}),
            {"message": "boom"},
            meta(),
            settings=make_settings(tmp_path),
        )
    assert isinstance(info.value.__cause__, RuntimeError)


def test_python_flaky_depends_on_the_attempt(tmp_path):
    settings = make_settings(tmp_path)
    template = task("python", {"callable": "workflows.tasks:flaky"})
    for attempt in (1, 2):
        with pytest.raises(ExecutorError, match="planned failures"):
            execute(template, {"fail_times": 2}, meta(attempt=attempt), settings=settings)
    assert execute(template, {"fail_times": 2}, meta(attempt=3), settings=settings) == {"attempt": 3}


def test_python_timeout_raises_node_timeout(tmp_path):
    with pytest.raises(NodeTimeout, match="node slow exceeded its timeout of 0.3 s"):
        execute(
            task("python", {"callable": "workflows.tasks:sleep"}, timeout=0.3),
            {"seconds": 3},
            meta("slow"),
            settings=make_settings(tmp_path),
        )


def test_python_within_its_timeout_returns(tmp_path):
    result = execute(
        task("python", {"callable": "workflows.tasks:sleep"}, timeout=30),
        {"seconds": 0.01},
        meta(),
        settings=make_settings(tmp_path),
    )
    assert result == {"slept": 0.01}


def test_cancel_before_start_runs_nothing(tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled, match="before it started"):
        execute(
            task("python", {"callable": "workflows.tasks:fail"}),
            {},
            meta(),
            settings=make_settings(tmp_path),
            cancel=cancel,
        )


def test_cancel_while_running(tmp_path):
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        with pytest.raises(Cancelled, match="cancelled while running"):
            execute(
                task("python", {"callable": "workflows.tasks:sleep"}),
                {"seconds": 5},
                meta(),
                settings=make_settings(tmp_path),
                cancel=cancel,
            )
    finally:
        timer.cancel()


def test_unknown_executor(tmp_path):
    with pytest.raises(ExecutorError, match="unknown executor 'ftp'"):
        execute(task("ftp", {}), {}, meta(), settings=make_settings(tmp_path))


# --- http -------------------------------------------------------------------------------------------


def test_http_post_sends_the_payload_and_returns_json(server, tmp_path):
    base, requests = server
    result = execute(
        task("http", {"url": f"{base}/json", "headers": {"X-Token": "t1"}}),
        {"order_id": 7, "amount": 9.5},
        meta(),
        settings=make_settings(tmp_path),
    )
    assert result["status_code"] == 200
    assert result["body"]["ok"] is True
    assert isinstance(result["elapsed_ms"], float)
    [request] = requests
    assert request["method"] == "POST"
    assert json.loads(request["body"]) == {"order_id": 7, "amount": 9.5}
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-token"] == "t1"


def test_http_get_sends_params_and_no_body(server, tmp_path):
    base, requests = server
    result = execute(
        task("http", {"url": f"{base}/text", "method": "get", "params": {"q": "a b"}}),
        {"ignored": True},
        meta(),
        settings=make_settings(tmp_path),
    )
    assert result["body"] == "plain words"
    [request] = requests
    assert request["method"] == "GET" and request["body"] == b""
    assert request["query"] == {"q": ["a b"]}


def test_http_explicit_body(server, tmp_path):
    base, requests = server
    settings = make_settings(tmp_path)
    execute(
        task("http", {"url": f"{base}/json", "method": "PUT", "body": {"fixed": 1}}),
        {"p": 1},
        meta(),
        settings=settings,
    )
    execute(task("http", {"url": f"{base}/json", "body": "raw=text"}), {"p": 1}, meta(), settings=settings)
    assert json.loads(requests[0]["body"]) == {"fixed": 1}
    assert requests[1]["body"] == b"raw=text"


def test_http_error_status_raises_with_status_and_body(server, tmp_path):
    base, _ = server
    with pytest.raises(ExecutorError, match=r"HTTP 500 from http://127\.0\.0\.1:\d+/fail: upstream broke"):
        execute(task("http", {"url": f"{base}/fail"}), {}, meta(), settings=make_settings(tmp_path))


def test_http_big_body_is_truncated_to_text(server, tmp_path):
    base, _ = server
    result = execute(
        task("http", {"url": f"{base}/big", "method": "GET"}), {}, meta(), settings=make_settings(tmp_path)
    )
    assert result["truncated"] is True
    assert len(result["body"]) == executors.MAX_BODY_BYTES


def test_http_does_not_follow_redirects(server, tmp_path):
    base, requests = server
    result = execute(
        task("http", {"url": f"{base}/redirect", "method": "GET"}),
        {},
        meta(),
        settings=make_settings(tmp_path),
    )
    assert result["status_code"] == 302
    assert len(requests) == 1


def test_http_timeout(server, tmp_path):
    base, _ = server
    with pytest.raises(NodeTimeout, match="node pay exceeded its timeout of 0.3 s"):
        execute(
            task("http", {"url": f"{base}/slow?seconds=3"}, timeout=0.3),
            {},
            meta("pay"),
            settings=make_settings(tmp_path),
        )


def test_http_connection_error_says_why(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ExecutorError, match="ConnectError"):
        execute(
            task("http", {"url": f"http://127.0.0.1:{port}/x"}, timeout=5),
            {},
            meta(),
            settings=make_settings(tmp_path),
        )


def test_http_host_not_allowed(server, tmp_path):
    base, requests = server
    refused = make_settings(tmp_path, PRIORITYMAX_WORKFLOW_URL_ALLOWLIST="other.host")
    with pytest.raises(ExecutorError, match="host '127.0.0.1' .* is not allowed"):
        execute(task("http", {"url": f"{base}/json"}), {}, meta(), settings=refused)
    assert requests == []
    allowed = make_settings(tmp_path, PRIORITYMAX_WORKFLOW_URL_ALLOWLIST="other.host,127.0.0.1")
    assert execute(task("http", {"url": f"{base}/json"}), {}, meta(), settings=allowed)["status_code"] == 200


def test_host_allowed_rules():
    assert host_allowed("https://anything.org/x", ("*",))
    assert host_allowed("https://api.example.com/x", ("*.example.com",))
    assert host_allowed("https://a.b.EXAMPLE.com/x", ("*.example.com",))
    assert not host_allowed("https://example.com/x", ("*.example.com",))
    assert not host_allowed("https://evilexample.com/x", ("*.example.com",))
    assert host_allowed("http://payment.example.com:8443/pay", ("payment.example.com",))
    assert not host_allowed("http://payment.example.com@evil.org/", ("payment.example.com",))
    assert not host_allowed("ftp://payment.example.com/", ("*",))
    assert not host_allowed("file:///etc/passwd", ("*",))
    assert not host_allowed("not a url", ("*",))
    assert not host_allowed("https://payment.example.com:99999/", ("*",))


def test_check_url_says_why():
    hosts = ("allowed.host",)
    assert check_url("https://allowed.host/x", hosts, "http") == "https://allowed.host/x"
    for url, reason in [
        (None, "config.url is required"),
        ("ftp://allowed.host/", "must use http or https"),
        ("https:///x", "has no host"),
        ("http://[::1/", "invalid URL"),
        ("https://allowed.host:70000/", "port out of range"),
        ("http://allowed.host@evil.host/", "host 'evil.host' of .* is not allowed"),
    ]:
        with pytest.raises(ExecutorError, match=f"^external executor: .*{reason}"):
            check_url(url, hosts, "external")


def test_resolve_callable_is_the_python_executors_rule():
    from workflows import tasks

    assert resolve_callable("workflows.tasks:echo", ["workflows"]) is tasks.echo
    with pytest.raises(ExecutorError, match="not a public function name"):
        resolve_callable("workflows.tasks:time.sleep", ["workflows"])
    with pytest.raises(ExecutorError, match="config.callable is required"):
        resolve_callable(None, ["workflows"])


def test_http_cancel_while_waiting(server, tmp_path):
    base, _ = server
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        with pytest.raises(Cancelled):
            execute(
                task("http", {"url": f"{base}/slow?seconds=3"}),
                {},
                meta(),
                settings=make_settings(tmp_path),
                cancel=cancel,
            )
    finally:
        timer.cancel()


# --- external ---------------------------------------------------------------------------------------


def test_external_posts_the_filled_template(server, tmp_path):
    base, requests = server
    template = {
        "text": "Workflow {workflow_id} run {run_id} v{version} node {node_id}: {customer} owes {amount}",
        "kept": ["{a.b}", "{a[0]}", "{0}", "{__class__}", "{unknown}", "{{literal}}", "{ customer }"],
        "{customer}": 1,
    }
    result = execute(
        task("external", {"url": f"{base}/json", "payload_template": template}),
        {"payload": "not sent"},
        meta("notify", variables={"customer": "ACME", "amount": 12.5, "run_id": "spoofed"}),
        settings=make_settings(tmp_path),
    )
    assert result["status_code"] == 200
    sent = json.loads(requests[0]["body"])
    assert sent == {
        "text": "Workflow wf-1 run run-abc v3 node notify: ACME owes 12.5",
        "kept": ["{a.b}", "{a[0]}", "{0}", "{__class__}", "{unknown}", "{literal}", "{ customer }"],
        "ACME": 1,
    }
    assert requests[0]["method"] == "POST"


def test_external_default_template(server, tmp_path):
    base, requests = server
    execute(task("external", {"url": f"{base}/json"}), {}, meta("n9"), settings=make_settings(tmp_path))
    assert json.loads(requests[0]["body"]) == {"text": "Workflow wf-1 run run-abc node n9"}


def test_external_string_and_list_templates_are_sent_as_json(server, tmp_path):
    base, requests = server
    settings = make_settings(tmp_path)
    execute(
        task("external", {"url": f"{base}/json", "payload_template": "run {run_id} done"}),
        {},
        meta(),
        settings=settings,
    )
    execute(
        task("external", {"url": f"{base}/json", "payload_template": ["{node_id}", 2]}),
        {},
        meta("n7"),
        settings=settings,
    )
    assert [json.loads(r["body"]) for r in requests] == ["run run-abc done", ["n7", 2]]
    assert [r["headers"]["content-type"] for r in requests] == ["application/json", "application/json"]
    assert [r["method"] for r in requests] == ["POST", "POST"]


def test_external_host_rule_and_error_status(server, tmp_path):
    base, _ = server
    with pytest.raises(ExecutorError, match="is not allowed"):
        execute(
            task("external", {"url": f"{base}/json"}),
            {},
            meta(),
            settings=make_settings(tmp_path, PRIORITYMAX_WORKFLOW_URL_ALLOWLIST="*.slack.com"),
        )
    with pytest.raises(ExecutorError, match="HTTP 500"):
        execute(task("external", {"url": f"{base}/fail"}), {}, meta(), settings=make_settings(tmp_path))


def test_fill_template_leaves_non_strings_and_format_tricks_alone():
    values = {"name": "x", "n": 2, "obj": {"k": 1}}
    assert fill_template({"a": [1, None, True, "{name}-{n}-{obj}"]}, values) == {
        "a": [1, None, True, 'x-2-{"k": 1}']
    }
    assert fill_template("{name.__class__}{name!r}{name:>9}", values) == "{name.__class__}{name!r}{name:>9}"
    assert fill_template("{{name}} {{{name}}}", values) == "{name} {x}"


# --- container --------------------------------------------------------------------------------------


def test_container_docker_mode_without_engine_fails_clearly(tmp_path, monkeypatch):
    path = tmp_path / "d.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the socket file stays; nothing listens on it
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    with pytest.raises(ExecutorError, match=r"no Docker engine reachable \(DOCKER_HOST=unix://.*d\.sock\)"):
        execute(
            task("container", {"image": "ubuntu:latest", "command": ["echo", "hi"]}),
            {},
            meta(),
            settings=make_settings(tmp_path, WORKFLOW_CONTAINER_MODE="docker"),
        )


def test_container_requires_an_image(tmp_path):
    with pytest.raises(ExecutorError, match="config.image is required"):
        execute(task("container", {"command": "echo"}), {}, meta(), settings=make_settings(tmp_path))


class FakeContainer:
    def __init__(self, exit_code: int, runs_for: float, logs: bytes) -> None:
        self.name = "fake"
        self.exit_code = exit_code
        self.ends_at = time.monotonic() + runs_for
        self.status = "running"
        self._logs = logs
        self.removed = False

    def reload(self) -> None:
        if time.monotonic() >= self.ends_at:
            self.status = "exited"

    def wait(self) -> dict:
        return {"StatusCode": self.exit_code}

    def logs(self, tail: int) -> bytes:
        return self._logs

    def remove(self, force: bool) -> None:
        self.removed = True


class FakeDockerClient:
    """``docker.from_env()`` without an engine. ``containers.run`` takes only what the real
    ``ContainerCollection.run`` takes: its signature, then its keywords as the SDK's own conversion
    into create arguments accepts them (TypeError otherwise)."""

    def __init__(self, container: FakeContainer) -> None:
        from docker.models.containers import ContainerCollection, _create_container_args

        self.container = container
        self.runs: list[tuple] = []
        outer = self
        signature = inspect.signature(ContainerCollection.run)

        class Containers:
            def run(self, *args, **kwargs):
                bound = signature.bind(self, *args, **kwargs)
                arguments = bound.arguments
                extra = dict(arguments.get("kwargs", {}))
                for handled_by_run in ("stream", "detach", "platform"):
                    extra.pop(handled_by_run, None)
                _create_container_args(
                    {
                        **extra,
                        "image": arguments["image"],
                        "command": arguments.get("command"),
                        "version": "1.44",
                    }
                )
                outer.runs.append((arguments["image"], arguments.get("command"), arguments.get("kwargs", {})))
                return outer.container

        self.containers = Containers()

    def ping(self) -> bool:
        return True


@pytest.fixture
def fake_docker(monkeypatch):
    import docker

    def install(container: FakeContainer) -> FakeDockerClient:
        client = FakeDockerClient(container)
        monkeypatch.setattr(docker, "from_env", lambda: client)
        return client

    return install


def test_container_docker_flow_with_a_fake_client(tmp_path, fake_docker):
    client = fake_docker(FakeContainer(0, 0.0, b"hello\n"))
    result = execute(
        task("container", {"image": "alpine", "command": "echo 'hello there'", "env": {"A": 1}}),
        {"order_id": 7},
        meta(),
        settings=make_settings(tmp_path),
    )
    assert result == {"exit_code": 0, "logs": "hello\n"}
    image, command, kwargs = client.runs[0]
    assert (image, command) == ("alpine", ["echo", "hello there"])
    assert kwargs["environment"]["A"] == "1"
    assert json.loads(kwargs["environment"]["PRIORITYMAX_PAYLOAD"]) == {"order_id": 7}
    assert kwargs["environment"]["PRIORITYMAX_NODE_ID"] == "n1"
    assert client.container.removed


def test_the_fake_docker_client_refuses_what_the_sdk_refuses(fake_docker):
    import docker

    fake_docker(FakeContainer(0, 0.0, b""))
    containers = docker.from_env().containers
    with pytest.raises(TypeError, match="envirnoment"):
        containers.run("alpine", None, envirnoment={}, detach=True)
    with pytest.raises(TypeError):
        containers.run("alpine", None, "extra", "positionals", "too", "many")
    with pytest.raises(TypeError):
        containers.run(command=["true"])  # no image


def test_container_command_with_an_unclosed_quote(tmp_path):
    with pytest.raises(ExecutorError, match="config.command .* No closing quotation"):
        execute(
            task("container", {"image": "alpine", "command": "echo 'oops"}),
            {},
            meta(),
            settings=make_settings(tmp_path),
        )


def test_container_docker_nonzero_exit_and_timeout_remove_the_container(tmp_path, fake_docker):
    client = fake_docker(FakeContainer(3, 0.0, b"line1\ntraceback: kaput\n"))
    with pytest.raises(ExecutorError, match="(?s)exited with code 3: .*kaput"):
        execute(task("container", {"image": "alpine"}), {}, meta(), settings=make_settings(tmp_path))
    assert client.container.removed
    client = fake_docker(FakeContainer(0, 60.0, b""))
    with pytest.raises(NodeTimeout, match="exceeded its timeout of 0.3 s"):
        execute(
            task("container", {"image": "alpine"}, timeout=0.3), {}, meta(), settings=make_settings(tmp_path)
        )
    assert client.container.removed


def test_container_k8s_mode_without_kubectl_fails_clearly(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ExecutorError, match="no kubectl on PATH"):
        execute(
            task("container", {"image": "ubuntu:latest"}),
            {},
            meta(),
            settings=make_settings(tmp_path, WORKFLOW_CONTAINER_MODE="k8s"),
        )


FAKE_KUBECTL = """#!{python}
import json, os, sys
log = os.environ["FAKE_KUBECTL_LOG"]
mode = os.environ.get("FAKE_KUBECTL_MODE", "complete")
stdin = sys.stdin.read() if sys.argv[1] == "create" else None
with open(log, "a") as f:
    f.write(json.dumps({{"args": sys.argv[1:], "stdin": stdin}}) + "\\n")
if mode == "nocluster":
    sys.stderr.write("The connection to the server localhost:8080 was refused\\n")
    sys.exit(1)
cmd = sys.argv[1]
if cmd == "get":
    if mode == "running":
        print(json.dumps({{"status": {{"active": 1}}}}))
    else:
        kind = "Complete" if mode == "complete" else "Failed"
        condition = {{"type": kind, "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "pod failed"}}
        print(json.dumps({{"status": {{"conditions": [condition]}}}}))
elif cmd == "logs":
    print("hello from the job")
"""


@pytest.fixture
def fake_kubectl(tmp_path, monkeypatch):
    bindir = tmp_path / "kbin"
    bindir.mkdir()
    script = bindir / "kubectl"
    script.write_text(FAKE_KUBECTL.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "kubectl.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(log))
    monkeypatch.setattr(executors, "K8S_POLL_SECONDS", 0.05)

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def test_container_k8s_job_flow(tmp_path, fake_kubectl):
    result = execute(
        task("container", {"image": "busybox", "command": ["echo", "hi"], "namespace": "jobs"}, timeout=120),
        {"x": 1},
        meta("Build_Step", run_id="0f3c9a1e-1111-2222-3333-444455556666", attempt=2),
        settings=make_settings(tmp_path, WORKFLOW_CONTAINER_MODE="k8s"),
    )
    assert result == {"exit_code": 0, "logs": "hello from the job\n"}
    calls = fake_kubectl()
    assert [c["args"][0] for c in calls] == ["create", "get", "logs", "delete"]
    manifest = json.loads(calls[0]["stdin"])
    name = manifest["metadata"]["name"]
    assert name.startswith("pmx-build-step-0f3c9a1e-2-") and len(name) <= 63
    assert manifest["metadata"]["namespace"] == "jobs"
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["activeDeadlineSeconds"] == 120
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["echo", "hi"]
    assert {"name": "PRIORITYMAX_PAYLOAD", "value": '{"x": 1}'} in pod["containers"][0]["env"]
    assert calls[3]["args"][:3] == ["delete", "job", name]
    assert all("jobs" in c["args"] for c in calls)


def test_container_k8s_failed_job_and_no_cluster(tmp_path, fake_kubectl, monkeypatch):
    settings = make_settings(tmp_path, WORKFLOW_CONTAINER_MODE="k8s")
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "failed")
    with pytest.raises(ExecutorError, match="failed: BackoffLimitExceeded: pod failed: hello from the job"):
        execute(task("container", {"image": "busybox"}), {}, meta(), settings=settings)
    assert fake_kubectl()[-1]["args"][0] == "delete"
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "nocluster")
    with pytest.raises(ExecutorError, match="kubectl create failed .*localhost:8080 was refused"):
        execute(task("container", {"image": "busybox"}), {}, meta(), settings=settings)


def test_container_k8s_timeout_deletes_the_job(tmp_path, fake_kubectl, monkeypatch):
    monkeypatch.setenv("FAKE_KUBECTL_MODE", "running")
    with pytest.raises(NodeTimeout, match="exceeded its timeout of 0.5 s"):
        execute(
            task("container", {"image": "busybox"}, timeout=0.5),
            {},
            meta(),
            settings=make_settings(tmp_path, WORKFLOW_CONTAINER_MODE="k8s"),
        )
    assert fake_kubectl()[-1]["args"][0] == "delete"


def test_job_manifest_without_timeout_or_command():
    manifest = job_manifest("pmx-x-1", "default", "img", None, {}, {"node_id": "x"}, None)
    assert "activeDeadlineSeconds" not in manifest["spec"]
    assert "args" not in manifest["spec"]["template"]["spec"]["containers"][0]
