"""The user's Dagster entry points, for real: ``dagster-daemon run``, ``dagster job launch`` and
``dagster-webserver -w workspace.yaml``, each a subprocess on a data home of this module's own.

The job launched is a stored workflow (``start -> noop -> end``), which the code location exposes as
``wf_<id>_v1``; the launch goes through the run queue, so the daemon must dequeue it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import httpx
import pytest

from orchestration.instance import initialize_dagster_home
from orchestration.workflows.compile import job_name
from orchestration.workflows.store import WorkflowStore
from pmx.processes import group_alive
from prioritymax.settings import REPO_ROOT, Settings
from tests.api.conftest import free_port, start_server, stop_server, wait_until_answers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
WORKSPACE = str(REPO_ROOT / "workspace.yaml")
QUICK_SPEC = {
    "name": "launch-test",
    "nodes": [{"node_id": "start", "type": "start"},
              {"node_id": "work", "type": "task",
               "template": {"executor": "python", "config": {"callable": "workflows.tasks:noop"}}},
              {"node_id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "work"}, {"source": "work", "target": "end"}],
}
JOBS_QUERY = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name jobs { name } } } } }"


class Location:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.dagster_home = home / "dagster"
        self.env = {**os.environ, "PRIORITYMAX_HOME": str(home), "DAGSTER_HOME": str(self.dagster_home)}
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.web_url = ""
        self.workflow_id = ""

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        self.logs[name] = self.home / f"{name}.log"
        with self.logs[name].open("wb") as log:
            process = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], cwd=REPO_ROOT, env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT, process_group=0)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def stop(self, name: str, timeout: float = 30) -> int | None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None


@pytest.fixture(scope="module")
def location(tmp_path_factory):
    """A data home with one stored workflow; ``dagster-daemon run`` and ``dagster-webserver`` on it,
    started together (each costs seconds of start-up)."""
    home = tmp_path_factory.mktemp("launch") / "home"
    running = Location(home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIORITYMAX_HOME", str(home))
        patch.delenv("DAGSTER_HOME", raising=False)
        settings = Settings().layout_home()
    # Its storages are created here once: Dagster processes racing on a fresh home can break them.
    assert initialize_dagster_home(settings) == running.dagster_home
    running.workflow_id = WorkflowStore.from_settings(settings).create(QUICK_SPEC, "test")["workflow_id"]

    running.start("daemon", "dagster-daemon", "run", "-w", WORKSPACE)
    port = free_port()
    web = running.start("webserver", "dagster-webserver", "-w", WORKSPACE, "-h", "127.0.0.1", "-p", str(port))
    running.web_url = f"http://127.0.0.1:{port}"
    wait_until_answers(f"{running.web_url}/server_info", web, "dagster-webserver", 180,
                       log=lambda: running.log("webserver"))
    yield running
    for name in running.processes:
        running.stop(name)


def test_webserver_answers_and_lists_the_code_locations_jobs(location):
    info = httpx.get(f"{location.web_url}/server_info", timeout=10).json()
    assert info["dagster_webserver_version"] == dg.__version__
    answer = httpx.post(f"{location.web_url}/graphql", json={"query": JOBS_QUERY}, timeout=60).json()
    jobs = {job["name"] for repo in answer["data"]["repositoriesOrError"]["nodes"] for job in repo["jobs"]}
    assert job_name(location.workflow_id, 1) in jobs


def test_full_pipeline_job_is_in_the_code_location(location):
    answer = httpx.post(f"{location.web_url}/graphql", json={"query": JOBS_QUERY}, timeout=60).json()
    jobs = {job["name"] for repo in answer["data"]["repositoriesOrError"]["nodes"] for job in repo["jobs"]}
    assert "full_pipeline_job" in jobs


def test_dagster_job_launch_runs_through_the_queue_and_the_daemon(location):
    run_id = str(uuid.uuid4())
    job = job_name(location.workflow_id, 1)
    launched = subprocess.run([str(BIN / "dagster"), "job", "launch", "-j", job, "-w", WORKSPACE,
                               "--run-id", run_id], cwd=REPO_ROOT, env=location.env, capture_output=True,
                              text=True, timeout=300)
    assert launched.returncode == 0, launched.stdout + launched.stderr

    instance = dg.DagsterInstance.from_config(str(location.dagster_home))
    deadline = time.monotonic() + 240
    run = instance.get_run_by_id(run_id)
    while run is None or not run.is_finished:
        assert location.processes["daemon"].poll() is None, location.log("daemon")
        assert time.monotonic() < deadline, f"run {run_id} still {run and run.status} after 240 s"
        time.sleep(0.5)
        run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, location.log("daemon")[-3000:]
    assert run.job_name == job
    # Enqueued by the launch, then started by the daemon.
    kinds = [event.dagster_event.event_type
             for event in instance.all_logs(run_id) if event.dagster_event is not None]
    assert kinds.index(dg.DagsterEventType.RUN_ENQUEUED) < kinds.index(dg.DagsterEventType.RUN_START)
    # The workflow store has the run too (the code location's recorder), under the same run id.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIORITYMAX_HOME", str(location.home))
        store = WorkflowStore.from_settings(Settings())
    assert store.run(run_id)["workflow_id"] == location.workflow_id
    ended = [event["node_id"] for event in store.run_events(run_id) if event["type"] == "node_end"]
    assert ended == ["start", "work", "end"]
    # No API runner saw this run end: the daemon's workflow_runs_sensor closes its record.
    deadline = time.monotonic() + 120
    while store.run(run_id)["status"] != "COMPLETED":
        status = store.run(run_id)["status"]
        assert time.monotonic() < deadline, f"record still {status}: " + location.log("daemon")[-2000:]
        time.sleep(1)
    assert store.run_events(run_id)[-1]["type"] == "run_completed"


def test_the_admin_api_launches_training_through_dagster(location):
    """POST /admin/training/{job} goes through the webserver's GraphQL and the run queue: the run is
    an ordinary Dagster run, whose status and event log the API reads back, and cancels."""
    api = start_server(location.home, {"PRIORITYMAX_DAGSTER_URL": location.web_url,
                                       "DAGSTER_HOME": str(location.dagster_home)})
    try:
        with api.client("operator") as operator:
            # canary_gate_job with no candidates from an earlier run: it runs, and fails fast.
            launched = operator.post("/admin/training/canary_gate_job", json={}, timeout=120)
            assert launched.status_code == 202, launched.text
            run_id = launched.json()["run_id"]
            assert launched.json()["launched_by"] == "test-operator"
            assert launched.json()["dagster_url"] == f"{location.web_url}/runs/{run_id}"
            deadline = time.monotonic() + 240
            while not (run := operator.get(f"/admin/training/runs/{run_id}").json())["finished"]:
                assert time.monotonic() < deadline, f"{run['status']}: " + location.log("daemon")[-2000:]
                time.sleep(1)
            logs = operator.get(f"/admin/training/runs/{run_id}/logs").json()
            events = [entry["event"] for entry in logs["entries"]]
            assert events.index("PIPELINE_ENQUEUED") < events.index("PIPELINE_START"), events
            assert logs["status"] == run["status"] and logs["next"] == len(logs["entries"])
            later = operator.get(f"/admin/training/runs/{run_id}/logs", params={"after": 2}).json()
            assert later["entries"][0]["index"] == 2
            assert run_id in [r["run_id"] for r in operator.get("/admin/training/runs").json()]
            assert operator.post(f"/admin/training/runs/{run_id}/cancel").status_code == 409

            bad = operator.post("/admin/training/train_rl_job", json={"run_config": {"ops": {"nope": {}}}})
            assert bad.status_code == 422 and "nope" in bad.text

            training = operator.post("/admin/training/train_rl_job", json={}, timeout=120).json()
            # Cancelled once started: a cancel while the daemon dequeues it races in Dagster itself
            # (dagster#3323; the API then terminates the run when it starts, which ends FAILURE).
            deadline = time.monotonic() + 180
            status_url = f"/admin/training/runs/{training['run_id']}"
            while (run := operator.get(status_url).json())["status"] != "STARTED":
                assert time.monotonic() < deadline and not run["finished"], f"{run['status']}, not STARTED"
                time.sleep(0.5)
            cancelled = operator.post(f"/admin/training/runs/{training['run_id']}/cancel")
            assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"]
            deadline = time.monotonic() + 180
            while not (run := operator.get(f"/admin/training/runs/{training['run_id']}").json())["finished"]:
                assert time.monotonic() < deadline, f"run still {run['status']} after a cancel"
                time.sleep(1)
            assert run["status"] == "CANCELED"
        instance = dg.DagsterInstance.from_config(str(location.dagster_home))
        assert instance.get_run_by_id(run_id).job_name == "canary_gate_job"  # the UI's runs too
    finally:
        stop_server(api)


def test_daemon_and_webserver_stop_on_sigterm(location):
    for name in ("daemon", "webserver"):
        process = location.processes[name]
        assert process.poll() is None, location.log(name)
        code = location.stop(name)
        assert code is not None, f"{name} ignored SIGTERM for 30 s"
        deadline = time.monotonic() + 10
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group_alive(process.pid), f"{name}'s code server outlived it"
