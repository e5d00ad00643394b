"""The autoscaler workers (``services.autoscaler_urls()``): health, the model versions each serves,
its recent decisions and swaps. A worker that does not answer is :class:`ServiceDown`; its routes
other than ``/health`` are called with PRIORITYMAX_AUTOSCALER_TOKEN when that is set."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import httpx
import pandas as pd
import streamlit as st

from dashboard.data.services import TIMEOUT_S, APIRefused, ServiceDown, answer, autoscaler_urls, settings, utc

SERVICE = "Autoscaler worker"
DECISION_COLUMNS = ["at", "tenant", "mode", "action", "delta", "current_workers", "target_workers",
                    "policy_version", "predictor_version", "fallback", "action_probability", "reason"]
#: The challenger's shadow decision beside each served one (None where no challenger was held).
SHADOW_COLUMNS = ["shadow_version", "shadow_target", "shadow_agreed", "champion_cost", "shadow_cost"]
SWAP_COLUMNS = ["at", "model", "from", "to", "source", "pointer_flip"]
MODEL_COLUMNS = ["name", "version", "source", "loaded_at"]


def urls() -> list[str]:
    return autoscaler_urls()



def _get(url: str, path: str, params: dict | None = None) -> Any:
    token = settings().autoscaler_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
    try:
        response = httpx.get(f"{url}{path}", params=params, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as error:
        raise ServiceDown(SERVICE, f"the worker at {url} does not answer ({type(error).__name__}); start one "
                                   "with `pmx autoscaler` or `pmx up`") from None
    return answer(response)


@st.cache_data(ttl=5, show_spinner=False)
def health(url: str) -> dict[str, Any]:
    """``GET /autoscaler/health``: status (ok, degraded, starting), problems, the control plane
    connection, the models, swaps, uptime."""
    return _get(url, "/autoscaler/health")


def models(url: str) -> pd.DataFrame:
    """The model versions in use, from the worker's health (which lists them)."""
    frame = pd.DataFrame(health(url)["models"], columns=MODEL_COLUMNS)
    frame["loaded_at"] = frame["loaded_at"].map(utc)
    return frame


@st.cache_data(ttl=5, show_spinner=False)
def decisions(url: str, limit: int = 200) -> pd.DataFrame:
    """The latest decisions (``GET /autoscaler/decisions``), newest first, each with the shadow
    challenger's decision on the same reading when one was held (:data:`SHADOW_COLUMNS`)."""
    found = _get(url, "/autoscaler/decisions", {"limit": int(limit)})
    frame = pd.DataFrame(found, columns=DECISION_COLUMNS)
    shadows = [entry.get("shadow") or {} for entry in found]
    for column, field in zip(SHADOW_COLUMNS, ("version", "target_workers", "agreed", "champion_cost", "cost"),
                             strict=True):
        frame[column] = pd.Series([shadow.get(field) for shadow in shadows], dtype=object)
    frame["at"] = frame["at"].map(utc)
    frame["tenant"] = frame["tenant"].fillna("global")
    return frame.iloc[::-1].reset_index(drop=True)


@st.cache_data(ttl=5, show_spinner=False)
def swaps(url: str) -> pd.DataFrame:
    """The latest model swaps (``GET /autoscaler/swaps``), newest first."""
    frame = pd.DataFrame(_get(url, "/autoscaler/swaps"), columns=SWAP_COLUMNS)
    frame["at"] = frame["at"].map(utc)
    return frame.iloc[::-1].reset_index(drop=True)


def challenger(url: str) -> dict[str, Any] | None:
    """The challenger the worker holds in the shadow and its record over its latest shadow
    decisions (from the cached health); None when it holds none."""
    return health(url).get("challenger")


def shadow_series(frame: pd.DataFrame) -> pd.DataFrame:
    """Served and challenger targets over time, long form (one row per decision and side), for
    the decisions the challenger was scored on."""
    scored = frame.dropna(subset=["shadow_target"]).sort_values("at")
    served = scored[["at", "tenant", "target_workers"]].assign(side="served (champion)")
    shadow = scored[["at", "tenant", "shadow_target"]].rename(columns={"shadow_target": "target_workers"})
    shadow = shadow.assign(side="challenger " + scored["shadow_version"].astype(str))
    return pd.concat([served, shadow], ignore_index=True).astype({"target_workers": float})


