"""Overview, Runs and Models pages, empty and populated."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import open_page, texts

pytestmark = pytest.mark.integration


def test_overview_on_an_empty_home_says_what_is_down(on_empty):
    page = open_page("overview")
    shown = texts(page)
    assert "MLflow is unavailable" in shown and "Dagster is unavailable" in shown
    assert "Down: API, Dagster" in shown


def test_overview_shows_health_champions_and_latest_runs(on_populated):
    page = open_page("overview")
    shown = texts(page)
    assert "predictor champion v1" in shown and "rl_agent champion v1" in shown
    health = page.dataframe[0].value
    assert dict(zip(health["service"], health["up"], strict=True))["API"] == "✅ up"
    assert "Down: Dagster" in shown  # the webserver is not started in these tests
    latest = page.dataframe[2].value
    assert set(latest["experiment"]) == {"predictor", "rl_agent"}


def test_runs_on_an_empty_home_says_mlflow_and_dagster_are_missing(on_empty):
    shown = texts(open_page("runs"))
    assert "MLflow is unavailable" in shown and "Dagster is unavailable" in shown


def test_runs_lists_both_experiments_overlays_curves_and_diffs_parameters(on_populated):
    page = open_page("runs")
    table = page.dataframe[0].value
    assert set(table["experiment"]) == {"predictor", "rl_agent"} and len(table) == 3
    assert page.get("plotly_chart"), "no metric curve drawn"
    # Two predictor runs differ in their parameters (n_estimators): only differing ones are shown.
    predictor_runs = table[table["experiment"] == "predictor"]["run_id"].tolist()
    page.multiselect[2].set_value(predictor_runs).run()
    diff = page.dataframe[-2].value
    assert diff.index.tolist() == ["param_n_estimators"] and len(diff.columns) == 2
    page.checkbox[0].check().run()  # log scale
    assert not page.exception


def test_models_on_an_empty_home_says_there_is_no_registry(on_empty):
    shown = texts(open_page("models"))
    assert "MLflow is unavailable" in shown and "No promotion" in shown


def test_models_lists_versions_and_promotes_through_the_admin_api(on_populated):
    page = open_page("models")
    predictor = page.dataframe[0].value
    assert predictor["aliases"].tolist() == ["champion", "challenger"]
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
