"""Each asset materializes, for real, with its metrics as metadata."""

import os
from pathlib import Path

import dagster as dg
import pandas as pd

from orchestration.assets import queue_metrics, rl_agent_candidate
from orchestration.checks import queue_metrics_data_quality
from orchestration.resources import RayResource, TrainingBudget, default_resources
from prioritymax.settings import get_settings
from tests.orchestration.conftest import closed_url, land_days, materialized


def test_queue_metrics_joins_the_trace_files_landed_in_the_data_home(small_trace, data_home, instance):
    traces = data_home / "data" / "traces"
    expected = land_days(small_trace, traces, [0, 1, 2])
    (traces / ".2024-03-07.csv").write_text("timestamp,requests\nnot,done\n")  # still being copied

    result = dg.materialize([queue_metrics, queue_metrics_data_quality], instance=instance,
                            resources=default_resources())
    assert result.success
    value = result.output_for_node("queue_metrics")
    assert value["source"] == "trace_days"
    joined = pd.read_csv(value["trace"])
    assert value["trace"] == str(data_home / "data" / "trace_days" / "trace.csv")
    assert joined["timestamp"].tolist() == expected["timestamp"].tolist()
    assert joined["requests"].tolist() == expected["requests"].tolist()
    metadata = materialized(result)["queue_metrics"]
    assert metadata["trace_files"] == 3 and metadata["source"] == "trace_days"
    assert metadata["dataset"] == str(data_home / "data" / "trace_days" / "queue_metrics.csv")
    assert metadata["rows"] == len(pd.read_csv(metadata["dataset"]))
    quality = result.get_asset_check_evaluations()[0]
    assert quality.passed, quality.description
    assert quality.metadata["days"].value == 3 and quality.metadata["gaps"].value == 1  # the 2-hour gap


def test_a_re_exported_day_replaces_the_rows_it_repeats(small_trace, data_home, instance):
    traces = data_home / "data" / "traces"
    land_days(small_trace, traces, [0, 2])
    day = pd.read_csv(traces / "2024-03-04.csv")
    day.assign(requests=day["requests"] + 1).to_csv(traces / "2024-03-04-fix.csv", index=False)

    result = dg.materialize([queue_metrics], instance=instance, resources=default_resources())
    joined = pd.read_csv(result.output_for_node("queue_metrics")["trace"])
    assert len(joined) == len(day) + len(pd.read_csv(traces / "2024-03-06.csv"))
    assert joined["requests"].iloc[: len(day)].tolist() == (day["requests"] + 1).tolist()


def test_queue_metrics_from_the_simulator_synthetic_profile(data_home, instance):
    result = dg.materialize([queue_metrics], instance=instance, resources=default_resources(),
                            run_config={"ops": {"queue_metrics": {"config": {
                                "source": "synthetic", "synthetic_days": 2, "seed": 3}}}})
    value = result.output_for_node("queue_metrics")
    assert value["trace"] == str(data_home / "data" / "synthetic" / "trace.csv")
    assert len(pd.read_csv(value["trace"])) == 2 * 1440
    assert materialized(result)["queue_metrics"]["rows"] == len(pd.read_csv(value["dataset"])) > 2800