def version_of(model_frame: pd.DataFrame, name: str) -> str | None:
    found = model_frame.loc[model_frame["name"] == name, "version"]
    return None if found.empty or pd.isna(found.iloc[0]) else str(found.iloc[0])


def decision_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Decisions per tenant and mode: how many, the mean and last target, fallbacks, the versions
    that decided (DuckDB over the frame)."""
    columns = ["tenant", "mode", "decisions", "mean_target", "last_target", "fallbacks", "policy_versions",
               "latest"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    with duckdb.connect() as con:
        con.register("decisions", frame[["at", "tenant", "mode", "target_workers", "fallback",
                                         "policy_version"]])
        return con.execute(
            "SELECT tenant, mode, count(*) AS decisions, round(avg(target_workers), 1) AS mean_target, "
            "arg_max(target_workers, \"at\") AS last_target, count(*) FILTER (WHERE fallback) AS fallbacks, "
            "string_agg(DISTINCT policy_version, ', ' ORDER BY policy_version) AS policy_versions, "
            "max(\"at\") AS latest FROM decisions GROUP BY ALL ORDER BY tenant, mode").df()


def overview() -> pd.DataFrame:
    """One row per worker URL: up or down, its name, status and versions (from the cached health)."""
    rows = []
    for url in urls():
        try:
            found = health(url)
        except (ServiceDown, APIRefused) as error:
            rows.append({"worker": "—", "url": url, "up": "down", "status": "—", "rl_agent": "—",
                         "predictor": "—", "detail": str(error)})
            continue
        versions = {m["name"]: m["version"] for m in found.get("models", [])}
        rows.append({"worker": found.get("worker"), "url": url, "up": "up", "status": found.get("status"),
                     "rl_agent": versions.get("rl_agent") or "none loaded",
                     "predictor": versions.get("predictor") or "none loaded",
                     "detail": "; ".join(found.get("problems") or []) or "no problems"})
    return pd.DataFrame(rows, columns=["worker", "url", "up", "status", "rl_agent", "predictor", "detail"])


@st.cache_data(ttl=1, show_spinner=False)
def replay_timeline(limit: int = 720) -> pd.DataFrame | None:
    """The live replay's latest ``limit`` steps (``pmx replay``'s timeline in the data home),
    oldest first; None when no replay has written one. Each step: the trace's time, the load, the
    pool the worker's decisions sized and the HPA twin's, queues per class, both sides' costs."""
    path = settings().replay_timeline_path
    try:
        lines = path.read_text().splitlines()[-limit:]
    except OSError:
        return None
    # The writer appends whole lines, but a reader can meet the last one half written.
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not entries:
        return None
    frame = pd.DataFrame(entries)
    frame["trace_time"] = pd.to_datetime(frame["trace_time"], utc=True)
    return frame


def replay_pools(frame: pd.DataFrame) -> pd.DataFrame:
    """Workers over trace time, long form: the pool the worker's decisions sized, and the HPA twin
    on the same arrivals."""
    served = frame[["trace_time", "workers"]].assign(pool="served (worker's decisions)")
    twin = frame[["trace_time", "hpa_workers"]].rename(columns={"hpa_workers": "workers"})
    return pd.concat([served, twin.assign(pool="HPA rule (counterfactual)")], ignore_index=True)


def replay_queues(frame: pd.DataFrame) -> pd.DataFrame:
    """The served pool's queue per priority class over trace time, long form."""
    columns = [c for c in frame.columns if c.startswith("queue_")]
    long = frame.melt(id_vars="trace_time", value_vars=columns, var_name="class", value_name="tasks")
    long["class"] = long["class"].str.removeprefix("queue_")
    return long


def replay_totals(frame: pd.DataFrame) -> dict[str, float]:
    """Cost and SLA penalty summed over the steps shown, for the served pool and the HPA twin (the
    reward's units: lower is better)."""
    return {"served_cost": float(frame["cost"].sum()), "served_penalty": float(frame["sla_penalty"].sum()),
            "hpa_cost": float(frame["hpa_cost"].sum()), "hpa_penalty": float(frame["hpa_sla_penalty"].sum())}
