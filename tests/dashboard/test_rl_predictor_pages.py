"""RL and Predictor pages, empty and populated, and the data behind them."""

from __future__ import annotations

import numpy as np
import pytest

from tests.dashboard.conftest import open_page, texts

pytestmark = pytest.mark.integration


def _metrics(page) -> dict[str, str]:
    return {m.label: m.value for m in page.metric}


def test_rl_page_on_an_empty_home_says_how_to_get_a_policy(on_empty):
    page = open_page("rl")
    shown = texts(page)
    assert "No RL policy yet" in shown and "pmx train_rl" in shown and "pmx up" in shown
    assert not page.get("plotly_chart") and not page.metric


def test_rl_page_runs_the_champion_against_the_best_tuned_rule_and_hpa(on_populated):
    page = open_page("rl")
    policy, trace = page.selectbox[0], page.selectbox[1]
    assert policy.value == "rl_agent v1 (champion)"
    assert "models/rl_agent.pt (local file)" in policy.options
    assert trace.options[:2] == ["nasa_http_1995_per_minute (default trace)", "synthetic profile"]
    assert page.number_input[1].value == 720  # the policy's training episode length

    shown = _metrics(page)
    summary = page.dataframe[0].value.set_index("policy")
    assert list(summary.index) == ["PPO", "Best tuned rule", "HPA"]
    assert shown["PPO total reward"] == f"{summary.loc['PPO', 'total_reward']:,.2f}"
    assert shown["Best rule total reward"] == f"{summary.loc['Best tuned rule', 'total_reward']:,.2f}"
    for name in ("PPO", "Best rule"):
        assert f"{name} mean workers" in shown and f"{name} SLA violations" in shown
    assert shown["Best tuned rule"].split()[0] in {"hpa", "erlang_c", "queue_threshold", "static"}
    assert "PPO vs best rule" in shown and "PPO vs HPA" in shown
    assert len(page.get("plotly_chart")) == 4  # arrivals, queues, workers, reward
    assert "Queue length per class" in texts(page)

    page.selectbox[1].select("synthetic profile")
    page.number_input[0].set_value(5)
    page.number_input[1].set_value(120)
    page.run()
    assert not page.exception
    assert page.dataframe[0].value["policy"].tolist() == ["PPO", "Best tuned rule", "HPA"]
    assert _metrics(page)["Steps"] == "120"


def test_an_episode_is_what_evaluate_policy_measures(on_populated):
    """The policies side by side give exactly the totals of a one-env evaluation with that seed,
    and face the same arrivals."""
    from dashboard.data import rl
    from ml.rl.policy import PPOPolicy
    from ml.sim.config import SimConfig
    from ml.sim.evaluate import evaluate_policy
    from ml.sim.policies import HPAPolicy, make_baseline

    choices, note = rl.policies()
    assert note is None and choices[0].version == "1"
    frame = rl.episode(choices[0], "synthetic", 11, 200)
    assert len(frame) == 600 and set(frame["step"]) == set(range(200))
    ppo, hpa = frame[frame["policy"] == rl.PPO], frame[frame["policy"] == rl.HPA]
    assert np.array_equal(ppo["arrivals"].to_numpy(), hpa["arrivals"].to_numpy())
    assert ppo["time"].is_monotonic_increasing

    payload = rl.checkpoint(choices[0])
    config = SimConfig.from_dict(payload["sim_config"]).replace(episode_steps=200)
    series = rl._traffic("synthetic", None, rl._hashable(payload["sim_config"]))
    summary = rl.summary(frame).set_index("policy")
    best, params = rl.best_rule(choices[0])
    for name, policy in ((rl.PPO, PPOPolicy.from_payload(payload)), (rl.HPA, HPAPolicy(config)),
                         (rl.BEST, make_baseline(best, config, **params))):
        expected = evaluate_policy(policy, series, seeds=[11], config=config)
        assert summary.loc[name, "total_reward"] == pytest.approx(expected.reward[0], rel=1e-9)
        assert summary.loc[name, "mean_workers"] == pytest.approx(expected.mean_workers[0], rel=1e-9)
        assert summary.loc[name, "violation_rate"] == pytest.approx(
            expected.overall_violation_rate[0], rel=1e-6)


def test_predictor_page_on_an_empty_home_says_there_is_no_model_and_no_data(on_empty):
    page = open_page("predictor")
    shown = texts(page)
    assert "No predictor yet" in shown and "pmx train_predictor" in shown
    assert "No queue_metrics dataset" in shown and "pmx sim dataset" in shown
    assert not page.get("plotly_chart") and not page.dataframe


def test_predictor_page_compares_the_champion_with_the_baselines(on_populated):
    page = open_page("predictor")
    model, dataset = page.selectbox[0], page.selectbox[1]
    assert model.value == "predictor v1 (champion)"
    assert "predictor v2 (challenger)" in model.options
    assert dataset.options == ["synthetic"]
    shown = texts(page)
    assert "of the dataset the model was trained on" in shown

    table = page.dataframe[0].value
    assert table["method"].tolist() == ["model", "persistence", "seasonal_naive"]
    assert (table["rmse"] > 0).all() and (table["rmse"] >= table["mae"]).all()
    assert table["rows"].nunique() == 1  # every method on the same rows
    # On its own dataset the holdout is the trainer's: the registered holdout RMSE again.
    from dashboard.data import predictor

    details = predictor.model_details(predictor.models()[0][0])
    assert table["rmse"].iloc[0] == pytest.approx(details["holdout_rmse"], rel=1e-9)
    assert _metrics(page)["model RMSE"] == f"{details['holdout_rmse']:.3f}"
    assert len(page.get("plotly_chart")) == 3  # forecast vs actual, histogram, box

    page.selectbox[0].select("predictor v2 (challenger)").run()
    assert not page.exception
    assert "**predictor v2 (challenger)**" in texts(page)
    assert page.dataframe[0].value["method"].tolist() == ["model", "persistence", "seasonal_naive"]
    assert len(page.get("plotly_chart")) == 3


def test_predictor_metrics_are_one_duckdb_aggregation_per_method():
    import pandas as pd

    from dashboard.data import predictor

    frame = pd.DataFrame({"ts": pd.date_range("2026-01-01", periods=4, freq="min", tz="UTC"),
                          "actual": [1.0, 2.0, 3.0, 4.0], "model": [1.0, 2.0, 3.0, 6.0],
                          "persistence": [0.0, 1.0, 2.0, 3.0],
                          "seasonal_naive": [np.nan, np.nan, 3.0, 4.0]})
    table = predictor.metrics(frame).set_index("method")
    assert table.loc["model", "rmse"] == pytest.approx(1.0) and table.loc["model", "bias"] == 0.5
    assert table.loc["persistence", "mae"] == 1.0 and table.loc["persistence", "bias"] == -1.0
    assert table.loc["seasonal_naive", "rows"] == 2 and table.loc["seasonal_naive", "rmse"] == 0.0
    assert table.loc["model", "skill_vs_persistence"] == pytest.approx(0.0)
    assert table.loc["model", "max_abs_error"] == 2.0
