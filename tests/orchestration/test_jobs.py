"""Jobs, the schedule, the sensors, and the promotion's way to the control plane and its workers."""

import json
import time

import dagster as dg
import pytest

from client.control_plane import ConfigClient
from client.publish import ControlPlaneError
from ml import registry
from orchestration.definitions import defs
from orchestration.instance import ensure_dagster_home
from orchestration.resources import ControlPlaneResource
from orchestration.sensors import new_trace_sensor, slack_on_run_failure
from prioritymax.settings import get_settings
from tests.api.conftest import start_server, stop_server
from tests.api.test_backups_alerts import SlackReceiver
from tests.orchestration.conftest import closed_url, execute, land_days, run_config

JOBS = {
    "train_predictor_job": ({"queue_metrics", "predictor_candidate"},
                            {"queue_metrics:data_quality", "predictor_candidate:canary_gate"}),
    "train_rl_job": ({"queue_metrics", "rl_agent_candidate", "rl_agent_evaluation"},
                     {"queue_metrics:data_quality", "rl_agent_evaluation:canary_gate"}),
    "canary_gate_job": (set(), {"predictor_candidate:canary_gate", "rl_agent_evaluation:canary_gate"}),
    "promote_job": ({"predictor_champion", "rl_agent_champion"}, set()),
    "full_pipeline_job": ({"queue_metrics", "predictor_candidate", "predictor_champion",
                           "rl_agent_candidate", "rl_agent_evaluation", "rl_agent_champion"},
                          {"queue_metrics:data_quality", "predictor_candidate:canary_gate",
                           "rl_agent_evaluation:canary_gate"}),
}


TRAINING_JOBS = {"train_predictor_job", "train_rl_job", "full_pipeline_job"}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_each_job_selects_its_assets_and_checks(name):
    assets, checks = JOBS[name]
    ops = assets | {check.replace(":", "_") for check in checks}  # a check's op: <asset>_<check>
    job = defs.resolve_job_def(name)
    assert {node.name for node in job.nodes} == ops


def test_a_training_run_in_progress_holds_back_every_other_training_and_nothing_else(data_home):
    """The run queue's tag limits (the daemon's own counter) on the dagster.yaml that pmx up writes."""
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    instance = dg.DagsterInstance.from_config(str(ensure_dagster_home(get_settings())))
    try:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    finally:
        instance.dispose()

    def run(job: str) -> dg.DagsterRun:
        return dg.DagsterRun(job_name=job, tags=defs.resolve_job_def(job).tags)

    assert not any(TagConcurrencyLimitsCounter(limits, []).is_blocked(run(job)) for job in JOBS)
    for running in sorted(TRAINING_JOBS):
        counter = TagConcurrencyLimitsCounter(limits, [run(running)])
        assert {job for job in JOBS if counter.is_blocked(run(job))} == TRAINING_JOBS, running


def test_the_full_pipeline_promotes_both_candidates_through_the_registry(promoted):
    assert promoted.pipeline.success
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIORITYMAX_HOME", str(promoted.home))
        get_settings.cache_clear()
        versions = {row["name"]: row for row in registry.list_versions() if row["version"] == 1}
    get_settings.cache_clear()
    for model in ("predictor", "rl_agent"):
        row = versions[model]
        assert row["aliases"] == "champion" and row["gate"]["passed"] == "True"
        assert row["promotion"]["promotion.actor"] == "dagster"
        assert row["promotion"]["promotion.reason"] == f"dagster run {promoted.pipeline.run_id}"
    audit = [json.loads(line) for line in (promoted.home / "logs" / "models_audit.jsonl").read_text()
             .splitlines()]
    assert [(a["event"], a["model"], a["actor"], a["role"]) for a in audit] == [
        ("promote", "predictor", "dagster", "operator"), ("promote", "rl_agent", "dagster", "operator")]


def test_promote_job_again_keeps_the_champions_and_publishes_them_again(promoted):
    assert promoted.repromote.success
    for name in ("predictor_champion", "rl_agent_champion"):
        metadata = promoted.repromote.asset_materializations_for_node(name)[0].metadata
        assert metadata["promotion"].value == "already the champion" and metadata["version"].value == 1
        assert metadata["previous_champion"].value == "1"
        assert metadata["control_plane"].value.startswith("not published (no control plane at http://")


