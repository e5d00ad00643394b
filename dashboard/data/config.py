"""Config items and feature flags of the control plane: reads, writes, version diffs, rollback,
the audit log's aggregations (DuckDB) and a live feed of changes from the WebSocket.

Every call goes through :func:`dashboard.data.services.api` with the settings' token, so writes are
recorded with that token's name as the actor, and the API's refusals (a rollback needs the admin
role) come back as :class:`~dashboard.data.services.APIRefused`. Writes clear the caches they
make stale.
"""

from __future__ import annotations

import collections
import difflib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import duckdb
import pandas as pd
import streamlit as st

from dashboard.data.services import api, settings, utc

CONFIG, FLAG = "config", "flag"
#: How many live change messages the dashboard keeps per API and token.
LIVE_CHANGES = 50
ITEM_COLUMNS = ["key", "tenant", "value", "version", "updated_by", "updated_at", "comment", "is_secret"]
FLAG_COLUMNS = ["flag", "layer", "enabled", "rollout_percent", "context_key", "description", "version",
                "updated_by", "updated_at"]
VERSION_COLUMNS = ["version", "operation", "value", "actor", "at", "comment", "previous_version", "deleted"]
#: The audit line's fields the dashboard reads (others, like a reload's details, are left out).
AUDIT_COLUMNS = {"at": "DOUBLE", "operation": "VARCHAR", "actor": "VARCHAR", "kind": "VARCHAR",
                 "key": "VARCHAR", "tenant": "VARCHAR", "version": "BIGINT", "comment": "VARCHAR",
                 "revision": "BIGINT", "value": "JSON"}


def pretty(value: Any) -> str:
    """A JSON value as the editor and the diff show it: indented, keys sorted."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)



def _path(kind: str, key: str) -> str:
    return f"/config/features/{quote(key, safe='')}" if kind == FLAG else f"/config/{quote(key, safe='')}"


# ------------------------------------------------------------------------------------ reads
@st.cache_data(ttl=5, show_spinner=False)
def raw(kind: str) -> list[dict[str, Any]]:
    """Every current config item (``kind="config"``) or flag of every layer, as the API lists them."""
    return api("GET", "/config/features" if kind == FLAG else "/config")


def items() -> pd.DataFrame:
    """Every config item of every layer (global and each tenant): one row each, the value as JSON
    text (secrets come masked)."""
    rows = [{"key": i["key"], "tenant": i["tenant"] or "global", "value": json.dumps(i["value"]),
             "version": i["version"], "updated_by": i.get("updated_by"),
             "updated_at": utc(i.get("updated_at")), "comment": i.get("comment"),
             "is_secret": i.get("is_secret", False)}
            for i in raw(CONFIG)]
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def current(kind: str, key: str, tenant: str | None = None) -> dict[str, Any] | None:
    """The current item or flag of one layer, or None where that layer does not set it."""
    tenant = tenant or None
    return next((i for i in raw(kind) if i["key"] == key and i["tenant"] == tenant), None)


def flags() -> pd.DataFrame:
    """Every flag of every layer: whether it is on, its rollout, its version and who set it."""
    rows = []
    for item in raw(FLAG):
        value = item["value"] if isinstance(item["value"], dict) else {}
        rows.append({"flag": item["key"], "layer": item["tenant"] or "global",
                     "enabled": bool(value.get("enabled")), "rollout_percent": value.get("rollout_percent"),
                     "context_key": value.get("context_key"), "description": value.get("description") or "",
                     "version": item["version"], "updated_by": item.get("updated_by"),
                     "updated_at": utc(item.get("updated_at"))})
    return pd.DataFrame(rows, columns=FLAG_COLUMNS)


def flag_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per flag, one column per layer (global first, then each tenant): on / off, blank
    where the layer does not set it."""
    if frame.empty:
        return pd.DataFrame(columns=["flag", "global"])
    matrix = frame.assign(state=frame["enabled"].map({True: "on", False: "off"})).pivot(
        index="flag", columns="layer", values="state").fillna("")
    layers = ["global"] + sorted(c for c in matrix.columns if c != "global")
    return matrix.reindex(columns=layers, fill_value="").reset_index().rename_axis(columns=None)


@st.cache_data(ttl=5, show_spinner=False)
def versions(kind: str, key: str, tenant: str | None = None) -> pd.DataFrame:
    """Every version of one item or flag of one layer, newest first; ``value`` is the JSON value
    itself (for the diff)."""
    params = {"tenant": tenant} if tenant else None
    rows = api("GET", f"{_path(kind, key)}/versions", params=params)
    frame = pd.DataFrame(rows, columns=VERSION_COLUMNS)
    frame["at"] = frame["at"].map(utc)
    frame["previous_version"] = frame["previous_version"].astype("Int64")
    return frame.sort_values("version", ascending=False, ignore_index=True)


def diff(older: Any, newer: Any, older_label: str, newer_label: str) -> str:
    """A unified diff of two values as pretty JSON (empty when they are equal)."""
    return "\n".join(difflib.unified_diff(pretty(older).splitlines(), pretty(newer).splitlines(),
                                          fromfile=older_label, tofile=newer_label, lineterm=""))


# ----------------------------------------------------------------------------------- writes
def _written() -> None:
    raw.clear()
    versions.clear()
    audit_events.clear()


