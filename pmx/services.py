"""What ``pmx up`` runs: one :class:`Service` line each in :data:`SERVICES`, in start order (stopped
in reverse), with the checks that say when each answers. Adding a service is one line here; a
service with a ``port_flag`` gets that command-line option by itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prioritymax.ports import WILDCARD_HOSTS

if TYPE_CHECKING:
    from pmx.up import Supervisor


@dataclass(frozen=True)
class Service:
    """One child process of ``pmx up``.

    ``argv`` items are formatted with ``{python}`` (this interpreter), ``{bin}`` (its scripts
    folder), ``{repo}`` (the repository root), ``{host}``, ``{port}`` and ``{workspace}``.
    ``ready_path`` is an HTTP path that answers 2xx once the service is up; ``ready`` a custom check
    instead (called with the :class:`Supervisor` and the child's start time). ``group`` lets a flag
    leave services out (``--no-dagster``, ``--no-jupyter``).
    """

    name: str
    title: str
    argv: tuple[str, ...]
    port_flag: str | None = None
    default_port: int | None = None
    ready_path: str | None = None
    url_path: str = ""
    note: str = ""
    group: str = "core"
    ready: Callable[[Supervisor, float], bool] | None = None
    #: Services that must answer before this one starts (the Dagster UI and daemon load the code
    #: server's location once at their start).
    needs: tuple[str, ...] = ()
    #: How its URL is written in the banner (the code server speaks gRPC, not HTTP).
    scheme: str = "http"
    #: Extra environment for this child only (a secret it alone needs, say), from the supervisor.
    env: Callable[[Supervisor], dict[str, str]] | None = None

    @property
    def port_param(self) -> str | None:
        return self.port_flag.lstrip("-").replace("-", "_") if self.port_flag else None


def code_server_ready(supervisor: Supervisor, started: float) -> bool:
    """The code server is ready once it lists its repositories (it binds its port before the
    definitions are loaded, and answers with an error while loading fails)."""
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._grpc.types import ListRepositoriesResponse
    from dagster_shared.serdes import deserialize_value

    port = supervisor.ports["code_server_port"]
    client = DagsterGrpcClient(port=port, host=WILDCARD_HOSTS.get(supervisor.host, supervisor.host))
    return isinstance(deserialize_value(client.list_repositories()), ListRepositoriesResponse)


def jupyter_env(supervisor: Supervisor) -> dict[str, str]:
    """JupyterLab reads its token from JUPYTER_TOKEN (kept out of ``ps``); only its child gets it.
    Its runtime files (cookie secret, kernel connection files) stay in the data home. The notebooks
    get a data home of their own (``<home>/notebooks``: its own MLflow registry, database, Dagster
    instance), so what they train and register never competes with the pipeline's champions."""
    notebooks_home = supervisor.settings.home / "notebooks"
    return {"JUPYTER_TOKEN": supervisor.jupyter_token,
            "JUPYTER_RUNTIME_DIR": str(supervisor.settings.home / "jupyter" / "runtime"),
            "PRIORITYMAX_HOME": str(notebooks_home), "DAGSTER_HOME": str(notebooks_home / "dagster")}


def dagster_daemon_ready(supervisor: Supervisor, started: float) -> bool:
    """The daemon is up once each of its required daemons has a heartbeat since it started."""
    heartbeats = supervisor.instance.get_daemon_heartbeats()
    required = supervisor.instance.get_required_daemon_types()
    return all(kind in heartbeats and heartbeats[kind].timestamp >= started - 1 for kind in required)


#: What ``pmx up`` runs, in start order (stopped in reverse). One line per service.
SERVICES: list[Service] = [
    Service("api", "API",
            ("{python}", "-m", "uvicorn", "api.main:app", "--host", "{host}", "--port", "{port}"),
            port_flag="--api-port", default_port=8000, ready_path="/config/health", url_path="/docs",
            note="config control plane and workflows; health: /config/health"),
    Service("autoscaler", "Autoscaler worker",
            ("{python}", "-m", "pmx.cli", "autoscaler", "--host", "{host}", "--port", "{port}"),
            port_flag="--autoscaler-port", default_port=8100, ready_path="/autoscaler/health",
            url_path="/autoscaler/health", note="decisions: POST /autoscaler/decide; follows the API"),
    Service("replay", "Trace replay",
            ("{python}", "-m", "pmx.cli", "replay", "--speed", "60", "--quiet"),
            note="the NASA trace's held-out days through the worker, an hour a minute: Autoscaler page",
            group="replay", needs=("autoscaler",)),
    Service("dashboard", "Dashboard",
            ("{python}", "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
             "--server.address", "{host}", "--server.port", "{port}", "--browser.gatherUsageStats", "false"),
            port_flag="--dashboard-port", default_port=8501, ready_path="/_stcore/health",
            note="runs, models, config and flags, workflows"),
    Service("jupyter", "JupyterLab",
            ("{python}", "-m", "jupyterlab", "--no-browser", "--ip", "{host}", "--port", "{port}",
             "--ServerApp.root_dir={repo}/notebooks", "--ServerApp.port_retries=0",
             # as root in a container; and no news or update checks from a machine that may be offline
             "--allow-root", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.news_url=None"),
            port_flag="--jupyter-port", default_port=8888, ready_path="/api", url_path="/lab",
            note="the notebooks; token below", group="jupyter", env=jupyter_env),
    # One standing code server that the UI, the daemon and the runs share: without it the daemon
    # starts a fresh one every minute and the old one quits with a warning.
    Service("code-server", "Dagster code",
            ("{bin}/dagster", "code-server", "start", "-m", "orchestration.definitions", "-d", "{repo}",
             "-h", "{host}", "-p", "{port}"),
            port_flag="--code-server-port", default_port=4000, scheme="grpc",
            note="the code location the UI, the daemon and runs load", group="dagster",
            ready=code_server_ready),
    Service("dagster-webserver", "Dagster UI",
            ("{bin}/dagster-webserver", "-w", "{workspace}", "-h", "{host}", "-p", "{port}"),
            port_flag="--dagster-port", default_port=3000, ready_path="/server_info", group="dagster",
            needs=("code-server",)),
    Service("dagster-daemon", "Dagster daemon", ("{bin}/dagster-daemon", "run", "-w", "{workspace}"),
            note="schedules, sensors, the run queue", group="dagster", ready=dagster_daemon_ready,
            needs=("code-server",)),
]