def test_a_trace_file_landing_starts_one_retrain(small_trace, data_home, instance):
    traces = data_home / "data" / "traces"
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    assert isinstance(new_trace_sensor(context), dg.SkipReason)

    land_days(small_trace, traces, [0, 1])
    first = new_trace_sensor(context)
    assert isinstance(first, dg.RunRequest) and first.run_key.startswith("traces-")
    assert first.run_config == {"ops": {"queue_metrics": {"config": {"source": "trace_days"}}}}
    assert first.tags["prioritymax/new_trace_files"] == "2"
    assert isinstance(new_trace_sensor(context), dg.SkipReason)  # nothing new since

    (traces / ".2024-03-06.csv").write_text("timestamp,requests\n")  # still being copied: ignored
    assert isinstance(new_trace_sensor(context), dg.SkipReason)
    land_days(small_trace, traces, [2])
    second = new_trace_sensor(context)
    assert second.tags["prioritymax/new_trace_files"] == "1"
    assert second.tags["prioritymax/latest_trace_file"] == "2024-03-06.csv"
    assert second.run_key != first.run_key

    assert new_trace_sensor.job_name == "full_pipeline_job"
    assert new_trace_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def failure_context(instance, result):
    return dg.build_run_status_sensor_context(
        sensor_name="slack_on_run_failure", dagster_event=result.get_run_failure_event(),
        dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()


def test_a_failed_run_is_posted_to_slack_when_a_webhook_is_set(small_trace, monkeypatch, data_home,
                                                               instance):
    # A run whose step fails: no landed trace files for source trace_days.
    crashed = execute("train_predictor_job", instance, run_config(
        ops={"queue_metrics": {"source": "trace_days"}}))
    # A run that a blocking check stopped: a missing day, over a 12-hour gap bound.
    land_days(small_trace, data_home / "data" / "traces", [0, 2])
    blocked = execute("train_predictor_job", instance, run_config(
        ops={"queue_metrics_data_quality": {"max_gap_hours": 12}}))
    assert not crashed.success and not blocked.success

    assert isinstance(slack_on_run_failure(failure_context(instance, crashed)), dg.SkipReason)  # no hook

    slack = SlackReceiver()
    try:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.url)
        get_settings.cache_clear()
        assert slack_on_run_failure(failure_context(instance, crashed)) is None
        assert slack_on_run_failure(failure_context(instance, blocked)) is None
        texts = slack.texts()
    finally:
        slack.close()
    assert texts[0].startswith(f"[prioritymax dagster] dagster run {crashed.run_id} of "
                               "train_predictor_job failed: queue_metrics: ")
    assert "no trace files" in texts[0]
    assert texts[1].startswith(f"[prioritymax dagster] dagster run {blocked.run_id} of train_predictor_job")
    assert "check queue_metrics:data_quality failed: a gap of" in texts[1] and "exceeds 12 h" in texts[1]


def test_the_control_plane_token_comes_from_the_resource_the_settings_or_the_admin_file(monkeypatch,
                                                                                          data_home):
    assert ControlPlaneResource(token="given").bearer_token() == "given"
    assert ControlPlaneResource().bearer_token() is None
    secrets = get_settings().secrets_dir
    (secrets / "admin.token").write_text("from-file\n")
    assert ControlPlaneResource().bearer_token() == "from-file"
    monkeypatch.setenv("PRIORITYMAX_ADMIN_TOKEN", "admin-env")
    get_settings.cache_clear()
    assert ControlPlaneResource().bearer_token() == "admin-env"
    monkeypatch.setenv("PRIORITYMAX_API_TOKEN", "operator-env")
    monkeypatch.setenv("PRIORITYMAX_API_URL", "http://api.example:9000/")
    get_settings.cache_clear()
    assert ControlPlaneResource().bearer_token() == "operator-env"
    assert ControlPlaneResource().base_url() == "http://api.example:9000"


def test_without_a_control_plane_a_promotion_is_recorded_as_not_published():
    url = closed_url()
    published = ControlPlaneResource(url=url).publish("predictor.model_version", 3, comment="test")
    assert not published.published and published.status == f"not published (no control plane at {url})"


@pytest.mark.integration
def test_a_published_version_reaches_a_connected_worker_over_the_websocket(tmp_path):
    server = start_server(tmp_path / "api-home")
    try:
        changes = []
        with ConfigClient(server.url, server.tokens["viewer"]) as worker:
            assert worker.wait_ready(10)
            worker.on_change(changes.append)
            plane = ControlPlaneResource(url=server.url, token=server.tokens["operator"])
            published = plane.publish("autoscaler.policy_version", 7, comment="rl_agent version 7 promoted")
            assert published.published and published.version == 1
            assert published.status == (f"published autoscaler.policy_version=7 at {server.url} "
                                        "(config version 1)")
            deadline = time.monotonic() + 10
            while worker.get("autoscaler.policy_version") != 7 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert worker.get("autoscaler.policy_version") == 7
            assert any(c.get("key") == "autoscaler.policy_version" for c in changes)

            refused = ControlPlaneResource(url=server.url, token=server.tokens["viewer"])
            with pytest.raises(ControlPlaneError, match="HTTP 403"):
                refused.publish("predictor.model_version", 2, comment="a viewer cannot write")
        with server.client("admin") as admin:
            item = admin.get("/config/autoscaler.policy_version").json()
        assert item["value"] == 7 and item["comment"] == "rl_agent version 7 promoted"
    finally:
        stop_server(server)
