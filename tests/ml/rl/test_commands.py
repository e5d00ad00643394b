"""train_rl / eval_rl / canary_rl and the rl_agent registry, as a user runs them."""

import json
import tarfile
from pathlib import Path

import pytest

from tests.ml.predictor.test_commands import ok, trainer
from tests.ml.predictor.test_registry import pmx

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK = ("--epochs", "2", "--steps", "512", "--num-envs", "4", "--eval-every", "1",
         "--eval-episodes", "2")
#: The episodes QUICK's training run evaluated on (so the reward is the same), against one tuned rule.
QUICK_EVAL = ("--episodes", "2", "--rule", "erlang_c")


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


def test_the_registered_champion_is_evaluated_and_listed(tmp_path):
    """After `make up` the policies live in the registry only: eval_rl and canary_rl find them by
    alias or version (as models:/ URIs name them), and `pmx models list` shows them."""
    home = tmp_path / "home"
    trained = ok(trainer(home, "train_rl", *QUICK, "--mlflow"))
    (home / "models" / "rl_agent.pt").unlink()  # as after `make up`: no default checkpoint
    nothing = trainer(home, "eval_rl")
    assert nothing.returncode == 1 and "Traceback" not in nothing.stderr
    assert nothing.stderr.strip().splitlines() == [
        f"Error: no checkpoint at {home / 'models' / 'rl_agent.pt'}, and rl_agent has no champion in the "
        "registry: run `make up` (it trains and promotes one), or `pmx train_rl --mlflow` then `pmx "
        "models promote rl_agent VERSION` once its gate passed; or pass --checkpoint PATH or --model REF"]
    ok(pmx(home, "models", "promote", "rl_agent", "1", "--force", "--role", "admin", "--actor", "alice"))
    by_default = ok(trainer(home, "eval_rl", *QUICK_EVAL))  # no file: the champion
    assert by_default["model"] == "rl_agent@champion" and by_default["model_version"] == "1"
    assert by_default["avg_reward"] == pytest.approx(trained["eval_reward"])  # the same policy
    by_uri = ok(pmx(home, "eval_rl", "--model", "models:/rl_agent/1", *QUICK_EVAL))
    assert by_uri["avg_reward"] == by_default["avg_reward"] and by_uri["model_version"] == "1"
    assert by_uri["checkpoint"] == by_default["checkpoint"]
    artifacts = home / "mlflow" / "artifacts"
    assert by_uri["checkpoint"].startswith(str(artifacts)) and by_uri["checkpoint"].endswith("rl_agent.pt")

    for refused, says in ((("--model", "rl_agent@challenger"), "rl_agent has no challenger"),
                          (("--model", "rl_agent@7"), "model 'rl_agent' has no version 7")):
        failed = pmx(home, "eval_rl", *refused)
        assert failed.returncode == 1 and failed.stderr.strip().splitlines() == [
            next(line for line in failed.stderr.splitlines() if says in line)], failed.stderr
    assert "is a predictor version" in pmx(home, "eval_rl", "--model", "predictor@champion").stderr
    both = pmx(home, "eval_rl", "--model", "rl_agent@1", "--checkpoint", by_uri["checkpoint"])
    assert both.returncode == 2 and "not both" in both.stderr
    itself = pmx(home, "canary_rl", "--model", "rl_agent@champion")
    assert itself.returncode == 1 and "is version 1, the champion" in itself.stderr

    assert ok(pmx(home, "models", "register", "rl_agent", by_uri["checkpoint"]))["version"] == "2"
    gate = pmx(home, "canary_rl", *QUICK_EVAL)  # no file: the challenger, against the champion
    verdict = json.loads(gate.stdout)
    assert gate.returncode == 1 and verdict["model_version"] == "2" and verdict["champion_version"] == "1"
    assert verdict["improvement_vs_champion"]["mean"] == 0.0  # the same weights
    assert not list(artifacts.rglob("checkpoint/*.json"))  # the gate went onto the version, not there

    listed = {row["version"]: row for row in ok(pmx(home, "models", "list", "--json"))}
    assert listed[2]["gate"]["passed"] == "False" and listed[1]["stage"] == "None"
    assert listed[1]["checkpoint"] == by_uri["checkpoint"]
    wide = pmx(home, "models", "list", env={"COLUMNS": "250"}).stdout.splitlines()
    assert wide[0].split() == ["model", "ver", "aliases", "key", "metric", "gate", "promoted", "by",
                               "created", "checkpoint"]
    first = wide[1].split()
    assert first[:3] == ["rl_agent", "1", "champion"]
    assert first[3:6] == ["eval", "reward", f"{trained['eval_reward']:.2f}"] and "  alice  " in wide[1]
    assert first[-1] == str(Path(by_uri["checkpoint"]).relative_to(home))
    narrow = pmx(home, "models", "list", env={"COLUMNS": "60"}).stdout.splitlines()
    assert max(map(len, narrow)) <= 60 and len(narrow) == 5  # header, then a row and its checkpoint
    assert f"eval reward {trained['eval_reward']:.2f}" in narrow[1]
    run_id = listed[1]["run_id"]  # shortened, the path still tells the versions apart
    assert narrow[2].startswith("    …") and f"/{run_id[:4]}…{run_id[-4:]}/" in narrow[2]
    assert narrow[2].endswith("/checkpoint/rl_agent.pt")
