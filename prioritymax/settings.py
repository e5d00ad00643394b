"""The one settings object of the workbench.

Every environment variable the seed documents (config control plane, workflows, trainer) is a field
here, plus ``PRIORITYMAX_HOME``: the data home under which everything a run writes lives (DESIGN.md,
decision 1). The seed's specific variables (``CONFIG_META_DIR``, ``FERNET_KEY_PATH``,
``MLFLOW_TRACKING_URI``...) override single paths; left unset, each path derives from the home.

Read it with :func:`get_settings` (cached, lays the home out on first use), or build
``Settings(...)`` directly in tests and call :meth:`Settings.layout_home`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_TRACE = REPO_ROOT.parent / "shared" / "data" / "nasa_http_1995_per_minute.csv"
BUNDLED_TRACE = REPO_ROOT / "ml" / "sim" / "data" / "nasa_http_1995_per_minute.csv.gz"

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


def _env(name: str, *more: str) -> AliasChoices:
    return AliasChoices(name, *more)


class Settings(BaseSettings):
    """Process-wide configuration, read from the environment and an optional ``.env`` file."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True
    )

    # --- the data home and stores (DESIGN.md decisions 1-3) -------------------------------------
    home: Path = Field(Path("var"), validation_alias=_env("PRIORITYMAX_HOME"))
    db_url_override: str | None = Field(None, validation_alias=_env("PRIORITYMAX_DB_URL"))
    trace_override: Path | None = Field(None, validation_alias=_env("PRIORITYMAX_TRACE"))
    dagster_home_override: Path | None = Field(None, validation_alias=_env("DAGSTER_HOME"))

    # --- config control plane (seed: "Configuration Control Plane") -----------------------------
    mongo_url: str | None = Field(None, validation_alias=_env("MONGO_URL"))
    config_collection: str = Field("config_store", validation_alias=_env("CONFIG_COLLECTION"))
    config_versions_collection: str = Field(
        "config_versions", validation_alias=_env("CONFIG_VERSIONS_COLLECTION")
    )
    config_meta_dir_override: Path | None = Field(None, validation_alias=_env("CONFIG_META_DIR"))
    fernet_key_path_override: Path | None = Field(None, validation_alias=_env("FERNET_KEY_PATH"))
    fernet_key: SecretStr | None = Field(None, validation_alias=_env("FERNET_KEY"))
    slack_webhook_url: SecretStr | None = Field(None, validation_alias=_env("SLACK_WEBHOOK_URL"))
    s3_bucket: str | None = Field(None, validation_alias=_env("S3_BUCKET"))
    s3_prefix: str = Field("config/", validation_alias=_env("S3_PREFIX"))
    config_log_level: LogLevel = Field("INFO", validation_alias=_env("PRIORITYMAX_CONFIG_LOG_LEVEL"))

    # --- workflows (seed: "Workflows API") -----------------------------------------------------
    # The seed's default for REDIS_URL is redis://localhost:6379/0; we only connect when it is set,
    # so the embedded default needs no external service (README, design notes).
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    admin_token: SecretStr | None = Field(None, validation_alias=_env("PRIORITYMAX_ADMIN_TOKEN"))
    #: The role of a request that carries no token (a local sandbox, the seed's token-less cURL
    #: examples). Unset: such a request gets 401. Never admin.
    anonymous_role: Literal["viewer", "operator"] | None = Field(
        None, validation_alias=_env("PRIORITYMAX_ANONYMOUS_ROLE"))
    #: Where Dagster's promotions publish ``predictor.model_version`` / ``autoscaler.policy_version``
    #: (``orchestration/resources.py``), and the operator token they use (unset: the admin token).
    api_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("PRIORITYMAX_API_URL"))
    api_token: SecretStr | None = Field(None, validation_alias=_env("PRIORITYMAX_API_TOKEN"))
    #: An autoscaler worker (``pmx autoscaler``): where it serves (for ``pmx up`` and the
    #: dashboard), and the bearer token its routes ask for (unset: none asked, bind to loopback).
    autoscaler_url: str = Field("http://127.0.0.1:8100", validation_alias=_env("PRIORITYMAX_AUTOSCALER_URL"))
    #: Dagster's webserver, for the admin API's training launches (its GraphQL) and the run links
    #: it returns; ``pmx up`` serves it there.
    dagster_url: str = Field("http://127.0.0.1:3000", validation_alias=_env("PRIORITYMAX_DAGSTER_URL"))
    autoscaler_token: SecretStr | None = Field(None, validation_alias=_env("PRIORITYMAX_AUTOSCALER_TOKEN"))
    #: How often an autoscaler worker asks the registry for the rl_agent challenger it shadows
    #: (seconds; 0: no shadow challenger).
    shadow_refresh_seconds: float = Field(
        30.0, ge=0, validation_alias=_env("PRIORITYMAX_SHADOW_REFRESH_SECONDS"))
    #: The KEDA external scaler's readings (``api/autoscaler/keda``): the Prometheus server a
    #: ScaledObject reads from unless its trigger names one (``prometheusAddress``), and PromQL
    #: queries by reading field that replace the built-in ones (a JSON object; a trigger's
    #: ``query.<field>`` replaces both).
    prometheus_url: str | None = Field(None, validation_alias=_env("PRIORITYMAX_PROMETHEUS_URL"))
    prometheus_queries: dict[str, str] = Field(
        default_factory=dict, validation_alias=_env("PRIORITYMAX_PROMETHEUS_QUERIES"))
    workflows_meta_dir_override: Path | None = Field(
        None, validation_alias=_env("WORKFLOWS_META_DIR")
    )
    workflow_retention_days: int = Field(30, ge=0, validation_alias=_env("WORKFLOW_RETENTION_DAYS"))
    workflow_max_concurrent_runs: int = Field(
        10, ge=1, validation_alias=_env("WORKFLOW_MAX_CONCURRENT_RUNS")
    )
    workflow_executor_default: str = Field(
        "python", validation_alias=_env("WORKFLOW_EXECUTOR_DEFAULT")
    )
    workflow_container_mode: Literal["docker", "k8s"] = Field(
        "docker", validation_alias=_env("WORKFLOW_CONTAINER_MODE")
    )
    workflow_maintenance_interval: int = Field(
        120, ge=1, validation_alias=_env("WORKFLOW_MAINTENANCE_INTERVAL")
    )
    #: A run's lease (DESIGN.md decision 10): the process executing it renews it every
    #: ``workflow_lease_renew_seconds``; one not renewed for ``workflow_lease_seconds`` is reclaimed.
    workflow_lease_seconds: float = Field(
        15.0, gt=0, validation_alias=_env("PRIORITYMAX_WORKFLOW_LEASE_SECONDS")
    )
    workflow_lease_renew_seconds: float = Field(
        5.0, gt=0, validation_alias=_env("PRIORITYMAX_WORKFLOW_LEASE_RENEW_SECONDS")
    )
    #: Module prefixes a python task may import (``workflows`` allows ``workflows`` and
    #: ``workflows.*``). Comma-separated in the environment.
    workflow_python_modules: str = Field(
        "workflows", validation_alias=_env("PRIORITYMAX_WORKFLOW_PYTHON_MODULES")
    )
    #: Hosts http/external tasks may call: ``*`` (any), or comma-separated host names where
    #: ``*.example.com`` matches subdomains.
    workflow_url_allowlist: str = Field("*", validation_alias=_env("PRIORITYMAX_WORKFLOW_URL_ALLOWLIST"))
    workflows_ws_auth_token: SecretStr | None = Field(
        None, validation_alias=_env("WORKFLOWS_WS_AUTH_TOKEN")
    )
    otel_jaeger_host: str | None = Field(
        None, validation_alias=_env("OTEL_EXPORTER_JAEGER_AGENT_HOST")
    )
    otel_jaeger_port: int = Field(6831, validation_alias=_env("OTEL_EXPORTER_JAEGER_AGENT_PORT"))

    # --- trainer (seed: "PriorityMax Unified Trainer") -----------------------------------------
    # The seed says 4; 64 reaches a useful policy many times sooner (docs/benchmarks.md).
    rl_envs: int = Field(64, ge=1, validation_alias=_env("PRIORITYMAX_RL_ENVS"))
    trainer_log: LogLevel = Field("INFO", validation_alias=_env("PRIORITYMAX_TRAINER_LOG"))
    ray_address: str | None = Field(None, validation_alias=_env("RAY_ADDRESS"))
    ray_local_mode: bool = Field(False, validation_alias=_env("RAY_LOCAL_MODE"))
    wandb_api_key: SecretStr | None = Field(None, validation_alias=_env("WANDB_API_KEY"))
    mlflow_tracking_uri_override: str | None = Field(
        None, validation_alias=_env("MLFLOW_TRACKING_URI")
    )

    @field_validator("config_log_level", "trainer_log", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Resolved once, so a later chdir cannot move the home under a running process.
        return value.expanduser().resolve()

    # --- the data home's layout (DESIGN.md decision 1) -----------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def replay_timeline_path(self) -> Path:
        """The timeline ``pmx replay`` writes and the dashboard's Autoscaler page plots."""
        return self.home / "replay" / "timeline.jsonl"

    @property
    def admin_token_path(self) -> Path:
        """Where the API's first start writes a generated admin token (PRIORITYMAX_ADMIN_TOKEN unset)."""
        return self.secrets_dir / "admin.token"

    def api_client_token(self) -> str | None:
        """The bearer token a client of this data home's API uses (a Dagster run publishing a
        promotion, an autoscaler worker): PRIORITYMAX_API_TOKEN, else PRIORITYMAX_ADMIN_TOKEN, else
        the generated admin token file; None when there is none."""
        for secret in (self.api_token, self.admin_token):
            if secret is not None:
                return secret.get_secret_value()
        path = self.admin_token_path
        return path.read_text().strip() if path.is_file() else None

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def wandb_dir(self) -> Path:
        return self.home / "wandb"

    @property
    def dagster_home(self) -> Path:
        return (self.dagster_home_override or self.home / "dagster").expanduser().resolve()

    @property
    def config_meta_dir(self) -> Path:
        return self.config_meta_dir_override or self.home / "config_meta"

    @property
    def workflows_meta_dir(self) -> Path:
        return self.workflows_meta_dir_override or self.home / "workflows_meta"

    @property
    def fernet_key_path(self) -> Path:
        return self.fernet_key_path_override or self.secrets_dir / "fernet.key"

    @property
    def workflow_module_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.workflow_python_modules.split(",") if p.strip())

    @property
    def workflow_url_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.workflow_url_allowlist.split(",") if h.strip())

    @property
    def db_url(self) -> str:
        return self.db_url_override or f"sqlite:///{self.home / 'prioritymax.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri_override or self.embedded_mlflow_uri

    @property
    def embedded_mlflow_uri(self) -> str:
        """The embedded MLflow store in the data home. (MLflow itself exports the URI it is given
        as MLFLOW_TRACKING_URI, so an override equal to this one is still the embedded store.)"""
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def trace_path(self) -> Path:
        """The default traffic trace: PRIORITYMAX_TRACE, else the shared NASA trace, else our copy."""
        if self.trace_override is not None:
            return self.trace_override
        return SHARED_TRACE if SHARED_TRACE.exists() else BUNDLED_TRACE

    def home_dirs(self) -> list[Path]:
        """Every directory of the data home, in creation order."""
        models = self.models_dir
        return [
            models,
            models / "archive",
            models / "rllib_checkpoints",
            models / "tune",
            self.data_dir,
            self.logs_dir,
            self.logs_dir / "runs",
            self.secrets_dir,
            self.dagster_home,
            self.mlflow_dir,
            self.wandb_dir,
            self.config_meta_dir,
            self.workflows_meta_dir,
        ]

    def layout_home(self) -> Settings:
        """Create the data home's directories (idempotent); secrets/ is private to the owner."""
        for directory in self.home_dirs():
            directory.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        return self

    def public_dict(self) -> dict[str, object]:
        """Resolved settings for display: secrets masked, derived paths included."""
        shown: dict[str, object] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            alias = field.validation_alias.choices[0]  # type: ignore[union-attr]
            if isinstance(value, SecretStr):
                value = "**********"
            shown[alias] = str(value) if isinstance(value, Path) else value
        for derived in (
            "models_dir", "data_dir", "logs_dir", "dagster_home", "config_meta_dir",
            "workflows_meta_dir", "fernet_key_path", "db_url", "mlflow_tracking_uri", "trace_path",
        ):
            shown[derived] = str(getattr(self, derived))
        return shown


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, with the data home laid out on first use."""
    return Settings().layout_home()
