import re
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from prioritymax.settings import REPO_ROOT, Settings, get_settings

SEED_VARIABLES = {
    # config control plane
    "MONGO_URL": ("mongo_url", "mongodb://127.0.0.1:27017/pmx"),
    "CONFIG_COLLECTION": ("config_collection", "cfg"),
    "CONFIG_VERSIONS_COLLECTION": ("config_versions_collection", "cfg_versions"),
    "S3_BUCKET": ("s3_bucket", "bucket"),
    "S3_PREFIX": ("s3_prefix", "backups/"),
    "PRIORITYMAX_CONFIG_LOG_LEVEL": ("config_log_level", "DEBUG"),
    # workflows
    "REDIS_URL": ("redis_url", "redis://127.0.0.1:6379/1"),
    "WORKFLOW_RETENTION_DAYS": ("workflow_retention_days", 7),
    "WORKFLOW_MAX_CONCURRENT_RUNS": ("workflow_max_concurrent_runs", 3),
    "WORKFLOW_EXECUTOR_DEFAULT": ("workflow_executor_default", "http"),
    "WORKFLOW_CONTAINER_MODE": ("workflow_container_mode", "k8s"),
    "WORKFLOW_MAINTENANCE_INTERVAL": ("workflow_maintenance_interval", 30),
    "OTEL_EXPORTER_JAEGER_AGENT_HOST": ("otel_jaeger_host", "127.0.0.1"),
    "OTEL_EXPORTER_JAEGER_AGENT_PORT": ("otel_jaeger_port", 6832),
    # trainer
    "PRIORITYMAX_RL_ENVS": ("rl_envs", 16),
    "PRIORITYMAX_TRAINER_LOG": ("trainer_log", "WARNING"),
    "RAY_ADDRESS": ("ray_address", "127.0.0.1:6379"),
    "RAY_LOCAL_MODE": ("ray_local_mode", True),
}


def test_every_seed_variable_is_read(monkeypatch):
    for name, (_, value) in SEED_VARIABLES.items():
        monkeypatch.setenv(name, str(value).lower() if isinstance(value, bool) else str(value))
    settings = Settings()
    for name, (field, value) in SEED_VARIABLES.items():
        assert getattr(settings, field) == value, name


def test_secrets_are_read_but_never_shown(monkeypatch):
    monkeypatch.setenv("FERNET_KEY", "k" * 44)
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.example/secret")
    monkeypatch.setenv("WORKFLOWS_WS_AUTH_TOKEN", "ws-secret")
    settings = Settings()
    assert settings.fernet_key.get_secret_value() == "k" * 44
    shown = str(settings.public_dict())
    for secret in ("k" * 44, "wandb-secret", "hooks.example", "ws-secret"):
        assert secret not in shown


def test_paths_derive_from_the_home_unless_overridden(monkeypatch, tmp_path):
    settings = Settings()
    home = settings.home
    assert settings.models_dir == home / "models"
    assert settings.fernet_key_path == home / "secrets" / "fernet.key"
    assert settings.dagster_home == home / "dagster"
    assert settings.mlflow_tracking_uri == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    assert settings.db_url.startswith("sqlite:///") and str(home) in settings.db_url

    monkeypatch.setenv("CONFIG_META_DIR", str(tmp_path / "meta"))
    monkeypatch.setenv("FERNET_KEY_PATH", str(tmp_path / "k.key"))
    monkeypatch.setenv("WORKFLOWS_META_DIR", str(tmp_path / "wf"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("PRIORITYMAX_DB_URL", "postgresql+psycopg://u@127.0.0.1/pmx")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dg"))
    settings = Settings()
    assert settings.config_meta_dir == tmp_path / "meta"
    assert settings.fernet_key_path == tmp_path / "k.key"
    assert settings.workflows_meta_dir == tmp_path / "wf"
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert settings.db_url.startswith("postgresql+psycopg://")
    assert settings.dagster_home == tmp_path / "dg"


def test_default_home_is_var_under_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("PRIORITYMAX_HOME")
    monkeypatch.chdir(tmp_path)
    assert Settings().home == tmp_path / "var"


def test_home_is_laid_out_on_first_use(data_home):
    assert not data_home.exists()
    settings = get_settings()
    for sub in ("models/archive", "models/rllib_checkpoints", "models/tune", "data", "logs/runs",
                "secrets", "dagster", "mlflow", "wandb"):
        assert (data_home / sub).is_dir(), sub
    assert stat.S_IMODE((data_home / "secrets").stat().st_mode) == 0o700
    assert settings.layout_home() is settings  # idempotent


@pytest.mark.parametrize(
    "name, value",
    [("WORKFLOW_MAX_CONCURRENT_RUNS", "0"), ("PRIORITYMAX_RL_ENVS", "many"),
     ("PRIORITYMAX_TRAINER_LOG", "LOUD"), ("WORKFLOW_CONTAINER_MODE", "podman")],
)
def test_bad_values_are_rejected_with_the_variable_named(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_readme_documents_every_variable():
    readme = (REPO_ROOT / "README.md").read_text()
    table_names = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.M))
    aliases = {field.validation_alias.choices[0] for field in Settings.model_fields.values()}
    assert aliases <= table_names, sorted(aliases - table_names)
    assert table_names <= aliases, sorted(table_names - aliases)


def test_bundled_trace_matches_the_shared_one():
    import gzip

    from prioritymax.settings import BUNDLED_TRACE, SHARED_TRACE

    if not SHARED_TRACE.exists():
        pytest.skip("../shared/data is not beside this checkout")
    with gzip.open(BUNDLED_TRACE, "rb") as bundled:
        assert bundled.read() == Path(SHARED_TRACE).read_bytes()
