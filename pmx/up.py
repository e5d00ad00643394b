"""``pmx up``: every long-running face of the workbench under one small supervisor.

It lays out the data home, checks that every port is free (nothing starts otherwise), writes
DAGSTER_HOME's ``dagster.yaml`` when missing and creates the instance's storages (once, before any
Dagster process starts), starts each service in :data:`SERVICES` as a child process, waits until
each answers, prints where everything is, launches ``full_pipeline_job`` once through ``dagster job
launch`` (so the run goes through the queue and shows in the UI), and then waits, reporting how that
run ends.

- Each child runs in its own process group, so a terminal's Ctrl-C reaches only the supervisor,
  which then stops the children: SIGTERM to each group, last started first (a group holds a service
  and what it spawned: Dagster's code servers and run workers, so a run in progress ends FAILURE
  rather than stuck STARTED), a second signal to what still runs after :data:`HURRY_SECONDS`, up to
  :data:`STOP_GRACE_SECONDS` for all of them to exit, then SIGKILL for whatever is left. Ctrl-C or
  SIGTERM exits 0.
- The supervisor handles SIGINT and SIGTERM itself before it starts anything, and a handled signal
  reverts to the default in an exec'd child; so the children stop on SIGINT and SIGTERM even when
  ``pmx up`` was started with SIGINT ignored (a background job of a non-interactive shell, where
  ``dagster dev`` would survive SIGTERM: ../shared/STACK.md).
- A child that exits on its own is reported by name with the end of its log; the others are
  stopped and ``pmx up`` exits 1.
- Children write to ``<home>/logs/up/<service>.log`` (each start begins a fresh file).

What it runs is :data:`pmx.services.SERVICES` (one line per service); the process helpers are in
:mod:`pmx.processes`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from pmx.processes import group_alive, http_ok, tail
from pmx.services import SERVICES, Service
from prioritymax.ports import IN_USE, WILDCARD_HOSTS, bind_problem
from prioritymax.settings import REPO_ROOT, Settings, get_settings

WORKSPACE = REPO_ROOT / "workspace.yaml"
PIPELINE_JOB = "full_pipeline_job"
START_TIMEOUT_SECONDS = 300
STOP_GRACE_SECONDS = 10.0
HURRY_SECONDS = 4.0
LAUNCH_TIMEOUT_SECONDS = 300
POLL_SECONDS = 0.25


class Stop(Exception):
    """Raised inside the supervisor when it must stop: a signal, or a child that died."""

    def __init__(self, code: int) -> None:
        self.code = code


@dataclass
class Child:
    service: Service
    process: subprocess.Popen
    log_path: Path
    started: float
    port: int | None
    ready: bool = False


@dataclass
class Supervisor:
    settings: Settings
    host: str
    ports: dict[str, int]
    services: list[Service]
    children: list[Child] = field(default_factory=list)
    #: ``dagster job launch`` while it runs (stopped with the children).
    launcher: subprocess.Popen | None = None
    stop_signal: int | None = None
    #: Run config files for the pipeline's launch (``dagster job launch -c``): a smaller budget, say.
    pipeline_config: tuple[Path, ...] = ()
    #: JupyterLab's token (kept in the secrets folder, so a bookmarked URL keeps working).
    jupyter_token: str = ""
    _instance: Any = None

    # ------------------------------------------------------------------------ environment
    @property
    def log_dir(self) -> Path:
        return self.settings.logs_dir / "up"

    @property
    def env(self) -> dict[str, str]:
        # The children must agree with this process on the data home whatever their working folder,
        # and Dagster's runs publish promotions to the API started here (unless told otherwise).
        env = {**os.environ, "PRIORITYMAX_HOME": str(self.settings.home),
               "DAGSTER_HOME": str(self.settings.dagster_home)}
        for name, variable in (("api", "PRIORITYMAX_API_URL"),
                               ("dagster-webserver", "PRIORITYMAX_DAGSTER_URL"),
                               ("autoscaler", "PRIORITYMAX_AUTOSCALER_URL")):
            service = next((s for s in self.services if s.name == name), None)
            if service is not None and variable not in os.environ:
                env[variable] = self.url(self.ports[service.port_param], connect=True)
        return env

    @property
    def workspace(self) -> Path:
        """The workspace the UI, the daemon and ``dagster job launch`` load: with the code server,
        one written into DAGSTER_HOME that points at it (:meth:`write_workspace`)."""
        if any(service.name == "code-server" for service in self.services):
            return self.settings.dagster_home / "workspace.yaml"
        return WORKSPACE

    def write_workspace(self) -> None:
        if self.workspace == WORKSPACE:
            return
        host = WILDCARD_HOSTS.get(self.host, self.host)
        self.workspace.write_text(
            "# Written by `pmx up` at each start: the code server it runs (see workspace.yaml for the\n"
            "# code location loaded in-process, as `dagster dev -w workspace.yaml` does).\n"
            "load_from:\n  - grpc_server:\n"
            f"      host: \"{host}\"\n      port: {self.ports['code_server_port']}\n"
            "      location_name: orchestration.definitions\n")

    @property
    def instance(self):
        if self._instance is None:
            import dagster as dg

            self._instance = dg.DagsterInstance.from_config(str(self.settings.dagster_home))
        return self._instance

    def url(self, port: int, path: str = "", *, connect: bool = False, scheme: str = "http") -> str:
        """A service's URL on the host it listens on; ``connect``: one this machine can connect to
        (a wildcard host becomes the loopback address)."""
        host = WILDCARD_HOSTS.get(self.host, self.host) if connect else self.host
        return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}{path}"

    def say(self, message: str) -> None:
        click.echo(message, err=True)

    # ------------------------------------------------------------------------ ports
    def taken_ports(self) -> list[str]:
        """A message for each port that is in use (or given to two services)."""
        problems, seen = [], {}
        for service in self.services:
            if service.port_param is None:
                continue
            port = self.ports[service.port_param]
            if port in seen:
                problems.append(f"port {port} is given to both {seen[port].title} and {service.title}; "
                                f"pass {service.port_flag} PORT with another port")
                continue
            seen[port] = service
            reason = bind_problem(self.host, port)
            if reason is not None:
                problems.append(f"port {port} on {self.host} ({service.title}) {reason}; "
                                f"stop what uses it or pass {service.port_flag} PORT"
                                if reason == IN_USE else
                                f"cannot listen on {self.host}:{port} ({service.title}): {reason}")
        return problems

    # ------------------------------------------------------------------------ children
    def spawn(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            return subprocess.Popen(argv, cwd=REPO_ROOT, env={**self.env, **(env or {})},
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    process_group=0)

    def start(self, service: Service) -> Child:
        port = self.ports.get(service.port_param) if service.port_param else None
        fields = {"python": sys.executable, "bin": str(Path(sys.executable).parent), "repo": str(REPO_ROOT),
                  "host": self.host, "port": str(port), "workspace": str(self.workspace)}
        argv = [part.format(**fields) for part in service.argv]
        log_path = self.log_dir / f"{service.name}.log"
        started = time.time()
        env = service.env(self) if service.env is not None else None
        child = Child(service, self.spawn(argv, log_path, env), log_path, started, port)
        self.children.append(child)
        self.say(f"started {service.name} (pid {child.process.pid}), log: {log_path}")
        return child

    def is_ready(self, child: Child) -> bool:
        if child.service.ready is not None:
            try:
                return child.service.ready(self, child.started)
            except Exception:  # the instance may be mid-creation by the child
                return False
        if child.service.ready_path is None or child.port is None:
            return True
        return http_ok(self.url(child.port, child.service.ready_path, connect=True))

    def check(self) -> None:
        """Raise :class:`Stop` on a signal or when a child has exited on its own."""
        if self.stop_signal is not None:
            self.say(f"{signal.Signals(self.stop_signal).name}: stopping")
            raise Stop(0)
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                self.say(f"{child.service.name} exited on its own (exit status {code}); stopping the rest. "
                         f"The end of its log ({child.log_path}):\n{tail(child.log_path)}")
                raise Stop(1)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(POLL_SECONDS, left))

    def wait_ready(self, names: Iterable[str] | None = None) -> None:
        """Wait until the children named (all of them by default) answer."""
        names = set(names) if names is not None else None
        children = [child for child in self.children if names is None or child.service.name in names]
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            waiting = [child for child in children if not child.ready]
            for child in waiting:
                child.ready = self.is_ready(child)
                if child.ready:
                    self.say(f"{child.service.name} is ready ({time.time() - child.started:.1f} s)")
            if all(child.ready for child in children):
                return
            if time.monotonic() > deadline:
                late = [child for child in children if not child.ready]
                self.say("; ".join(f"{child.service.name} did not answer within {START_TIMEOUT_SECONDS} s "
                                   f"(log: {child.log_path})" for child in late))
                raise Stop(1)
            self.sleep(0.5)

    def stop_all(self) -> None:
        """SIGTERM every child's process group (last started first); SIGINT to the groups still
        running after :data:`HURRY_SECONDS` (uvicorn, under the API and the Dagster UI, waits for
        open connections on the first signal and exits at once on a second one); SIGKILL what is
        left after :data:`STOP_GRACE_SECONDS`."""
        processes = ([self.launcher] if self.launcher is not None else []) + \
            [child.process for child in reversed(self.children)]
        groups = [process.pid for process in processes]
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)
        started = time.monotonic()
        hurried = False
        while time.monotonic() < started + STOP_GRACE_SECONDS:
            for process in processes:
                process.poll()  # reap our own children
            alive = [group for group in groups if group_alive(group)]
            if not alive:
                break
            if not hurried and time.monotonic() > started + HURRY_SECONDS:
                hurried = True
                for group in alive:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(group, signal.SIGINT)
            time.sleep(POLL_SECONDS)
        for group in groups:
            if group_alive(group):
                self.say(f"process group {group} did not stop within {STOP_GRACE_SECONDS:.0f} s: SIGKILL")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_GRACE_SECONDS)

    # ------------------------------------------------------------------------ the pipeline
    def launch_pipeline(self) -> str | None:
        """``dagster job launch`` the full pipeline once (through the queue); its run id, or None."""
        run_id = str(uuid.uuid4())
        argv = [str(Path(sys.executable).parent / "dagster"), "job", "launch", "-j", PIPELINE_JOB,
                "-w", str(self.workspace), "--run-id", run_id,
                "--tags", json.dumps({"prioritymax/launched_by": "pmx up"})]  # the dashboard shows who
        for path in self.pipeline_config:
            argv += ["-c", str(path)]
        log_path = self.log_dir / "pipeline-launch.log"
        self.launcher = process = self.spawn(argv, log_path)
        deadline = time.monotonic() + LAUNCH_TIMEOUT_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            self.sleep(0.5)
        if process.poll() is None:
            self.say(f"dagster job launch did not finish within {LAUNCH_TIMEOUT_SECONDS} s (log: {log_path})")
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.launcher = None
        if process.returncode != 0:
            self.say(f"could not launch {PIPELINE_JOB} (exit status {process.returncode}); the services "
                     f"keep running. The end of {log_path}:\n{tail(log_path)}")
            return None
        return run_id

    def run_status(self, run_id: str) -> str | None:
        try:
            run = self.instance.get_run_by_id(run_id)
        except Exception:
            return None
        return run.status.value if run is not None else None

    # ------------------------------------------------------------------------ the whole
    def serve(self, pipeline: bool) -> int:
        for service in self.services:
            if service.needs:
                self.wait_ready(service.needs)
            self.start(service)
        self.wait_ready()
        self.banner()
        run_id = None
        if pipeline:  # up() passes pipeline only with the Dagster services
            run_id = self.launch_pipeline()
            if run_id is not None:
                web = next((c.port for c in self.children if c.service.name == "dagster-webserver"), None)
                where = f": {self.url(web, f'/runs/{run_id}')}" if web else ""
                self.say(f"launched {PIPELINE_JOB}, run {run_id}{where}")
        finished = run_id is None
        while True:
            self.sleep(2.0)
            if not finished:
                status = self.run_status(run_id)
                if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                    self.say(f"{PIPELINE_JOB} run {run_id}: {status}")
                    finished = True

    def banner(self) -> None:
        rows = []
        for child in self.children:
            service = child.service
            where = (self.url(child.port, service.url_path, scheme=service.scheme)
                     if child.port is not None else "running")
            rows.append((service.title, where + (f"  ({service.note})" if service.note else "")))
        token = "$PRIORITYMAX_ADMIN_TOKEN" if self.settings.admin_token else self.settings.admin_token_path
        rows.append(("admin token", f"{token}  (Authorization: Bearer <token> on the API)"))
        if self.jupyter_token:
            rows.append(("JupyterLab token", f"{self.jupyter_token_path}  (or open the link below)"))
        if any(child.service.group == "dagster" for child in self.children):
            rows.append(("DAGSTER_HOME", str(self.settings.dagster_home)))
        rows.append(("logs", f"{self.log_dir}/"))
        width = max(len(title) for title, _ in rows) + 2
        lines = ["PriorityMax Workbench is up (Ctrl-C stops everything):"]
        lines += [f"  {title:<{width}}{text}" for title, text in rows]
        jupyter = next((c for c in self.children if c.service.name == "jupyter"), None)
        if jupyter is not None:
            link = f"{self.url(jupyter.port, '/lab')}?token={self.jupyter_token}"
            lines.append(f"  JupyterLab with its token: {link}")
        self.say("\n".join(lines))

    @property
    def jupyter_token_path(self) -> Path:
        return self.settings.secrets_dir / "jupyter.token"

    def ensure_jupyter_token(self) -> None:
        """JupyterLab's token: made once (0600, beside the admin token) and reused at each start."""
        path = self.jupyter_token_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as sink:
                sink.write(secrets.token_urlsafe(24))
        self.jupyter_token = path.read_text().strip()

    def handle_signal(self, signum: int, _frame) -> None:
        self.stop_signal = signum


