"""RL and Predictor pages, empty and populated, and the data behind them."""

from __future__ import annotations

import base64
import json

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
    assert shown["Best tuned rule"].split()[0] in {"hpa", "erlang_c", "queue_threshold", "static",
                                                   "predictive_erlang_c"}
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


def test_the_rl_page_runs_the_rule_the_gate_recorded_without_tuning_again(on_populated):
    """The gate's best tuned rule and its parameters, recorded on the registered version, are what
    the page compares the policy with (tuning every rule again takes minutes)."""
    from dashboard.data import rl
    from ml import registry
    from ml.rl.tracking import record_gate

    rule = ("hpa", {"target_utilization": 0.77})  # off the tuning grid: read, not tuned again
    client = registry.client()
    before = dict(client.get_model_version("rl_agent", "1").tags)
    record_gate(on_populated.home / "models" / "rl_agent.pt", {
        "passed": True, "reward": -1.0, "hpa_reward": -2.0, "best_baseline": rule[0],
        "best_baseline_params": rule[1], "best_baseline_reward": -1.5, "episodes": 8}, version="1")
    try:
        assert rl.best_rule(rl.policies()[0][0]) == rule
        page = open_page("rl")
        assert _metrics(page)["Best tuned rule"] == "hpa {'target_utilization': 0.77}"
        assert page.dataframe[0].value["policy"].tolist() == ["PPO", "Best tuned rule", "HPA"]
    finally:  # the other tests expect the version's gate as the fixture recorded it
        for key, value in client.get_model_version("rl_agent", "1").tags.items():
            if key not in before:
                client.delete_model_version_tag("rl_agent", "1", key)
            elif before[key] != value:
                client.set_model_version_tag("rl_agent", "1", key, before[key])


def test_an_episode_is_what_evaluate_policy_measures(on_populated):
    """The policies side by side give exactly the totals of a one-env evaluation with that seed,
    and face the same arrivals."""
    from dashboard.data import rl
    from ml.rl.policy import PPOPolicy
    from ml.sim.config import SimConfig
    from ml.sim.evaluate import evaluate_policy
    from ml.sim.policies import HPAPolicy
    from ml.sim.tuning import tuned_policy

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
    rule = tuned_policy(best, params, config, series, rl.training_traffic(choices[0]).train)
    for name, policy in ((rl.PPO, PPOPolicy.from_payload(payload)), (rl.HPA, HPAPolicy(config)),
                         (rl.BEST, rule)):
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
    assert not page.get("plotly_chart") and not page.dataframe and not page.radio


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    """A data home with the synthetic queue_metrics dataset and a predictor of its load
    (``arrivals``, 1, 5 and 15 steps ahead) trained small on it: a local checkpoint, no registry."""
    from ml.predictor.train import train_predictor
    from ml.sim import SimConfig, synthetic_series
    from ml.sim.dataset import build_queue_metrics, dataset_path, write_queue_metrics

    home = tmp_path_factory.mktemp("predictor-page") / "home"
    config = SimConfig()
    series = synthetic_series(days=4, seed=4).scaled_to(config.mean_arrival_rate)
    dataset = write_queue_metrics(build_queue_metrics(series, config=config),
                                  dataset_path(home / "data", "synthetic"))
    train_predictor(dataset, None, home / "models" / "predictor_lgbm.pkl",
                    params={"n_estimators": 40}, progress=False)
    return home


def _on_home(home, monkeypatch) -> None:
    from tests.dashboard.conftest import CLOSED, _fresh_caches

    monkeypatch.setenv("PRIORITYMAX_HOME", str(home))
    for variable in ("PRIORITYMAX_API_URL", "PRIORITYMAX_DAGSTER_URL", "PRIORITYMAX_AUTOSCALER_URL"):
        monkeypatch.setenv(variable, CLOSED)
    _fresh_caches()


@pytest.fixture
def on_trained(data_home, trained_home, monkeypatch):
    _on_home(trained_home, monkeypatch)
    yield trained_home
    _on_home(data_home, monkeypatch)


