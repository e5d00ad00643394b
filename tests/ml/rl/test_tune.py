"""tune as a user runs it: Ray Tune over our PPO with ASHA or FIFO, random or Optuna search,
the best configuration saved as a preset that train_rl --preset uses."""

import json

import pytest
import torch

from tests.ml.predictor.test_commands import ok, trainer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ("--epochs", "3", "--grace-period", "1", "--num-envs", "8", "--steps", "256",
        "--eval-episodes", "2", "--cpus", "2")


def test_asha_optuna_search_saves_a_preset_train_rl_uses(tmp_path):
    home = tmp_path / "home"
    result = ok(trainer(home, "tune", "--samples", "2", "--scheduler", "asha", "--optuna",
                        "--metric", "episode_reward_mean", "--name", "smoke", *TINY))
    experiment = home / "models" / "tune" / "smoke"
    assert result["experiment"] == str(experiment)
    assert json.loads((experiment / "summary.json").read_text())["best"] == result["best"]
    assert result["searcher"] == "optuna" and len(result["trials"]) == 2
    for trial in result["trials"]:
        assert trial["error"] is None and 1 <= trial["epochs"] <= 3
        config = trial["config"]
        assert 1e-5 <= config["lr"] <= 1e-3 and config["hidden_dim"] in (64, 128, 256)
        assert config["clip_range"] in (0.1, 0.2, 0.3) and 0 <= config["entropy_coef"] <= 0.05
    best = result["best"]
    assert best["episode_reward_mean"] == max(t["best"] for t in result["trials"])
    assert set(best["params"]) == {"lr", "hidden_dim", "clip_coef", "ent_coef"}

    preset = json.loads((home / "models" / "presets" / "tuned.json").read_text())
    assert preset["params"] == best["params"]
    trained = ok(trainer(home, "train_rl", "--preset", "tuned", "--epochs", "1", "--steps", "256",
                         "--num-envs", "8", "--eval-every", "0", "--eval-episodes", "2"))
    saved = torch.load(trained["checkpoint"], weights_only=True)["args"]
    assert saved["hidden_dim"] == best["params"]["hidden_dim"]
    assert saved["lr"] == pytest.approx(best["params"]["lr"])
    assert saved["ent_coef"] == pytest.approx(best["params"]["ent_coef"])
    assert saved["epochs"] == 1  # a flag given on the command line wins over the preset


def test_fifo_runs_every_trial_to_the_end(tmp_path):
    result = ok(trainer(tmp_path / "home", "tune", "--samples", "2", "--scheduler", "fifo",
                        "--preset", "", *TINY))
    assert result["searcher"] == "random" and "preset" not in result
    assert [t["epochs"] for t in result["trials"]] == [3, 3]
    assert result["total_epochs"] == 6


def test_unknown_preset_is_a_clear_error(tmp_path):
    result = trainer(tmp_path / "home", "train_rl", "--preset", "nope", "--epochs", "1")
    assert result.returncode == 1
    assert "no preset 'nope'" in result.stderr and "Traceback" not in result.stderr
