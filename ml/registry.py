"""The MLflow tracking server and model registry, as every model of the workbench uses them.

Embedded default: a SQLite store and local artifacts in the data home (``mlflow/``); set
MLFLOW_TRACKING_URI to use any MLflow server. Promotion is registry *aliases* only (stages are
deprecated): a newly registered version gets ``challenger``; ``pmx models promote`` moves
``champion`` to a version that passed its gate, records who did it, when, the previous champion,
the version's metrics and gate result (as version tags), and appends a line to
``logs/models_audit.jsonl``; ``pmx models rollback`` moves ``champion`` back.

The same functions serve the predictor (``predictor``) and the RL policy (``rl_agent``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import getpass
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prioritymax.files import append_jsonl
from prioritymax.roles import ROLES
from prioritymax.settings import Settings, get_settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_NAMES = ("predictor", "rl_agent")
#: The control-plane config key that carries each model's live version: a promotion writes it,
#: every autoscaler worker follows it (``api/autoscaler``).
CONFIG_KEYS = {"predictor": "predictor.model_version", "rl_agent": "autoscaler.policy_version"}
GATE_PREFIX = "gate."
#: The checkpoint file of each model among its version's ``checkpoint`` artifacts.
CHECKPOINT_PATTERNS = {"predictor": "*.pkl", "rl_agent": "*.pt"}
#: Each model's headline run metric (``pmx models list``): what its trainer logs to judge it by.
KEY_METRICS = {"predictor": ("holdout_rmse", "holdout rmse"), "rl_agent": ("eval_reward", "eval reward")}
#: How a model gets a registered version, for the errors that find none.
TRAIN_COMMANDS = {"predictor": "pmx train_predictor --mlflow", "rl_agent": "pmx train_rl --mlflow"}
MODELS_URI = "models:/"
LATEST = "latest"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (no such version, gate not passed, ...)."""


class UnknownVersion(RegistryError):
    """No such model or version (the admin API's 404)."""


class Unservable(RegistryError):
    """A version whose checkpoint does not load as a worker would load it."""


class NotAllowed(RegistryError):
    """The role acted in may not do this (the admin API's 403)."""


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _is_embedded(settings: Settings) -> bool:
    return settings.mlflow_tracking_uri == settings.embedded_mlflow_uri


def client(settings: Settings | None = None):
    """An MlflowClient on the configured tracking and registry URI."""
    import mlflow
    from mlflow import MlflowClient

    settings = settings or get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


def registry_exists(settings: Settings | None = None) -> bool:
    """Whether there is a registry to ask (a configured server, or the embedded store on disk)."""
    settings = settings or get_settings()
    return not _is_embedded(settings) or (settings.mlflow_dir / "mlflow.db").exists()


def experiment_id(name: str, settings: Settings | None = None) -> str:
    """The experiment's id, created on first use with its artifacts in the data home."""
    settings = settings or get_settings()
    mlflow_client = client(settings)
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if _is_embedded(settings):
        location = (settings.mlflow_dir / "artifacts" / name).resolve().as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def start_run(experiment: str, run_name: str, tags: dict[str, str] | None = None) -> Iterator[Any]:
    import mlflow

    settings = get_settings()
    exp = experiment_id(experiment, settings)
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=tags or {}) as run:
        yield run


def set_challenger(name: str, version: str | int) -> None:
    client().set_registered_model_alias(name, CHALLENGER, str(version))


