"""train_rl / eval_rl / canary_rl and the rl_agent registry, as a user runs them."""

import json
import tarfile

import pytest

from tests.ml.predictor.test_commands import ok, trainer
from tests.ml.predictor.test_registry import pmx

pytestmark = pytest.mark.integration

QUICK = ("--epochs", "2", "--steps", "512", "--num-envs", "4", "--eval-every", "1",
         "--eval-episodes", "2")


def test_train_eval_and_gate_without_a_registry(tmp_path):
    home = tmp_path / "home"
    result = ok(trainer(home, "train_rl", *QUICK))
    checkpoint = home / "models" / "rl_agent.pt"
    assert result["checkpoint"] == str(checkpoint) and checkpoint.is_file()
    assert result["epochs"] == 2 and result["global_step"] == 1024
    assert {"eval_reward", "hpa_reward", "sps"} <= set(result)

    evaluated = ok(trainer(home, "eval_rl", "--episodes", "3"))
    assert evaluated["episodes"] == 3
    assert {"avg_reward", "std_reward"} <= set(evaluated)
    assert set(evaluated["policies"]) == {"ppo", "hpa", "static", "erlang_c", "queue_threshold",
                                          "predictive_erlang_c"}
    low, high = evaluated["improvement_vs_hpa"]["ci95"]
    assert low <= evaluated["improvement_vs_hpa"]["mean"] <= high

    gate = trainer(home, "canary_rl", "--episodes", "3", "--no-registry")
    verdict = json.loads(gate.stdout)
    assert gate.returncode == (0 if verdict["passed"] else 1)
    assert [c["check"] for c in verdict["checks"]] == ["vs_best_baseline", "high_class_sla",
                                                       "vs_champion"]
    assert verdict["best_baseline"] == evaluated["best_baseline"]
    assert verdict["best_baseline_reward"] == max(verdict["baseline_rewards"].values())
    best_check = verdict["checks"][0]
    improvement = (verdict["reward"] - verdict["best_baseline_reward"]) / abs(verdict["best_baseline_reward"])
    assert verdict["improvement_vs_best_baseline"] == pytest.approx(improvement)
    # eval_rl reports the figure the gate holds to (mean reward), the paired one beside it
    assert evaluated["improvement_vs_best_baseline"] == pytest.approx(
        (evaluated["avg_reward"] - evaluated["policies"][evaluated["best_baseline"]]["reward"]["mean"])
        / abs(evaluated["policies"][evaluated["best_baseline"]]["reward"]["mean"]))
    assert best_check["passed"] == (improvement >= -0.02)
    low, high = verdict["improvement_vs_best_baseline_paired"]["ci95"]
    assert low <= verdict["improvement_vs_best_baseline_paired"]["mean"] <= high
    high_check = verdict["checks"][1]
    assert high_check["passed"] == (verdict["high_class_sla_violation_rate"] <= verdict[
        "best_baseline_high_class_sla_violation_rate_ci95_high"] + 1e-4)
    same = trainer(home, "canary_rl", "--episodes", "3", "--champion-checkpoint", checkpoint)
    assert same.returncode == 1  # not better than itself
    assert json.loads(same.stdout)["improvement_vs_champion"]["mean"] == 0.0

    reactive = json.loads(trainer(home, "canary_rl", "--episodes", "3", "--no-registry",
                                  "--rule", "static", "--rule", "erlang_c").stdout)
    assert set(reactive["baseline_rewards"]) == {"hpa", "static", "erlang_c"}
    assert reactive["baseline_rewards"]["erlang_c"] == pytest.approx(verdict["baseline_rewards"]["erlang_c"])
    unknown = trainer(home, "eval_rl", "--rule", "oracle")
    assert unknown.returncode == 2 and "oracle" in unknown.stderr


def test_resume_continues_and_a_bad_checkpoint_is_an_error(tmp_path):
    home = tmp_path / "home"
    ok(trainer(home, "train_rl", *QUICK, "--stop-after", "1"))
    assert (home / "models" / "rl_agent.pt").is_file()
    resumed = ok(trainer(home, "train_rl", *QUICK))
    assert resumed["epochs"] == 2
    incompatible = trainer(home, "train_rl", *QUICK[:-6], "--num-envs", "8")
    assert incompatible.returncode == 1 and "--fresh" in incompatible.stderr
    corrupt = home / "models" / "corrupt.pt"
    corrupt.write_bytes(b"garbage")
    failed = trainer(home, "eval_rl", "--checkpoint", corrupt)
    assert failed.returncode == 1 and "not a readable PPO checkpoint" in failed.stderr
    assert "Traceback" not in failed.stderr and "weights_only" not in failed.stderr
    corrupt.write_bytes(b"")
    empty = trainer(home, "eval_rl", "--checkpoint", corrupt)
    assert empty.returncode == 1 and "(the file is empty)" in empty.stderr
    for refusal in (failed, empty):  # one line, whatever torch had to say
        assert len(refusal.stderr.strip().splitlines()) == 1, refusal.stderr


def test_registered_promoted_and_archived(tmp_path):
    home = tmp_path / "home"
    first = ok(trainer(home, "train_rl", *QUICK, "--mlflow"))
    assert first["mlflow"]["model_name"] == "rl_agent" and first["mlflow"]["model_version"] == "1"
    trainer(home, "canary_rl", "--episodes", "3")  # records the gate, passed or not
    listed = {row["version"]: row for row in ok(pmx(home, "models", "list", "--name", "rl_agent",
                                                     "--json"))}
    assert listed[1]["aliases"] == "challenger"
    assert listed[1]["gate"]["passed"] in ("True", "False")
    assert listed[1]["metrics"]["eval_reward"] == pytest.approx(first["eval_reward"])
    promoted = ok(pmx(home, "models", "promote", "rl_agent", "1", "--force", "--role", "admin"))
    assert promoted["model"] == "rl_agent"
    archived = ok(pmx(home, "models", "archive", "rl_agent", "1"))
    with tarfile.open(archived["archive"]) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert "rl_agent.pt" in names and manifest["version"] == "1"
    assert manifest["files"]["rl_agent.pt"]
