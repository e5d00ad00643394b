"""The blocking checks: data quality stops training; a failed gate stops promotion, with the
candidate's metrics beside the champion's and the thresholds in the check's metadata."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml import registry
from orchestration.assets import predictor_candidate, queue_metrics
from orchestration.checks import quality_report, queue_metrics_data_quality
from orchestration.resources import default_resources
from tests.orchestration.conftest import (
    check_metadata,
    evaluations,
    execute,
    land_days,
    materialized,
    run_config,
)

IMPOSSIBLE = 1e-9


def champion(model: str) -> str:
    return str(registry.version_by_alias(model, "champion").version)


def good_frame(rows: int = 2000) -> pd.DataFrame:
    stamps = pd.date_range("2024-03-04", periods=rows, freq="min", tz="UTC")
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "segment": 0,
                          "arrival_rate": 10.0, "queue_len": 3.0, "active_workers": 12,
                          "warming_workers": 0, "utilization": 0.8, "queue_next_sec": 3.0})
    for name in ("high", "normal", "low"):
        frame[f"arrivals_{name}"] = 2
        frame[f"queue_{name}"] = 1.0
        frame[f"violations_{name}"] = 0
    return frame


def test_quality_report_names_each_problem():
    assert quality_report(good_frame(), max_gap_hours=1, min_rows=1440)["problems"] == []

    bad = good_frame().drop(columns=["queue_high"])
    bad.loc[5, "queue_len"] = -1
    bad.loc[7, "arrivals_low"] = -3
    bad.loc[9, "queue_next_sec"] = np.nan
    bad = bad.drop(index=range(100, 400)).reset_index(drop=True)  # a 5-hour gap
    report = quality_report(bad, max_gap_hours=4, min_rows=1440)
    problems = " | ".join(report["problems"])
    assert "missing columns: queue_high" in problems
    assert report["negative_counts"] == {"arrivals_low": 1, "queue_len": 1}
    assert report["missing_values"] == {"queue_next_sec": 1}
    assert report["gaps"] == 1 and report["max_gap_hours"] == pytest.approx(5.0167, abs=1e-3)
    assert "a gap of 5.0 h after 2024-03-04 01:39:00+00:00 exceeds 4 h" in problems

    shuffled = good_frame().iloc[[0, 2, 1, *range(3, 2000)]]
    assert "1 rows out of time order or duplicated" in quality_report(shuffled, max_gap_hours=1,
                                                                      min_rows=10)["problems"]
    assert "100 rows, fewer than 1440" in quality_report(good_frame(100), max_gap_hours=1,
                                                         min_rows=1440)["problems"]


def test_a_day_that_never_landed_fails_data_quality_and_nothing_trains(small_trace, data_home, instance):
    land_days(small_trace, data_home / "data" / "traces", [0, 2])  # the 5th of March is missing
    result = dg.materialize(
        [queue_metrics, queue_metrics_data_quality, predictor_candidate], instance=instance,
        resources=default_resources(), raise_on_error=False,
        run_config={"ops": {"queue_metrics_data_quality": {"config": {"max_gap_hours": 12}}}})
    assert not result.success
    assert set(materialized(result)) == {"queue_metrics"}  # the blocking check stopped training
    quality = evaluations(result)["queue_metrics:data_quality"]
    assert not quality.passed
    metadata = check_metadata(quality)
    assert metadata["max_gap_hours"] > 24 and metadata["max_gap_hours_allowed"] == 12
    assert metadata["days"] == 2 and "exceeds 12 h" in quality.description
    assert not (data_home / "mlflow" / "mlflow.db").exists()


def test_the_pipeline_gates_passed_and_regating_a_champion_leaves_it_alone(promoted):
    checks = evaluations(promoted.pipeline)
    assert set(checks) == {"queue_metrics:data_quality", "predictor_candidate:canary_gate",
                           "rl_agent_evaluation:canary_gate"}
    assert all(check.passed for check in checks.values()), {k: c.description for k, c in checks.items()}
    predictor = check_metadata(checks["predictor_candidate:canary_gate"])
    assert predictor["champion_version"] == "none"
    baselines = [value for key, value in predictor.items() if key.startswith("rmse_") and "ratio" not in key]
    assert predictor["candidate_rmse"] < predictor["threshold"] == min(baselines)
    assert predictor["threshold_source"] == "the better baseline's RMSE"
    agent = check_metadata(checks["rl_agent_evaluation:canary_gate"])
    assert agent["candidate_reward"] > agent["hpa_reward"] and agent["improvement_vs_hpa"] > 0
    assert agent["champion_version"] == "none"
    # Against the best rule tuned on its training part, both sides shown.
    assert agent["best_baseline"] in {"hpa", "erlang_c", "queue_threshold", "static"}
    assert agent["improvement_vs_best_baseline"] >= agent["min_improvement_vs_best_baseline"] == -0.02
    assert (agent["candidate_high_class_sla_violation_rate"]
            <= agent["best_baseline_high_class_sla_violation_rate_ci95_high"] + 1e-4)
    assert "| vs_best_baseline | yes |" in agent["checks"] and "| high_class_sla | yes |" in agent["checks"]

    # canary_gate_job after the promotion: each candidate is the champion; neither is gated against itself.
    assert promoted.regate.success
    regated = evaluations(promoted.regate)
    assert set(regated) == {"predictor_candidate:canary_gate", "rl_agent_evaluation:canary_gate"}
    assert all(c.passed and "is the champion already" in c.description for c in regated.values())


def test_a_predictor_that_fails_its_gate_is_not_promoted(in_promoted_home):
    impossible = {"predictor_candidate_canary_gate": {"threshold": IMPOSSIBLE}}
    result = execute("train_predictor_job", in_promoted_home.instance, run_config(ops=impossible))
    assert not result.success
    gate = evaluations(result)["predictor_candidate:canary_gate"]
    assert not gate.passed and f"threshold {IMPOSSIBLE:.4f} (--threshold)" in gate.description
    metadata = check_metadata(gate)
    assert metadata["threshold"] == IMPOSSIBLE and metadata["threshold_source"] == "config"
    assert metadata["champion_version"] == "1" and metadata["version"] == 2
    assert metadata["candidate_rmse"] > 0 and metadata["champion_rmse"] > 0
    assert metadata["max_rmse_ratio"] == 1.02 and "rmse_ratio_ci95_high" in metadata
    assert "| threshold | NO |" in metadata["checks"]

    assert champion("predictor") == "1"
    tags = registry.client().get_model_version("predictor", "2").tags
    assert tags["gate.passed"] == "False"

    # promote_job will not promote it either: the registry holds the failed gate against it.
    promote = execute("promote_job", in_promoted_home.instance,
                      asset_selection=[dg.AssetKey("predictor_champion")])
    assert not promote.success and not materialized(promote)
    error = str(promote.get_step_failure_events()[0].step_failure_data.error)
    assert "predictor version 2 not promoted" in error and "its gate has failed" in error
    assert champion("predictor") == "1"
    audit = [json.loads(line) for line in (in_promoted_home.home / "logs" / "models_audit.jsonl")
             .read_text().splitlines()]
    assert [(a["model"], a["version"]) for a in audit if a["event"] == "promote"] == [
        ("predictor", "1"), ("rl_agent", "1")]


def test_a_one_epoch_policy_fails_the_rl_gate_against_the_champion(in_promoted_home):
    result = execute("train_rl_job", in_promoted_home.instance, run_config({"rl_epochs": 1}))
    assert not result.success
    gate = evaluations(result)["rl_agent_evaluation:canary_gate"]
    assert not gate.passed
    metadata = check_metadata(gate)
    assert metadata["champion_version"] == "1" and metadata["version"] == 2
    assert metadata["candidate_reward"] <= metadata["champion_reward"]
    assert metadata["improvement_vs_champion"] <= 0  # the gate wants a mean paired improvement above 0
    assert {"hpa_reward", "improvement_vs_hpa", "improvement_vs_champion_ci95_high"} <= set(metadata)
    assert "| vs_champion | NO |" in metadata["checks"]
    # The evaluation itself materialized (the gate blocks promotion, not the facts).
    assert set(materialized(result)) == {"queue_metrics", "rl_agent_candidate", "rl_agent_evaluation"}
    assert champion("rl_agent") == "1"

    promote = execute("promote_job", in_promoted_home.instance,
                      asset_selection=[dg.AssetKey("rl_agent_champion")])
    assert not promote.success
    assert champion("rl_agent") == "1"