def version_by_alias(name: str, alias: str):
    """The model version behind ``alias``, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def download_artifacts(run_id: str, path: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return Path(client().download_artifacts(run_id, path, str(destination)))


def champion_version(name: str):
    """The model version that holds ``champion``; None without a registry, the model or a champion."""
    return version_by_alias(name, CHAMPION) if registry_exists() else None


def challenger_version(name: str):
    """The model version that holds ``challenger``; None without a registry, the model or one."""
    return version_by_alias(name, CHALLENGER) if registry_exists() else None


def champion_checkpoint(name: str, pattern: str, destination: Path) -> tuple[Path, str] | None:
    """The champion version's checkpoint file (its ``checkpoint`` artifact matching
    ``pattern``), downloaded into ``destination``, with the version; None without a champion."""
    version = champion_version(name)
    if version is None:
        return None
    return version_checkpoint(name, version.version, pattern, destination), str(version.version)


def version_checkpoint(name: str, version: str | int, pattern: str, destination: Path) -> Path:
    """The checkpoint file of a registered version (its ``checkpoint`` artifact matching
    ``pattern``), downloaded into ``destination``; a :class:`RegistryError` when the version or
    its checkpoint does not exist."""
    found = _version_or_fail(name, version)
    files = sorted(_checkpoint_folder(found.run_id, destination).glob(pattern))
    if not files:
        raise RegistryError(f"{name} version {found.version} has no checkpoint artifact")
    return files[0]


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A registered version named as MLflow names one (``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``): by alias, or by version number (``LATEST``: the newest)."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


_VERSION_ALIAS = re.compile(r"^[vV]?(\d+)$")  # MLflow reserves v3 as an alias of version 3
_NAME_PART = re.compile(r"^[\w\-]+$")


def parse_model_ref(text: str) -> ModelRef:
    """``NAME@ALIAS``, ``NAME@VERSION``, ``NAME/VERSION``, ``NAME/latest`` or a bare ``NAME``
    (its champion), with or without ``models:/`` in front; a ValueError that shows the forms."""
    body = text.strip().removeprefix(MODELS_URI)
    cut = min((body.index(mark) for mark in "@/" if mark in body), default=len(body))
    name, separator, selector = body[:cut], body[cut:cut + 1], body[cut + 1:]
    usage = (f"{text!r} is not a registered model: use NAME@ALIAS or NAME/VERSION, e.g. "
             "rl_agent@champion, rl_agent/3 or models:/rl_agent@challenger")
    if name not in MODEL_NAMES:
        raise ValueError(f"{usage} (NAME is one of {', '.join(MODEL_NAMES)})" if name else usage)
    if not separator:
        return ModelRef(name, alias=CHAMPION)
    if not _NAME_PART.match(selector):
        raise ValueError(usage)
    number = _VERSION_ALIAS.match(selector)
    if number:
        return ModelRef(name, version=number.group(1))
    if selector.lower() == LATEST:
        return ModelRef(name, version=LATEST)
    if separator == "/":  # a stage (Production, Staging): stages are deprecated, aliases replace them
        raise ValueError(f"{usage} (stages like {selector!r} are not used here: aliases are)")
    return ModelRef(name, alias=selector)


def _missing_alias_hint(name: str, alias: str) -> str:
    if alias == CHALLENGER:
        return f"train one with `{TRAIN_COMMANDS[name]}`"
    if alias == CHAMPION:
        return (f"run `make up` (it trains and promotes one), or `{TRAIN_COMMANDS[name]}` then "
                f"`pmx models promote {name} VERSION` once its gate passed")
    return f"`pmx models list --name {name}` shows its versions and aliases"


def resolve(ref: ModelRef):
    """The registered version ``ref`` names; a :class:`RegistryError` that says what to do when
    there is no registry, no such alias or no such version."""
    settings = get_settings()
    if not registry_exists(settings):
        raise RegistryError(f"no model registry yet (no {settings.mlflow_dir / 'mlflow.db'}): "
                            f"{_missing_alias_hint(ref.name, ref.alias or CHAMPION)}")
    if ref.alias:
        found = version_by_alias(ref.name, ref.alias)
        if found is None:
            named = ref.alias if ref.alias in (CHAMPION, CHALLENGER) else f"version with alias {ref.alias!r}"
            raise RegistryError(f"{ref.name} has no {named} in the registry: "
                                f"{_missing_alias_hint(ref.name, ref.alias)}")
        return found
    if ref.version == LATEST:
        versions = client().search_model_versions(f"name = '{ref.name}'")
        if not versions:
            raise UnknownVersion(f"{ref.name} has no registered version: train one with "
                                 f"`{TRAIN_COMMANDS[ref.name]}`")
        return max(versions, key=lambda found: int(found.version))
    return _version_or_fail(ref.name, ref.version)


def registered_checkpoint(ref: ModelRef, destination: Path) -> tuple[Path, str]:
    """The checkpoint file of the version ``ref`` names (read in place from a local artifact
    store, else downloaded into ``destination``), with the version."""
    found = resolve(ref)
    return (version_checkpoint(ref.name, found.version, CHECKPOINT_PATTERNS[ref.name], destination),
            str(found.version))


def register_files(name: str, files: list[Path], *, metrics: dict[str, float] | None = None,
                   run_name: str = "registered") -> str:
    """Register checkpoint files made elsewhere as a new version of ``name`` (the challenger): a
    run in the model's experiment holds them as its ``checkpoint`` artifact, as a trainer's run
    does, with ``metrics``. Returns the version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    missing = [str(p) for p in files if not Path(p).is_file()]
    if missing or not files:
        raise RegistryError(f"nothing to register: no such files {missing}" if missing
                            else "nothing to register: no files given")
    mlflow_client = client()
    with start_run(name, run_name, tags={"registered_from": ",".join(str(p) for p in files)}) as run:
        for path in files:
            mlflow.log_artifact(str(path), "checkpoint")
        if metrics:
            mlflow.log_metrics(metrics)
    with contextlib.suppress(MlflowException):  # already registered
        mlflow_client.create_registered_model(name)
    version = mlflow_client.create_model_version(name, f"{run.info.artifact_uri}/checkpoint",
                                                 run_id=run.info.run_id)
    set_challenger(name, version.version)
    _audit({"event": "register", "model": name, "version": str(version.version),
            "files": [str(p) for p in files], "actor": default_actor(),
            "at": datetime.now(UTC).isoformat(timespec="seconds")})
    return str(version.version)