def save(key: str, value: Any, comment: str | None = None, tenant: str | None = None) -> dict[str, Any]:
    """POST /config: a new version of ``key`` (of ``tenant``'s layer, or the global one)."""
    body = {"key": key, "value": value, "comment": comment or None, "tenant": tenant or None}
    try:
        return api("POST", "/config", json=body)
    finally:
        _written()


def set_flag(name: str, enabled: bool, tenant: str | None = None) -> dict[str, Any]:
    """PUT /config/features/{name}: on or off, globally or for ``tenant``; the layer's other
    settings (description, rollout percentage, context key) are kept as they were."""
    before = current(FLAG, name, tenant)
    kept = before["value"] if before and isinstance(before["value"], dict) else {}
    body = {"enabled": bool(enabled), "tenant": tenant or None, "description": kept.get("description") or "",
            "rollout_percent": kept.get("rollout_percent"), "context_key": kept.get("context_key")}
    try:
        return api("PUT", _path(FLAG, name), json=body)
    finally:
        _written()


def rollback(kind: str, key: str, version: int, tenant: str | None = None) -> dict[str, Any]:
    """POST …/rollback/{version}: the version's value written as a new version (admin role)."""
    params = {"tenant": tenant} if tenant else None
    try:
        return api("POST", f"{_path(kind, key)}/rollback/{int(version)}", params=params)
    finally:
        _written()


# ------------------------------------------------------------------------ the audit log (DuckDB)
def audit_path():
    return settings().logs_dir / "config_audit.jsonl"


@st.cache_data(ttl=10, show_spinner=False)
def audit_events() -> pd.DataFrame:
    """Every change in ``logs/config_audit.jsonl`` (writes, deletes, rollbacks, system events),
    newest first. A line cut short by a concurrent append is skipped."""
    path = audit_path()
    columns = ["at", *[c for c in AUDIT_COLUMNS if c != "at"]]
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=columns)
    spec = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in AUDIT_COLUMNS.items()) + "}"
    with duckdb.connect() as con:
        return con.execute(
            "SELECT to_timestamp(\"at\") AS \"at\", operation, actor, kind, key, tenant, version, comment, "
            f"revision, CAST(value AS VARCHAR) AS value FROM read_json(?, format='newline_delimited', "
            f"ignore_errors=true, columns={spec}) WHERE operation IS NOT NULL ORDER BY \"at\" DESC",
            [str(path)]).df()


def changes_per_key(events: pd.DataFrame) -> pd.DataFrame:
    """Changes per item (kind, key, layer): how many, by whom, the latest."""
    columns = ["kind", "key", "layer", "changes", "actors", "rollbacks", "latest"]
    if events.empty:
        return pd.DataFrame(columns=columns)
    with duckdb.connect() as con:
        con.register("events", events)
        return con.execute(
            "SELECT kind, key, coalesce(tenant, 'global') AS layer, count(*) AS changes, "
            "string_agg(DISTINCT actor, ', ' ORDER BY actor) AS actors, "
            "count(*) FILTER (WHERE operation = 'rollback') AS rollbacks, max(\"at\") AS latest "
            "FROM events WHERE kind IN ('config', 'flag') GROUP BY ALL ORDER BY changes DESC, key").df()


def changes_per_actor(events: pd.DataFrame) -> pd.DataFrame:
    """Changes per actor: how many, of how many keys, of which operations, the latest."""
    columns = ["actor", "changes", "keys", "operations", "latest"]
    if events.empty:
        return pd.DataFrame(columns=columns)
    with duckdb.connect() as con:
        con.register("events", events)
        return con.execute(
            "SELECT actor, count(*) AS changes, count(DISTINCT key) AS keys, "
            "string_agg(DISTINCT operation, ', ' ORDER BY operation) AS operations, max(\"at\") AS latest "
            "FROM events GROUP BY actor ORDER BY changes DESC, actor").df()


# ------------------------------------------------------------------------ live, over the WS
@dataclass
class Live:
    """A :class:`client.control_plane.ConfigClient` following the API and the last change messages it got."""

    client: Any
    changes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LIVE_CHANGES))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.changes.append({**message, "received": time.time()})

    def latest(self) -> pd.DataFrame:
        """The change messages received, newest first."""
        with self.lock:
            messages = list(self.changes)
        rows = [{"revision": m.get("revision"), "type": m.get("type"), "kind": m.get("kind"),
                 "key": m.get("key"), "tenant": m.get("tenant") or "global", "version": m.get("version"),
                 "value": json.dumps(m.get("value")), "received": utc(m["received"])}
                for m in reversed(messages)]
        return pd.DataFrame(rows, columns=["revision", "type", "kind", "key", "tenant", "version", "value",
                                           "received"])

    def close(self) -> None:
        self.client.close()


@st.cache_resource(show_spinner=False, on_release=lambda live: live.close())
def _live(url: str, token: str) -> Live:
    from client.control_plane import ConfigClient

    client = ConfigClient(url, token, start=False, backoff=(0.5, 5.0))
    live = Live(client)
    client.on_change(live.record)
    client.start()
    return live


def live(wait_s: float = 2.0) -> Live:
    """The live follower of the settings' API with the settings' token (one per URL and token,
    shared by every session); waits up to ``wait_s`` for its first snapshot."""
    current = settings()
    follower = _live(current.api_url.rstrip("/"), current.api_client_token() or "")
    follower.client.wait_ready(wait_s)
    return follower
