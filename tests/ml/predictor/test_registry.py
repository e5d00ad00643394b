"""Registry, gate and promotion end to end on the embedded MLflow (SQLite in the data home)."""

import json

import pytest

from tests.ml.predictor.test_commands import ok, trainer

pytestmark = pytest.mark.integration


def pmx(home, *args, env: dict[str, str] | None = None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    # No control plane on port 9: promote and rollback say they did not publish (tests/api/autoscaler
    # has them publishing to a live one).
    env = {**os.environ, "PRIORITYMAX_HOME": str(home), "PRIORITYMAX_API_URL": "http://127.0.0.1:9",
           **(env or {})}
    return subprocess.run([str(Path(sys.executable).with_name("pmx")), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def versions():
    """The registry read in-process (the commands under test run as subprocesses)."""
    from ml import registry

    return {row["version"]: row for row in registry.list_versions()}


def test_train_gate_promote_force_and_rollback(data_home, queue_metrics, holdout_metrics):
    home = data_home
    first = ok(trainer(home, "train_predictor", "--data", queue_metrics, "--mlflow"))
    assert first["mlflow"]["model_version"] == "1"
    assert versions()[1]["aliases"] == "challenger"
    assert (home / "mlflow" / "mlflow.db").is_file()
    assert list((home / "mlflow" / "artifacts").rglob("MLmodel"))  # artifacts in the data home

    refused = pmx(home, "models", "promote", "predictor", "1")
    assert refused.returncode == 1 and "gate has not been run" in refused.stderr

    ok(trainer(home, "canary_predictor", "--holdout", holdout_metrics, "--threshold", "1e9"))
    assert versions()[1]["gate"]["passed"] == "True"
    promoted = ok(pmx(home, "models", "promote", "predictor", "1", "--actor", "alice"))
    assert promoted["previous_champion"] is None and promoted["actor"] == "alice"
    assert promoted["published"] == {"published": False, "key": "predictor.model_version",
                                     "status": "not published (no control plane at http://127.0.0.1:9)"}
    assert versions()[1]["aliases"] == "champion"

    worse = home / "models" / "worse.pkl"
    second = ok(trainer(home, "train_predictor", "--data", queue_metrics, "--ckpt", worse,
                        "--mlflow", "--params", '{"min_data_in_leaf": 1000000}'))
    assert second["mlflow"]["model_version"] == "2"
    gate = trainer(home, "canary_predictor", "--ckpt", worse, "--holdout", holdout_metrics,
                   "--threshold", "1e9")
    assert gate.returncode == 1
    assert json.loads(gate.stdout)["champion_version"] == "1"  # found in the registry
    assert versions()[2]["gate"]["passed"] == "False"

    assert "gate has failed" in pmx(home, "models", "promote", "predictor", "2").stderr
    assert "admins only" in pmx(home, "models", "promote", "predictor", "2", "--force").stderr
    forced = ok(pmx(home, "models", "promote", "predictor", "2", "--force", "--role", "admin",
                    "--actor", "root", "--reason", "drill"))
    assert forced["forced"] is True and forced["previous_champion"] == "1"
    assert versions()[2]["aliases"] == "champion"

    rolled = ok(pmx(home, "models", "rollback", "predictor", "--actor", "bob"))
    assert rolled["version"] == "1" and rolled["from_version"] == "2"
    assert versions()[1]["aliases"] == "champion"

    audit = [json.loads(line) for line in (home / "logs" / "models_audit.jsonl").read_text()
             .splitlines()]
    assert [(a["event"], a["version"], a["actor"]) for a in audit] == [
        ("promote", "1", "alice"), ("promote", "2", "root"), ("rollback", "1", "bob")]
    assert audit[0]["metrics"]["holdout_rmse"] > 0 and audit[0]["gate"]["passed"] == "True"

    listed = ok(pmx(home, "models", "list", "--json"))
    assert [(row["version"], row["aliases"]) for row in listed] == [(1, "champion"), (2, "")]
    table = pmx(home, "models", "list", "--name", "predictor", env={"COLUMNS": "100"})
    assert table.returncode == 0 and max(map(len, table.stdout.splitlines())) <= 100
    for row in listed:  # each version's headline metric, whole
        assert f"holdout rmse {row['metrics']['holdout_rmse']:.4f}" in table.stdout
