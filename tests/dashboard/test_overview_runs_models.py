"""Overview, Runs and Models pages, empty and populated."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from tests.dashboard.conftest import assert_plain_text, frame_with, open_page, texts

pytestmark = pytest.mark.integration


def _curves(page) -> list[dict]:
    """The traces of the page's first plotly chart (the metric curves)."""
    return json.loads(page.get("plotly_chart")[0].proto.spec)["data"]


def _points(trace: dict) -> int:
    """How many points a trace draws (its y: a list, or typed binary as plotly's JSON gives it)."""
    values = trace["y"]
    if isinstance(values, dict):
        return len(np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]))
    return len(values)


def test_overview_on_an_empty_home_says_what_is_down(on_empty):
    page = open_page("overview")
    shown = texts(page)
    assert "MLflow is unavailable" in shown and "Dagster is unavailable" in shown
    assert "Down: API, Dagster" in shown


def test_overview_shows_health_champions_and_latest_runs(on_populated):
    page = open_page("overview")
    shown = texts(page)
    assert "predictor champion v1" in shown and "rl_agent champion v1" in shown
    health = frame_with(page, "service", "up", "detail")
    states = dict(zip(health["service"], health["up"], strict=True))
    assert states["API"] == "up" and states["Dagster"] == "down" and states["MLflow"] == "up"
    assert "Down: Dagster" in shown  # the webserver is not started in these tests
    assert_plain_text(health, "up", "detail")
    # The worker serves the champion and follows the API: it says so, not a bare "ok;".
    worker = health[health["service"].str.startswith("Autoscaler")]["detail"].tolist()
    assert len(worker) == 1 and re.fullmatch(r"ok, answered in \d+ ms", worker[0]), worker
    champions = frame_with(page, "model", "aliases", "headline")
    assert champions["aliases"].tolist() == ["champion", "challenger", "champion"]
    assert_plain_text(champions, "aliases", "gate", "headline", "promoted_by")
    assert champions["headline"].iloc[0].startswith("holdout RMSE ")
    assert champions["headline"].iloc[2].startswith("eval reward ")
    latest = frame_with(page, "experiment", "run_name")
    assert set(latest["experiment"]) == {"predictor", "rl_agent"}


def test_a_worker_with_problems_says_which(on_empty):
    from dashboard.data import services

    assert services.worker_detail({"status": "ok", "problems": []}, 12.4) == "ok, answered in 12 ms"
    assert services.worker_detail({"status": "degraded", "problems": ["no rl_agent version loaded"]},
                                  3.0) == "degraded: no rl_agent version loaded"
    assert services.worker_detail({}, 5.0) == "unknown, answered in 5 ms"


@pytest.fixture
def dagster_runs(on_empty):
    """Three real Dagster runs of a one-step job on the data home's instance, launched as the
    pipeline (``dagster job launch``: no launcher tag), a schedule and the admin API do."""
    import dagster as dg

    from orchestration.instance import ensure_dagster_home
    from prioritymax.settings import get_settings

    @dg.op
    def step() -> int:
        return 1

    @dg.job(name="full_pipeline_job")
    def pipeline():
        step()

    instance = dg.DagsterInstance.from_config(str(ensure_dagster_home(get_settings())))
    try:
        for tags in ({"prioritymax/training": "true"}, {"dagster/schedule_name": "nightly_retrain"},
                     {"prioritymax/launched_by": "test-operator"}):
            assert pipeline.execute_in_process(instance=instance, tags=tags).success
    finally:
        instance.dispose()


def test_overview_says_what_launched_each_dagster_run(dagster_runs):
    page = open_page("overview")
    latest = frame_with(page, "job", "launched_by")
    assert len(latest) == 3 and set(latest["status"]) == {"SUCCESS"}
    assert_plain_text(latest, "status", "launched_by")
    launched = latest["launched_by"].tolist()
    assert launched[0] == "test-operator" and launched[1] == "schedule nightly_retrain"  # newest first
    assert launched[2].startswith("—") and "untagged" in launched[2]


def test_who_launched_a_run_is_read_from_its_tags():
    from dashboard.data.runs import launcher

    assert launcher({"dagster/sensor_name": "new_trace_sensor"}) == "sensor new_trace_sensor"
    assert launcher({"dagster/backfill": "abc"}) == "backfill abc"
    assert launcher({"workflow/source": "api", "workflow/id": "wf_1"}) == "workflow run via api"
    assert launcher({"dagster/parent_run_id": "0123456789"}) == "re-execution of 01234567"
    # An actor the admin API recorded wins over Dagster's own tags.
    assert launcher({"prioritymax/launched_by": "alice", "dagster/schedule_name": "s"}) == "alice"


def test_runs_on_an_empty_home_says_mlflow_and_dagster_are_missing(on_empty):
    shown = texts(open_page("runs"))
    assert "MLflow is unavailable" in shown and "Dagster is unavailable" in shown