def _values(array) -> np.ndarray:
    """A plotly figure's array as JSON gives it: a list, or typed binary (``bdata``)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array, dtype=float)


def _recorded(home) -> dict:
    import json

    return json.loads((home / "models" / "predictor_lgbm.json").read_text())


def test_predictor_page_shows_the_load_forecast_per_horizon_with_its_band(on_trained):
    page = open_page("predictor")
    model, dataset = page.selectbox[0], page.selectbox[1]
    assert model.value == "models/predictor_lgbm.pkl (local file)"
    assert dataset.options == ["synthetic (trained on)"]  # the training data, not listed twice
    shown = texts(page)
    assert "forecasting `arrivals` 1, 5, 15 step(s) ahead" in shown
    assert "of the dataset the model was trained on" in shown
    assert "Training window:" in shown and "Holdout window:" in shown

    horizon = page.radio[0]
    assert horizon.value == 1
    assert horizon.options == ["1 step ahead (1 min)", "5 steps ahead (5 min)", "15 steps ahead (15 min)"]

    # The per-horizon table: on its own dataset, exactly the holdout metrics it recorded.
    table = page.dataframe[0].value
    assert table["horizon"].tolist() == [1, 5, 15]
    recorded = _recorded(on_trained)["metrics"]["holdout"]["by_horizon"]
    for row in table.itertuples():
        scored = recorded[str(row.horizon)]
        assert row.rmse == pytest.approx(scored["rmse"], rel=1e-9) == pytest.approx(row.trained_rmse)
        assert row.p90_coverage == pytest.approx(scored["p90_coverage"])
        assert 0.5 < row.p90_coverage <= 1.0
        assert row.persistence_rmse == pytest.approx(scored["baselines"]["persistence"]["rmse"])
        assert row.seasonal_naive_rmse == pytest.approx(scored["baselines"]["seasonal_naive"]["rmse"])
        assert row.rows == scored["rows"]
    assert table["rmse"].is_monotonic_increasing  # further ahead, larger misses
    assert _metrics(page)["model RMSE"] == f"{table['rmse'].iloc[0]:.3f}"

    charts = page.get("plotly_chart")
    assert len(charts) == 3  # forecast with its band, error by load decile, relative errors
    forecast = json.loads(charts[0].proto.spec)["data"]
    assert [t["name"] for t in forecast] == ["p50", "p90 (p50–p90 band)", "forecast (mean)", "actual"]
    assert forecast[1]["fill"] == "tonexty"
    deciles = json.loads(charts[1].proto.spec)["data"]
    assert {t["name"] for t in deciles} == {"model", "persistence", "seasonal_naive"}
    assert all(len(t["x"]) == 10 and _values(t["y"]).min() > 0 for t in deciles)  # no zero bars

    page.radio[0].set_value(15).run()
    assert not page.exception
    assert page.radio[0].value == 15
    assert _metrics(page)["model RMSE"] == f"{table['rmse'].iloc[2]:.3f}"
    page.multiselect[0].set_value(["persistence"]).run()
    assert not page.exception
    names = [t["name"] for t in json.loads(page.get("plotly_chart")[0].proto.spec)["data"]]
    assert "persistence (last value)" in names


def test_predictor_page_falls_back_and_says_what_it_cannot_read(on_trained, tmp_path, monkeypatch):
    import shutil

    home = tmp_path / "moved"
    shutil.copytree(on_trained, home)
    meta = home / "models" / "predictor_lgbm.json"
    recorded = _recorded(home)
    recorded["data"]["path"] = str(tmp_path / "gone" / "queue_metrics.csv")  # no longer here
    recorded["data"]["fingerprint"] = "0" * 16  # nor any file with its content
    meta.write_text(json.dumps(recorded))
    broken = home / "data" / "broken" / "queue_metrics.csv"
    broken.parent.mkdir()
    broken.write_text("timestamp,other\n2026-01-01T00:00:00Z,1\n")
    _on_home(home, monkeypatch)

    page = open_page("predictor")
    assert page.selectbox[1].options == ["broken", "synthetic"]
    assert "is not here; it is shown on the data home's dataset instead" in texts(page)
    assert "cannot be used for this predictor" in texts(page)  # broken: no arrivals column
    assert not page.get("plotly_chart")
    page.selectbox[1].select("synthetic").run()
    assert not page.exception
    assert "another dataset than the one" in texts(page)  # its content is not the recorded one
    assert page.dataframe[0].value["horizon"].tolist() == [1, 5, 15]
    assert len(page.get("plotly_chart")) == 3

    (home / "models" / "predictor_lgbm.pkl").write_bytes(b"not a pickle")
    _on_home(home, monkeypatch)
    page = open_page("predictor")
    assert "cannot be read" in texts(page) and "not a predictor checkpoint" in texts(page)
    assert not page.get("plotly_chart")


def test_predictor_page_finds_its_training_data_by_fingerprint_in_a_moved_home(on_trained, tmp_path,
                                                                              monkeypatch):
    """The home was copied elsewhere (another machine, a container's mount): the recorded path is
    gone, but a dataset here has the recorded content. It is the model's own, shown first."""
    import shutil

    home = tmp_path / "moved"
    shutil.copytree(on_trained, home)
    other = home / "data" / "another" / "queue_metrics.csv"
    other.parent.mkdir()
    other.write_text((home / "data" / "synthetic" / "queue_metrics.csv").read_text() + "\n")
    recorded = _recorded(home)
    recorded["data"]["path"] = str(tmp_path / "gone" / "queue_metrics.csv")
    (home / "models" / "predictor_lgbm.json").write_text(json.dumps(recorded))
    _on_home(home, monkeypatch)

    page = open_page("predictor")
    dataset = page.selectbox[1]
    assert dataset.options == ["synthetic (trained on)", "another"]
    assert dataset.value == "synthetic (trained on)"
    shown = texts(page)
    assert "of the dataset the model was trained on" in shown and "is not here" not in shown


def test_a_registered_predictor_without_metadata_reads_its_data_from_its_run(on_populated):
    """A version whose checkpoint came without the metadata file: its MLflow run's parameters
    (``data``, ``data_fingerprint``) say what it was trained on."""
    from dashboard.data import predictor
    from ml.predictor.data import fingerprint

    champion = predictor.models()[0][0]
    assert champion.version == "1"
    assert predictor.training_data(champion, {}) == {
        "path": str(on_populated.dataset), "fingerprint": fingerprint(on_populated.dataset)}
    own = predictor.dataset_choices(None, predictor.datasets(), fingerprint(on_populated.dataset))
    assert [(d.label, d.trained_on) for d in own] == [("synthetic (trained on)", True)]


def test_predictor_page_compares_the_champion_with_the_baselines(on_populated):
    page = open_page("predictor")
    model, dataset = page.selectbox[0], page.selectbox[1]
    assert model.value == "predictor v1 (champion)"
    assert "predictor v2 (challenger)" in model.options
    assert dataset.options == ["synthetic (trained on)"]
    shown = texts(page)
    assert "of the dataset the model was trained on" in shown
    assert page.radio[0].value == 1 and len(page.radio[0].options) == 3

    table = page.dataframe[0].value
    assert table["horizon"].tolist() == [1, 5, 15]
    assert (table["rmse"] > 0).all() and (table["rmse"] >= table["mae"]).all()
    # On its own dataset the holdout is the trainer's: the registered holdout RMSE again.
    from dashboard.data import predictor

    details = predictor.model_details(predictor.models()[0][0])
    assert table["rmse"].iloc[0] == pytest.approx(details["holdout_rmse"], rel=1e-9)
    assert _metrics(page)["model RMSE"] == f"{details['holdout_rmse']:.3f}"
    methods = page.dataframe[1].value  # every forecast at the first horizon
    assert methods["method"].tolist() == ["model", "persistence", "seasonal_naive"]
    assert methods["rows"].nunique() == 1  # every method on the same rows
    assert len(page.get("plotly_chart")) == 3  # forecast and band, error by load, relative error

    page.selectbox[0].select("predictor v2 (challenger)").run()
    assert not page.exception
    assert "**predictor v2 (challenger)**" in texts(page)
    assert page.dataframe[0].value["horizon"].tolist() == [1, 5, 15]
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


def test_per_horizon_metrics_and_errors_by_load_are_duckdb_aggregations():
    import pandas as pd

    from dashboard.data import predictor

    stamps = pd.date_range("2026-01-01", periods=20, freq="min", tz="UTC")
    actual = np.arange(20, dtype=float)  # a load from 0 to 19: two rows per decile
    frame = pd.DataFrame({
        "horizon": [1] * 10 + [5] * 10, "ts": stamps, "actual": actual, "model": actual + 1.0,
        "p50": actual + 1.0, "p90": np.r_[actual[:10] + 2.0, actual[10:] - 1.0],
        "persistence": actual - 2.0, "seasonal_naive": np.nan})
    table = predictor.horizon_metrics(frame, {"1": {"rmse": 0.5, "p90_coverage": 0.9}})
    assert table["horizon"].tolist() == [1, 5] and table["rows"].tolist() == [10, 10]
    assert table["rmse"].tolist() == [1.0, 1.0] and table["persistence_rmse"].tolist() == [2.0, 2.0]
    assert table["p90_coverage"].tolist() == [1.0, 0.0]
    assert table["skill_vs_persistence"].tolist() == [0.5, 0.5]
    assert table["seasonal_naive_rmse"].isna().all()
    assert table["trained_rmse"].iloc[0] == 0.5 and np.isnan(table["trained_rmse"].iloc[1])

    by_load = predictor.error_by_load(frame.drop(columns="horizon"))
    model = by_load[by_load["method"] == "model"]
    assert model["decile"].tolist() == list(range(1, 11)) and (model["rows"] == 2).all()
    assert model["load"].iloc[0] == "D1: 0–1" and model["load"].iloc[-1] == "D10: 18–19"
    assert (model["mae"] == 1.0).all()
    # Relative to the load, floored at 1: the quietest rows' errors are not blown up by zero.
    assert model["relative_mae"].iloc[0] == pytest.approx(1.0)
    assert model["relative_mae"].iloc[-1] == pytest.approx((1 / 18 + 1 / 19) / 2)
    assert set(by_load["method"]) == {"model", "persistence"}  # no seasonal forecast, no rows
