import dagster as dg
import yaml

from orchestration.instance import (
    LEGACY_DAGSTER_YAML,
    MAX_CONCURRENT_RUNS,
    MONITOR_TIMEOUT_SECONDS,
    TRAINING_TAG,
    ensure_dagster_home,
)
from orchestration.workflows.runner import dagster_instance
from prioritymax.settings import get_settings


def test_dagster_yaml_sets_the_queue_limits_and_monitoring_and_no_python_logs(data_home):
    home = ensure_dagster_home(get_settings())
    assert home == data_home / "dagster"
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["telemetry"] == {"enabled": False}
    assert "python_logs" not in config

    instance = dg.DagsterInstance.from_config(str(home))
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == MAX_CONCURRENT_RUNS
    assert queue.tag_concurrency_limits == [{"key": TRAINING_TAG, "limit": 1}]
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == MONITOR_TIMEOUT_SECONDS
    assert instance.get_python_log_dagster_handler_config() == {}


def test_a_users_dagster_yaml_is_kept_and_the_old_default_upgraded(data_home):
    home = data_home / "dagster"
    home.mkdir(parents=True)
    mine = "telemetry:\n  enabled: true\nrun_monitoring:\n  enabled: false\n"
    (home / "dagster.yaml").write_text(mine)
    ensure_dagster_home(get_settings())
    assert (home / "dagster.yaml").read_text() == mine

    (home / "dagster.yaml").write_text(LEGACY_DAGSTER_YAML)
    ensure_dagster_home(get_settings())
    assert "QueuedRunCoordinator" in (home / "dagster.yaml").read_text()


def test_the_workflow_runner_uses_it(data_home):
    instance = dagster_instance(get_settings())
    assert (data_home / "dagster" / "dagster.yaml").exists()
    assert instance.run_monitoring_enabled