def test_the_trace_days_source_without_files_is_a_clear_failure(data_home, instance):
    result = dg.materialize([queue_metrics], instance=instance, resources=default_resources(),
                            run_config={"ops": {"queue_metrics": {"config": {"source": "trace_days"}}}},
                            raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "no trace files" in str(failure) and str(data_home / "data" / "traces") in str(failure)


def test_each_asset_of_the_pipeline_materialized_with_its_metrics(promoted):
    """The session's full_pipeline_job run: NASA trace, small budget (conftest)."""
    metadata = materialized(promoted.pipeline)
    assert set(metadata) == {"queue_metrics", "predictor_candidate", "predictor_champion",
                             "rl_agent_candidate", "rl_agent_evaluation", "rl_agent_champion"}
    data = metadata["queue_metrics"]
    assert data["source"] == "nasa_http_1995_per_minute" and data["rows"] > 80_000

    predictor = metadata["predictor_candidate"]
    assert predictor["version"] == 1 and predictor["kind"] == "rf" and predictor["rows_used"] == 6000
    assert 0 < predictor["holdout_rmse"] < predictor["holdout_rmse_persistence"]
    assert os.path.isfile(predictor["checkpoint"]) and os.path.isfile(predictor["gate_holdout"])

    agent = metadata["rl_agent_candidate"]
    assert agent["version"] == 1 and agent["epochs"] == 40 and agent["engine"] == "ppo"
    assert agent["eval_reward"] > agent["hpa_reward"]
    # Trained on the run's own copy of the trace, which the evaluation and the gate read again.
    own_trace = Path(agent["checkpoint"]).parent / ("rl_trace" + "".join(Path(data["trace"]).suffixes))
    assert agent["traffic"] == f"{own_trace.resolve()}:train0.80"
    assert pd.read_csv(own_trace).equals(pd.read_csv(data["trace"]))

    evaluation = metadata["rl_agent_evaluation"]
    assert {"reward_ppo", "reward_hpa", "reward_static", "reward_erlang_c"} <= set(evaluation)
    assert evaluation["episodes"] == 8 and evaluation["improvement_vs_hpa"] > 0
    assert evaluation["traffic"] == "rl_trace:holdout"  # the held-out part of that same copy
    assert "| erlang_c |" in evaluation["policies"]

    for name, model_metric in (("predictor_champion", "holdout_rmse"), ("rl_agent_champion", "eval_reward")):
        champion = metadata[name]
        assert champion["version"] == 1 and champion["previous_champion"] == "none"
        assert champion["promotion"] == "promoted (was none)" and model_metric in champion
        assert champion["published"] is False
        status = champion["control_plane"]
        assert status == f"not published (no control plane at {promoted.control_plane_url})"


def test_rllib_engine_takes_the_ray_resource_and_an_unreachable_cluster_fails_fast(small_trace, monkeypatch,
                                                                                    data_home, instance):
    monkeypatch.setenv("PRIORITYMAX_TRACE", str(small_trace))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = closed_url().removeprefix("http://")
    resources = default_resources() | {"budget": TrainingBudget(rl_engine="rllib", rl_epochs=1),
                                       "ray": RayResource(address=address)}
    result = dg.materialize([queue_metrics, rl_agent_candidate], instance=instance, resources=resources,
                            raise_on_error=False)
    assert not result.success
    error = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert f"RAY_ADDRESS={address}: no Ray cluster answers" in error
    assert "RAY_ADDRESS" not in os.environ  # the resource's value was for the run only


def test_budget_fields_left_unset_fall_back_like_the_cli_flags(monkeypatch):
    """Args defaults < PRIORITYMAX_RL_ENVS < a preset < the budget's fields (ml.rl.presets.resolve_args,
    which the trainer commands use too); the budget's eval_episodes always counts."""
    from ml.rl.presets import save_preset

    monkeypatch.setenv("PRIORITYMAX_RL_ENVS", "12")
    get_settings.cache_clear()
    save_preset("fast", {"epochs": 7, "num_envs": 24, "lr": 0.002, "eval_episodes": 3}, {"by": "test"})
    plain = TrainingBudget().rl_args()
    assert (plain.epochs, plain.num_envs, plain.eval_episodes) == (150, 12, TrainingBudget().eval_episodes)
    preset = TrainingBudget(rl_preset="fast").rl_args()
    assert (preset.epochs, preset.num_envs, preset.lr) == (7, 24, 0.002)
    given = TrainingBudget(rl_preset="fast", rl_epochs=3, rl_num_envs=8, eval_episodes=5).rl_args()
    assert (given.epochs, given.num_envs, given.lr, given.eval_episodes) == (3, 8, 0.002, 5)