def up(host: str, ports: dict[str, int], pipeline: bool, dagster: bool, jupyter: bool = True,
       replay: bool = True, pipeline_config: tuple[Path, ...] = ()) -> int:
    """Run the supervisor; returns the exit status."""
    from orchestration.instance import ensure_dagster_home, initialize_dagster_home

    settings = get_settings().layout_home()
    wanted = {"dagster": dagster, "jupyter": jupyter, "replay": replay}
    left_out = {group for group, on in wanted.items() if not on}
    services = [s for s in SERVICES if s.group not in left_out]
    supervisor = Supervisor(settings, host, ports, services, pipeline_config=pipeline_config)
    problems = supervisor.taken_ports()
    if problems:
        for problem in problems:
            supervisor.say(f"Error: {problem}")
        return 1
    # The API makes the first admin token at its start; the autoscaler worker, started beside it,
    # reads it (settings.api_client_token) to follow the API, so it is made here first.
    from api.security import ensure_admin_token
    from prioritymax.db import engine_for

    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    ensure_admin_token(engine_for(settings.db_url), settings.secrets_dir, admin)
    if dagster:
        supervisor.say("preparing the Dagster instance in " + str(settings.dagster_home))
        initialize_dagster_home(settings)
        supervisor.write_workspace()
    else:
        ensure_dagster_home(settings)
    if jupyter:
        supervisor.ensure_jupyter_token()
    # Handled (not ignored) before any child exists: an exec'd child starts with both at the default.
    previous = {signum: signal.signal(signum, supervisor.handle_signal)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return supervisor.serve(pipeline and dagster)
    except Stop as stop:
        return stop.code
    finally:
        supervisor.stop_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if supervisor.children:
            supervisor.say("stopped: " + ", ".join(child.service.name for child in supervisor.children))


def _port_options(command: Callable) -> Callable:
    for service in reversed(SERVICES):
        if service.port_flag:
            command = click.option(service.port_flag, service.port_param, default=service.default_port,
                                   show_default=True, type=click.IntRange(1, 65535),
                                   help=f"port of the {service.title}")(command)
    return command


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True, help="address every service listens on")
@_port_options
@click.option("--no-pipeline", is_flag=True, help=f"do not launch {PIPELINE_JOB} once everything is up")
@click.option("--no-dagster", is_flag=True, help="leave the Dagster code server, webserver and daemon out")
@click.option("--no-jupyter", is_flag=True, help="leave JupyterLab out")
@click.option("--no-replay", is_flag=True, help="do not replay a trace through the autoscaler worker")
@click.option("--pipeline-config", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"a run config YAML for {PIPELINE_JOB} (its budget resource, say); repeatable")
def up_command(host: str, no_pipeline: bool, no_dagster: bool, no_jupyter: bool, no_replay: bool,
               pipeline_config: tuple[Path, ...], **ports: int) -> None:
    """Start the API, the autoscaler worker, the dashboard, JupyterLab, the Dagster UI and daemon;
    launch the full pipeline once; Ctrl-C stops all."""
    code = up(host, ports, pipeline=not no_pipeline, dagster=not no_dagster, jupyter=not no_jupyter,
              replay=not no_replay, pipeline_config=pipeline_config)
    if code:
        sys.exit(code)  # (click.exceptions.Exit is returned, not raised, under standalone_mode=False)