def record_gate(name: str, version: str | int, gate: dict[str, Any]) -> None:
    """Write a gate result onto the version as ``gate.*`` tags (what promote checks)."""
    mlflow_client = client()
    for key, value in gate.items():
        if value is None or isinstance(value, (dict, list)):
            continue
        mlflow_client.set_model_version_tag(name, str(version), f"{GATE_PREFIX}{key}", str(value))


def _local_checkpoint_folder(artifact_uri: str) -> Path | None:
    """The ``checkpoint`` artifact folder of a run whose artifacts are on this machine (the
    embedded default); None for a remote artifact store."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    where = urlparse(artifact_uri)
    if where.scheme in ("", "file"):
        local = Path(url2pathname(where.path)) / "checkpoint"
        if local.is_dir():
            return local
    return None


def _checkpoint_folder(run_id: str, destination: Path) -> Path:
    """The run's ``checkpoint`` artifacts: read in place from a local artifact store (the
    embedded default: no copy, one query), else downloaded into ``destination``."""
    local = _local_checkpoint_folder(client().get_run(run_id).info.artifact_uri)
    return local or download_artifacts(run_id, "checkpoint", destination)


def _checkpoint_location(run, pattern: str) -> str | None:
    """Where a run's checkpoint file is, without downloading it: the file in a local artifact
    store, else its artifact URI; None when the run logged no checkpoint."""
    local = _local_checkpoint_folder(run.info.artifact_uri)
    if local is not None:
        files = sorted(local.glob(pattern))
        return str(files[0]) if files else None
    logged = [item.path for item in client().list_artifacts(run.info.run_id, "checkpoint")
              if fnmatch.fnmatch(Path(item.path).name, pattern)]
    return f"{run.info.artifact_uri}/{sorted(logged)[0]}" if logged else None


def _version_or_fail(name: str, version: str | int):
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version(name, str(version))
    except MlflowException:
        raise UnknownVersion(f"model {name!r} has no version {version}") from None


def _aliases(name: str) -> dict[str, str]:
    """version -> comma-separated aliases."""
    model = client().get_registered_model(name)
    by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    return {v: ",".join(sorted(a)) for v, a in by_version.items()}


def list_versions(names: tuple[str, ...] = MODEL_NAMES) -> list[dict[str, Any]]:
    """Every version of the named models with aliases, (legacy) stage, checkpoint file, run
    metrics and gate result."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    rows = []
    for name in names:
        try:
            aliases = _aliases(name)
        except MlflowException:
            continue  # not registered yet
        for version in mlflow_client.search_model_versions(f"name = '{name}'"):
            run = None
            if version.run_id:
                with contextlib.suppress(MlflowException):
                    run = mlflow_client.get_run(version.run_id)
            tags = dict(version.tags or {})
            rows.append({
                "name": name,
                "version": int(version.version),
                "aliases": aliases.get(str(version.version), ""),
                "stage": version.current_stage or "None",
                "created": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
                .isoformat(timespec="seconds"),
                "run_id": version.run_id,
                "checkpoint": _checkpoint_location(run, CHECKPOINT_PATTERNS[name]) if run else None,
                "metrics": run.data.metrics if run else {},
                "gate": {k[len(GATE_PREFIX):]: v for k, v in tags.items() if k.startswith(GATE_PREFIX)},
                "promotion": {k: v for k, v in tags.items() if k.startswith("promotion.")},
            })
    return sorted(rows, key=lambda row: (row["name"], row["version"]))


