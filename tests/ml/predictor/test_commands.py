"""The predictor's trainer commands, end to end in subprocesses, as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

from ml.predictor.model import PredictorModel
from prioritymax.settings import REPO_ROOT

pytestmark = pytest.mark.integration


def trainer(home, *args, env: dict[str, str] | None = None, timeout: float = 600):
    env = {**os.environ, "PRIORITYMAX_HOME": str(home), **(env or {})}
    result = subprocess.run([sys.executable, "ml/trainer_full.py", *map(str, args)],
                            capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=timeout)
    return result


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def trained(home, queue_metrics):
    """A LightGBM predictor trained once for this module, at the default checkpoint."""
    return ok(trainer(home, "train_predictor", "--data", queue_metrics))


def test_train_writes_the_checkpoint_and_its_metadata(home, trained, queue_metrics):
    ckpt = home / "models" / "predictor_lgbm.pkl"
    assert trained["ckpt"] == str(ckpt) and ckpt.is_file()
    # The default target is the load (arrivals per step), forecast 1, 5 and 15 steps ahead.
    assert trained["target"] == "arrivals" and trained["horizon"] == 1
    assert trained["horizons"] == [1, 5, 15] and trained["quantiles"] == [0.5, 0.9]
    holdout = trained["holdout"]
    assert set(holdout["baselines"]) == {"persistence", "seasonal_naive"}
    assert holdout["rmse"] < holdout["baselines"]["persistence"]["rmse"]
    assert set(holdout["by_horizon"]) == {"1", "5", "15"}
    for scores in holdout["by_horizon"].values():
        assert scores["rmse"] < scores["baselines"]["persistence"]["rmse"]
        assert 0.75 <= scores["p90_coverage"] <= 1.0
    metadata = json.loads(ckpt.with_suffix(".json").read_text())
    assert metadata["target"] == "arrivals" and metadata["horizons"] == [1, 5, 15]
    assert set(metadata["intervals"]) == {"1", "5", "15"}
    assert len(metadata["features"]) == trained["features"]
    assert metadata["training_window"]["end"] < metadata["holdout_window"]["start"]
    assert metadata["data"]["fingerprint"] and metadata["data"]["path"] == str(queue_metrics)
    assert {"lightgbm", "numpy", "duckdb", "python"} <= set(metadata["libraries"])


def test_evaluate_prints_the_seed_shape_plus_skill(home, trained, holdout_metrics):
    result = ok(trainer(home, "evaluate_predictor", "--data", holdout_metrics))
    assert {"rmse", "r2", "mae", "mape", "skill", "baselines"} <= set(result)
    assert set(result["skill"]) == {"persistence", "seasonal_naive"}
    assert result["skill"]["seasonal_naive"] > 0


def test_canary_passes_and_fails_with_exit_codes(home, trained, holdout_metrics):
    passing = trainer(home, "canary_predictor", "--holdout", holdout_metrics, "--threshold", "1e9",
                      "--no-registry")
    assert ok(passing)["passed"] is True
    failing = trainer(home, "canary_predictor", "--holdout", holdout_metrics, "--threshold", "0.01",
                      "--no-registry")
    assert failing.returncode == 1
    result = json.loads(failing.stdout)
    assert result["passed"] is False
    assert any("threshold 0.0100" in reason for reason in result["reasons"])
    assert PredictorModel.load(home / "models" / "predictor_lgbm.pkl").metadata["gate"]["passed"] is False


def test_a_worse_candidate_fails_against_the_champion(home, trained, queue_metrics, holdout_metrics):
    worse = home / "models" / "worse.pkl"
    # Leaves that need more rows than there are: no split, a constant change - persistence.
    ok(trainer(home, "train_predictor", "--data", queue_metrics, "--ckpt", worse,
               "--params", '{"min_data_in_leaf": 1000000}'))
    champion = home / "models" / "predictor_lgbm.pkl"
    result = trainer(home, "canary_predictor", "--ckpt", worse, "--holdout", holdout_metrics,
                     "--threshold", "1e9", "--champion-ckpt", champion)
    assert result.returncode == 1
    verdict = json.loads(result.stdout)
    assert verdict["ratio_ci95"][0] > 1.02
    assert [c["check"] for c in verdict["checks"] if not c["passed"]] == ["vs_champion"]
    same = ok(trainer(home, "canary_predictor", "--holdout", holdout_metrics, "--threshold", "1e9",
                      "--champion-ckpt", champion))
    assert same["ratio_ci95"] == [1.0, 1.0] and same["passed"]


def test_bad_params_are_a_usage_error(home, queue_metrics):
    result = trainer(home, "train_predictor", "--data", queue_metrics, "--params", "{oops")
    assert result.returncode == 2 and "--params" in result.stderr


def test_schema_mismatch_names_the_missing_columns(home, trained, small_trace):
    result = trainer(home, "evaluate_predictor", "--data", small_trace)
    assert result.returncode == 1
    assert "missing target column 'arrivals'" in result.stderr


def test_corrupt_checkpoint_is_a_clear_error(home, holdout_metrics):
    bad = home / "models" / "corrupt.pkl"
    bad.write_bytes(b"not a pickle at all")
    result = trainer(home, "evaluate_predictor", "--ckpt", bad, "--data", holdout_metrics)
    assert result.returncode == 1
    assert "not a predictor checkpoint" in result.stderr and "Traceback" not in result.stderr
    bad.write_bytes(b"")
    empty = trainer(home, "evaluate_predictor", "--ckpt", bad, "--data", holdout_metrics)
    assert empty.returncode == 1 and "(the file is empty)" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1


def test_the_seeds_queue_target_stays_available(home, queue_metrics):
    ckpt = home / "models" / "queue.pkl"
    result = ok(trainer(home, "train_predictor", "--data", queue_metrics, "--target",
                        "queue_next_sec", "--ckpt", ckpt))
    assert result["horizon"] == 0 and result["horizons"] == [0]  # the column already looks ahead
    assert set(result["holdout"]["by_horizon"]) == {"0"}


def test_raw_trace_forecasts_the_next_period(home, small_trace):
    ckpt = home / "models" / "trace.pkl"
    result = ok(trainer(home, "train_predictor", "--data", small_trace, "--target", "requests",
                        "--ckpt", ckpt))
    assert result["horizon"] == 1
    assert result["holdout"]["rmse"] < result["holdout"]["baselines"]["persistence"]["rmse"]


def test_backtest_rolls_the_origin_forward(home, queue_metrics):
    result = ok(trainer(home, "backtest_predictor", "--data", queue_metrics, "--folds", "4"))
    folds = result["fold_results"]
    assert result["folds"] == len(folds) == 4
    assert [f["train_rows"] for f in folds] == sorted(f["train_rows"] for f in folds)
    assert all(f["test_window"][0] > prev["test_window"][1] for prev, f in zip(folds, folds[1:],
                                                                               strict=False))
    assert set(result["by_horizon"]) == {"1", "5", "15"}
    # The first fold trains on 1.2 days: too few for MSTL's daily season, which is left out.
    assert result["left_out"] == ["mstl"]
    for scores in result["by_horizon"].values():
        assert {"persistence", "seasonal_naive", "auto_ets"} == set(scores["baselines"])
        best = min(scores["baselines"], key=lambda n: scores["baselines"][n]["rmse"])
        assert scores["best_baseline"] == best
        assert scores["improvement_vs_best_baseline"] == pytest.approx(
            1 - scores["rmse"] / scores["baselines"][best]["rmse"])
        assert scores["mase"] > 0 and 0.6 <= scores["p90_coverage"] <= 1.0
    assert result["fit_seconds"]["model"] > 0 and result["fit_seconds"]["auto_ets"] > 0


def test_bad_horizons_are_a_usage_error(home, queue_metrics):
    result = trainer(home, "train_predictor", "--data", queue_metrics, "--horizons", "1,x")
    assert result.returncode == 2 and "--horizons" in result.stderr
    result = trainer(home, "train_predictor", "--data", queue_metrics, "--horizons", "5,15")
    assert result.returncode == 1 and "horizons must start at the horizon 1" in result.stderr
