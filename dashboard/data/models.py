"""Registered model versions, the promotion timeline, and promote/rollback through the admin API
(the code path of ``pmx models``, so the dashboard's actions are recorded with the token's name)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import streamlit as st

from dashboard.data.services import ServiceDown, api, settings

MODEL_NAMES = ("predictor", "rl_agent")


@st.cache_data(ttl=10, show_spinner=False)
def versions() -> pd.DataFrame:
    """Every version with aliases, gate result, headline metrics and who promoted it."""
    from ml import registry

    if not registry.registry_exists(settings()):
        raise ServiceDown("MLflow", "no model registry yet: train with --mlflow or run the pipeline")
    rows = []
    for row in registry.list_versions():
        metrics = row["metrics"]
        rows.append({
            "model": row["name"], "version": row["version"], "aliases": row["aliases"],
            "created": row["created"], "gate": {"True": "passed", "False": "failed"}.get(
                row["gate"].get("passed", ""), "not run"),
            "holdout_rmse": metrics.get("holdout_rmse"), "eval_reward": metrics.get("eval_reward"),
            "promoted_by": row["promotion"].get("promotion.actor"),
            "gate_detail": row["gate"], "run_id": row["run_id"],
        })
    return pd.DataFrame(rows)


#: Each model's headline metric (what its gate judges it on), as the tables name it.
HEADLINES = {"holdout_rmse": "holdout RMSE", "eval_reward": "eval reward"}
#: What a table shows where there is nothing to show, rather than the text None.
NOTHING = "—"


def headline(row: Any) -> str:
    """A version's headline metric in words (the predictor's holdout RMSE, the policy's
    evaluation reward): one column for both models instead of one each, half empty."""
    for column, name in HEADLINES.items():
        value = getattr(row, column)
        if value is not None and value == value:  # value == value: not NaN
            return f"{name} {value:.4g}"
    return NOTHING


def model_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Versions as the pages list them: the headline metric in words, and a dash where nobody
    promoted the version."""
    return pd.DataFrame({
        "model": frame["model"], "version": frame["version"],
        "aliases": frame["aliases"].replace("", NOTHING),
        "created": frame["created"], "gate": frame["gate"],
        "headline": [headline(row) for row in frame.itertuples()],
        "promoted_by": frame["promoted_by"].fillna(NOTHING), "run_id": frame["run_id"],
    }).reset_index(drop=True)


def aliased(frame: pd.DataFrame) -> pd.DataFrame:
    """The versions that hold an alias (champion, challenger), as :func:`model_table` lists them."""
    return model_table(frame[frame["aliases"] != ""]).drop(columns="run_id")


def champions(frame: pd.DataFrame) -> dict[str, Any]:
    """Model name -> champion version (None without one)."""
    found = {name: None for name in MODEL_NAMES}
    if not frame.empty:
        for row in frame[frame["aliases"].str.contains("champion")].itertuples():
            found[row.model] = row.version
    return found


@st.cache_data(ttl=10, show_spinner=False)
def timeline() -> pd.DataFrame:
    """Promotions, rollbacks, archives and registrations from ``logs/models_audit.jsonl`` (DuckDB)."""
    path = settings().logs_dir / "models_audit.jsonl"
    columns = ["at", "event", "model", "version", "previous", "actor", "forced", "reason"]
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=columns)
    # Each event has its own fields (a rollback's from_version, an archive's path): read them as
    # one frame with every column, then let DuckDB shape it.
    events = pd.read_json(path, lines=True, dtype=False).reindex(
        columns=["at", "event", "model", "version", "previous_champion", "from_version", "actor",
                 "forced", "reason"])
    with duckdb.connect() as con:
        con.register("events", events.astype(object).where(events.notna(), None))
        return con.execute(
            "SELECT CAST(\"at\" AS TIMESTAMPTZ) AS \"at\", event, model, "
            "CAST(version AS VARCHAR) AS version, "
            "coalesce(nullif(CAST(coalesce(previous_champion, from_version) AS VARCHAR), ''), '—') "
            "AS previous, actor, "
            "coalesce(CAST(forced AS BOOLEAN), false) AS forced, coalesce(reason, '') AS reason "
            "FROM events ORDER BY \"at\"").df()


def promote(model: str, version: int, reason: str, force: bool = False) -> dict[str, Any]:
    result = api("POST", f"/admin/models/{model}/promote",
                 json={"version": int(version), "reason": reason, "force": force})
    versions.clear()
    timeline.clear()
    return result


def rollback(model: str) -> dict[str, Any]:
    result = api("POST", f"/admin/models/{model}/rollback")
    versions.clear()
    timeline.clear()
    return result


@dataclass(frozen=True)
class ModelChoice:
    """A model a page can show: a registered version (``version``) or a checkpoint file (``path``)."""

    label: str
    version: str | None = None
    path: str | None = None


def model_choices(name: str, checkpoint: str) -> tuple[list[ModelChoice], str | None]:
    """The registry's champion of ``name``, then its challenger, then ``<home>/models/<checkpoint>``
    when it exists; and a note when the registry could not be read. Empty: nothing trained yet."""
    from ml import registry

    found: list[ModelChoice] = []
    note = None
    if registry.registry_exists(settings()):
        try:
            for alias in (registry.CHAMPION, registry.CHALLENGER):
                version = registry.version_by_alias(name, alias)
                if version is not None and str(version.version) not in {c.version for c in found}:
                    found.append(ModelChoice(f"{name} v{version.version} ({alias})",
                                             version=str(version.version)))
        except Exception as error:  # a tracking server that does not answer, a broken store
            found, note = [], f"the MLflow registry could not be read ({type(error).__name__}: {error})"
    local = settings().models_dir / checkpoint
    if local.is_file():
        found.append(ModelChoice(f"models/{checkpoint} (local file)", path=str(local)))
    return found, note