def _audit(record: dict[str, Any]) -> None:
    append_jsonl(get_settings().logs_dir / "models_audit.jsonl", record)


def promote(
    name: str,
    version: str | int,
    *,
    actor: str | None = None,
    role: str = "operator",
    force: bool = False,
    reason: str = "",
) -> dict[str, Any]:
    """Move ``champion`` to ``version``; only a version whose gate passed, unless an admin forces."""
    if role not in ROLES:
        raise RegistryError(f"unknown role {role!r}; one of {ROLES}")
    if role == "viewer":
        raise NotAllowed("promotion needs the operator or admin role")
    if force and role != "admin":
        raise NotAllowed("--force is for admins only (pass --role admin)")
    actor = actor or default_actor()
    target = _version_or_fail(name, version)
    tags = dict(target.tags or {})
    gate_passed = tags.get(f"{GATE_PREFIX}passed") == "True"
    if not gate_passed and not force:
        state = "failed" if f"{GATE_PREFIX}passed" in tags else "not been run"
        raise RegistryError(
            f"{name} version {version}: its gate has {state}; run the canary first, or have an "
            "admin promote it with --force"
        )
    current = version_by_alias(name, CHAMPION)
    previous = str(current.version) if current is not None else ""
    if previous == str(target.version):
        raise RegistryError(f"{name} version {version} is already the champion")
    _check_loads(name, str(target.version))
    mlflow_client = client()
    when = datetime.now(UTC).isoformat(timespec="seconds")
    metrics = mlflow_client.get_run(target.run_id).data.metrics if target.run_id else {}
    record = {
        "event": "promote", "model": name, "version": str(target.version),
        "previous_champion": previous or None, "actor": actor, "role": role, "at": when,
        "forced": bool(force and not gate_passed), "gate_passed": gate_passed, "reason": reason,
        "metrics": metrics,
        "gate": {k[len(GATE_PREFIX):]: v for k, v in tags.items() if k.startswith(GATE_PREFIX)},
    }
    mlflow_client.set_registered_model_alias(name, CHAMPION, str(target.version))
    challenger = version_by_alias(name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(target.version):
        mlflow_client.delete_registered_model_alias(name, CHALLENGER)  # no longer a challenger
    for key in ("actor", "at", "previous_champion", "forced", "reason"):
        mlflow_client.set_model_version_tag(name, str(target.version), f"promotion.{key}",
                                            str(record[key] if record[key] is not None else ""))
    mlflow_client.set_registered_model_tag(name, "champion.previous", previous)
    _audit(record)
    log.info("%s: champion is now version %s (was %s), by %s", name, target.version, previous, actor)
    return record


def _check_loads(name: str, version: str) -> None:
    """Load the version as a worker would (``ml.serving.load``: download, read, act once); one
    that cannot be served is refused before the alias moves, even when forced: workers would
    refuse it and keep the old one, and the registry would name a champion nobody serves."""
    from ml.serving import ModelLoadError, load

    try:
        load(name, version, "promotion check")
    except ModelLoadError as error:
        raise Unservable(f"{error}; not promoted (workers could not serve it)") from None


def rollback(name: str, *, actor: str | None = None, role: str = "operator") -> dict[str, Any]:
    """Give ``champion`` back to the version that held it before the current one."""
    if role not in ("operator", "admin"):
        raise NotAllowed("rollback needs the operator or admin role")
    current = version_by_alias(name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    previous = (current.tags or {}).get("promotion.previous_champion", "")
    if not previous:
        raise RegistryError(f"{name} version {current.version} has no previous champion")
    actor = actor or default_actor()
    mlflow_client = client()
    mlflow_client.set_registered_model_alias(name, CHAMPION, previous)
    record = {
        "event": "rollback", "model": name, "version": previous,
        "from_version": str(current.version), "actor": actor, "role": role,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    mlflow_client.set_model_version_tag(name, str(current.version), "promotion.rolled_back_at",
                                        record["at"])
    _audit(record)
    return record


def archive(
    name: str,
    *,
    version: str | int | None = None,
    checkpoint: Path | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """A tarball of a checkpoint with its metadata and a manifest, in ``models/archive/``.

    From a registered ``version`` (its ``checkpoint`` artifacts, run metrics and tags) or from a
    local ``checkpoint`` file (with the JSON metadata beside it, when there is one)."""
    import hashlib
    import io
    import json
    import tarfile
    import tempfile

    if (version is None) == (checkpoint is None):
        raise RegistryError("archive either a registered VERSION or a --checkpoint file")
    settings = get_settings()
    when = datetime.now(UTC)
    manifest: dict[str, Any] = {"model": name, "created": when.isoformat(timespec="seconds"),
                                "actor": actor or default_actor()}
    with tempfile.TemporaryDirectory() as folder:
        if checkpoint is not None:
            checkpoint = Path(checkpoint)
            if not checkpoint.is_file():
                raise RegistryError(f"{checkpoint}: no such checkpoint")
            files = [checkpoint, *[p for p in [checkpoint.with_suffix(".json")] if p.is_file()]]
            manifest["source"] = str(checkpoint)
        else:
            found = _version_or_fail(name, version)
            files = sorted(download_artifacts(found.run_id, "checkpoint", Path(folder)).iterdir())
            manifest |= {"version": str(found.version), "run_id": found.run_id,
                         "tags": dict(found.tags or {}),
                         "metrics": client().get_run(found.run_id).data.metrics}
        manifest["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
        label = f"v{version}" if version is not None else "local"
        target = settings.models_dir / "archive" / f"{name}-{label}-{when:%Y%m%dT%H%M%SZ}.tar.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w:gz") as tar:
            for path in files:
                tar.add(path, arcname=path.name)
            data = json.dumps(manifest, indent=2, default=str).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    record = {"event": "archive", "model": name, "version": manifest.get("version"),
              "archive": str(target), "actor": manifest["actor"], "at": manifest["created"]}
    _audit(record)
    return record
