"""The notebooks in ``notebooks/``: committed without outputs, and each one runs top to bottom.

Each notebook is executed with nbclient in a kernel whose working directory is the repository root,
in a fresh data home (``PRIORITYMAX_HOME`` in a temporary folder, no ``MLFLOW_TRACKING_URI``) with
``PRIORITYMAX_NOTEBOOK_BUDGET=small``, and its closing summary (a JSON display whose ``notebook``
field names it) is checked. A notebook that starts the API must also stop it: no process of its data
home may outlive the run.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from prioritymax.settings import REPO_ROOT
from tests.processes import processes_on

NOTEBOOKS = REPO_ROOT / "notebooks"
NAMES = ("01_predictor", "02_rl_autoscaler", "03_config_plane", "04_workflows")
KERNEL = "python3"
#: A hung kernel's ceiling, not a speed check: 02's evaluation cell tunes the rules twice (~40 s
#: on a quiet machine) and took over 240 s beside other heavy tests on 2 cores.
CELL_TIMEOUT_S = 600
PLOTLY = "application/vnd.plotly.v1+json"
#: Variables that would point a notebook away from its fresh data home, or at other services.
OVERRIDES = ("MLFLOW_TRACKING_URI", "PRIORITYMAX_DB_URL", "DAGSTER_HOME", "CONFIG_META_DIR",
             "FERNET_KEY_PATH", "FERNET_KEY", "WORKFLOWS_META_DIR", "REDIS_URL", "PRIORITYMAX_ADMIN_TOKEN",
             "PRIORITYMAX_ANONYMOUS_ROLE", "SLACK_WEBHOOK_URL", "S3_BUCKET", "RAY_ADDRESS")


def path_of(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


# ------------------------------------------------------------------------------ committed files
@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_stripped(name):
    notebook = nbformat.read(path_of(name), as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == KERNEL
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code cell"
    for index, cell in enumerate(code):
        assert cell.outputs == [], f"{name}: code cell {index} carries outputs"
        assert cell.execution_count is None, f"{name}: code cell {index} has an execution count"
    budget_aware = name in ("01_predictor", "02_rl_autoscaler")
    assert ("PRIORITYMAX_NOTEBOOK_BUDGET" in code[0].source) is budget_aware


# ------------------------------------------------------------------------------------ execution
def _our_interpreter(argv0: str) -> bool:
    """Whether a kernelspec's argv[0] starts this interpreter (jupyter_client maps a bare
    ``python`` to ``sys.executable``)."""
    if argv0 in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return True
    try:
        return Path(argv0).resolve() == Path(sys.executable).resolve()
    except OSError:
        return False


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> str | None:
    """A JUPYTER_PATH entry holding a ``python3`` kernelspec of this interpreter, or None when the
    one Jupyter finds already is (ipykernel's wheel ships it into the venv's share/jupyter). Never
    the user's home: a missing or foreign one is installed into a temporary prefix."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        if _our_interpreter(spec.argv[0]):
            return None
    except NoSuchKernel:
        pass
    prefix = tmp_path_factory.mktemp("jupyter-prefix")
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL],
                   check=True, capture_output=True, text=True)
    return str(prefix / "share" / "jupyter")


def summary_of(notebook, name: str) -> dict:
    """The notebook's closing summary: the JSON display whose ``notebook`` field is its name."""
    for cell in reversed(notebook.cells):
        for output in reversed(cell.get("outputs", [])):
            data = output.get("data", {}).get("application/json")
            if isinstance(data, dict) and data.get("notebook") == name:
                return data
    raise AssertionError(f"{name}: no summary among the outputs")


def plots_in(notebook) -> int:
    return sum(PLOTLY in output.get("data", {})
               for cell in notebook.cells for output in cell.get("outputs", []))


def execute(name: str, home: Path, kernel_path: str | None, monkeypatch) -> tuple[object, float]:
    from nbclient import NotebookClient

    monkeypatch.setenv("PRIORITYMAX_HOME", str(home))
    monkeypatch.setenv("PRIORITYMAX_NOTEBOOK_BUDGET", "small")
    for variable in OVERRIDES:
        monkeypatch.delenv(variable, raising=False)
    if kernel_path:
        monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, (kernel_path,
                                                                          os.environ.get("JUPYTER_PATH")))))
    notebook = nbformat.read(path_of(name), as_version=4)
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, startup_timeout=120,
                            resources={"metadata": {"path": str(REPO_ROOT)}})
    started = time.perf_counter()
    try:
        client.execute()
    finally:
        # The notebook stops what it started; whatever it did not is found and stopped here, then
        # reported below. (Only processes of this test's own temporary data home.)
        deadline = time.monotonic() + 15
        while (left := processes_on(home)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"{name} left processes running in its data home: {left}"
    return notebook, time.perf_counter() - started


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_the_small_budget(name, tmp_path, kernel_path, monkeypatch, record_property):
    home = tmp_path / "home"
    notebook, seconds = execute(name, home, kernel_path, monkeypatch)
    record_property("seconds", round(seconds, 1))
    summary = summary_of(notebook, name)

    if name == "01_predictor":
        assert summary["budget"] == "small" and summary["rows"] > 10_000
        # A fresh registry: the first candidate has no champion to meet, beats both baselines on
        # rows it never saw, passes the gate and is promoted.
        assert summary["gate_passed"] is True
        assert summary["holdout_rmse"] < min(summary["baseline_rmse"].values())
        assert summary["champion"] in (summary["version"], summary["second_version"])
        assert (home / "mlflow" / "mlflow.db").exists()
        assert (home / "logs" / "models_audit.jsonl").read_text().count('"event": "promote"') >= 1
        assert plots_in(notebook) == 1
    elif name == "02_rl_autoscaler":
        assert summary["budget"] == "small" and summary["epochs"] == 30
        for key in ("ppo_reward", "hpa_reward", "improvement_vs_hpa"):
            assert math.isfinite(summary[key]), summary
        assert set(summary["episode_reward"]) == {"PPO", "HPA"}
        assert isinstance(summary["gate_passed"], bool)
        assert plots_in(notebook) == 2
    elif name == "03_config_plane":
        live = summary["live_update"]
        assert live["key"] == "autoscaler.max_workers" and live["value"] == 60
        assert live["client_now_reads"] == 60 and live["org:acme_still_reads"] == 12
        assert 0 < live["latency_ms"] < 5000
        flag = summary["flag_change"]
        assert "autoscaler_loop" in flag["flags_changed"]
        assert flag["org:acme"] is False and flag["reason"] == "TARGETING_MATCH"
        assert summary["published_model_version"] == 2
        assert summary["offline"]["still_reads"] == 60
        assert summary["server_stopped"] is True
    else:
        assert summary["run_status"] == "COMPLETED"
        assert summary["events"][0] == "run_started" and summary["events"][-1] == "run_completed"
        assert "node_retry" in summary["events"] and summary["ledger_attempts"] == 2
        assert summary["problems_in_broken_spec"] >= 5 and summary["broken_spec_create_status"] == 422
        assert summary["replay_matches"] is True
        assert summary["server_stopped"] is True
        assert plots_in(notebook) == 2
