import dagster as dg
import pandas as pd
import yaml

from orchestration.checks import CHECKS
from orchestration.definitions import defs
from orchestration.resources import (
    ControlPlaneResource,
    MLflowResource,
    RayResource,
    SettingsResource,
    TrainingBudget,
)
from prioritymax.settings import REPO_ROOT, get_settings

ASSET_KEYS = {"queue_metrics", "predictor_candidate", "predictor_champion", "rl_agent_candidate",
              "rl_agent_evaluation", "rl_agent_champion"}
CHECK_KEYS = {"queue_metrics:data_quality", "predictor_candidate:canary_gate",
              "rl_agent_evaluation:canary_gate"}
JOB_NAMES = {"train_predictor_job", "canary_gate_job", "train_rl_job", "promote_job", "full_pipeline_job"}


def test_the_definitions_load_with_every_part():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == ASSET_KEYS
    checks = {f"{key.asset_key.to_user_string()}:{key.name}" for key in graph.asset_check_keys}
    assert checks == CHECK_KEYS
    assert all(spec.blocking for check in CHECKS for spec in check.check_specs)
    assert {job.name for job in defs.resolve_all_job_defs()} >= JOB_NAMES
    assert defs.resolve_schedule_def("nightly_retrain").job_name == "full_pipeline_job"
    assert defs.resolve_sensor_def("new_trace_sensor").job_name == "full_pipeline_job"
    assert defs.resolve_sensor_def("slack_on_run_failure")
    resources = defs.resources
    for key, kind in (("settings", SettingsResource), ("mlflow", MLflowResource),
                      ("control_plane", ControlPlaneResource), ("ray", RayResource),
                      ("budget", TrainingBudget)):
        assert isinstance(resources[key], kind), key


def test_queue_metrics_materializes_into_the_data_home(small_trace, monkeypatch, data_home):
    monkeypatch.setenv("PRIORITYMAX_TRACE", str(small_trace))
    get_settings.cache_clear()
    result = dg.materialize([defs.resolve_assets_def("queue_metrics")])
    assert result.success
    metadata = result.asset_materializations_for_node("queue_metrics")[0].metadata
    path = data_home / "data" / "small" / "queue_metrics.csv"
    assert metadata["dataset"].value == str(path)
    assert metadata["source"].value == "small"
    assert metadata["rows"].value == len(pd.read_csv(path)) > 0
    assert result.output_for_node("queue_metrics") == {
        "dataset": str(path), "trace": str(small_trace), "source": "small"}


def test_the_readme_run_config_example_is_valid_for_the_full_pipeline():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Orchestration (`orchestration/`)")[1].split("\n## ")[0]
    example = yaml.safe_load(section.split("```yaml")[1].split("```")[0])
    assert dg.validate_run_config(defs.resolve_job_def("full_pipeline_job"), example)