def test_runs_opens_on_a_learning_curve_of_one_experiment(on_populated):
    page = open_page("runs")
    experiment = next(s for s in page.selectbox if s.label == "Experiment")
    assert experiment.value == "rl_agent" and experiment.options == ["predictor", "rl_agent"]
    table = page.dataframe[0].value
    assert len(table) == 1 and table["run"].tolist() == ["ppo-4envs"]
    # The metrics a run is judged on, under their own names: a table that fits; the rest on request,
    # and only this experiment's (no column of another experiment's blanks).
    metrics = [c for c in table.columns if c not in ("run", "id", "status", "started", "seconds")]
    assert metrics == ["eval_reward", "hpa_reward"] and table[metrics].notna().all().all()
    columns = next(m for m in page.multiselect if m.label == "Metric columns")
    assert "losses/value_loss" in columns.options and "holdout_rmse" not in columns.options
    columns.set_value(["eval_reward", "losses/value_loss"]).run()
    assert list(page.dataframe[0].value.columns[-2:]) == ["eval_reward", "losses/value_loss"]
    # The default metric is a curve the trainer logged every epoch: more than one point.
    metric = next(s for s in page.selectbox if s.label == "Metric")
    assert metric.value == "charts/eval_reward"
    (trace,) = _curves(page)
    assert trace["type"] == "scatter" and _points(trace) > 1  # evaluated after each epoch
    page.checkbox[0].check().run()  # log scale
    assert not page.exception


def test_runs_compares_parameters_within_one_experiment(on_populated):
    page = open_page("runs")
    next(s for s in page.selectbox if s.label == "Experiment").select("predictor").run()
    assert not page.exception
    table = page.dataframe[0].value
    assert len(table) == 2 and "holdout_rmse" in table.columns and table["holdout_rmse"].notna().all()
    columns = next(m for m in page.multiselect if m.label == "Metric columns").options
    assert "valid_rmse" in columns and "charts/eval_reward" not in columns
    chosen = next(m for m in page.multiselect if m.label == "Runs")
    assert len(chosen.value) == 2  # both predictor runs, and only them
    assert next(s for s in page.selectbox if s.label == "Metric").value == "valid_rmse"
    assert all(_points(trace) > 1 for trace in _curves(page))  # LightGBM's validation curves
    # The two predictor runs differ in n_estimators: only that is shown, with a value in every cell.
    diff = page.dataframe[1].value
    assert diff.index.tolist() == ["param_n_estimators"] and len(diff.columns) == 2
    assert sorted(diff.iloc[0].tolist()) == ["10", "60"]
    assert diff.notna().all().all() and not (diff == "None").any().any()


def test_a_metric_logged_once_per_run_is_a_bar_per_run(on_populated):
    page = open_page("runs")
    next(s for s in page.selectbox if s.label == "Experiment").select("predictor").run()
    next(s for s in page.selectbox if s.label == "Metric").select("holdout_rmse").run()
    assert not page.exception
    traces = _curves(page)
    assert {t["type"] for t in traces} == {"bar"} and sum(_points(t) for t in traces) == 2
    assert "holdout_rmse is logged once per run" in texts(page)


def test_parameters_of_a_run_that_recorded_none_are_left_out():
    from dashboard.data import runs

    frame = pd.DataFrame({"run_id": ["a", "b", "c"], "params.lr": ["0.1", "0.2", None],
                          "params.seed": ["0", "0", None], "params.kind": ["ppo", None, None]})
    diff, bare = runs.param_diff(frame, ["a", "b", "c"])
    assert bare == ["c"] and list(diff.columns) == ["a", "b"]
    assert diff.to_dict() == {"a": {"lr": "0.1", "kind": "ppo"}, "b": {"lr": "0.2", "kind": "—"}}


def test_models_on_an_empty_home_says_there_is_no_registry(on_empty):
    shown = texts(open_page("models"))
    assert "MLflow is unavailable" in shown and "No promotion" in shown


def test_models_lists_versions_and_promotes_through_the_admin_api(on_populated):
    page = open_page("models")
    predictor = page.dataframe[0].value
    assert predictor["aliases"].tolist() == ["champion", "challenger"]
    assert_plain_text(predictor, "aliases", "gate", "headline", "promoted_by")
    assert "predictor" in texts(page) and page.get("plotly_chart")  # the timeline
    page.text_input(key="reason-predictor").input("from the dashboard test")
    page.checkbox(key="force-predictor").check()
    page.selectbox(key="version-predictor").set_value(2)
    page.button[0].click().run()  # the predictor form's submit: an operator may not force
    assert "Not promoted" in texts(page) and "admin" in texts(page)
    page.checkbox(key="force-predictor").uncheck()
    page.button[0].click().run()
    shown = texts(page)
    assert "Not promoted" in shown and "gate" in shown  # version 2's gate has not been run
    with on_populated.api.client("admin") as admin:
        forced = admin.post("/admin/models/predictor/promote", json={"version": 2, "force": True})
        assert forced.status_code == 200, forced.text
    page = open_page("models")
    page.button(key="rollback-predictor").click().run()
    assert "champion back to v1" in texts(page) and "by test-operator" in texts(page)
    from ml import registry

    registry.set_challenger("predictor", 2)  # as the other pages' tests expect the shared home
