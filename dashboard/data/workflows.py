"""Stored workflows, their layered layout (``GET /workflows/{id}/preview``), their runs and each
run's per-node timeline (``GET /workflows/trace/replay/{run_id}``), through the API with the
settings' token."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pandas as pd
import streamlit as st

from dashboard.data.services import api, utc

WORKFLOW_COLUMNS = ["name", "workflow_id", "latest_version", "description", "created_by", "created_at",
                    "updated_at"]
RUN_COLUMNS = ["run_id", "version", "status", "actor", "created_at", "started_at", "finished_at",
               "duration_seconds", "error"]
SPAN_COLUMNS = ["node_id", "node_type", "attempt", "status", "start", "end", "start_ms", "end_ms",
                "duration_ms", "label"]
#: The narrowest bar of a timeline, as a share of the run's span: a node that took a few
#: microseconds in a run of seconds still shows (about 1% of the chart's width), and its label
#: gives its true duration.
MIN_BAR_SHARE = 0.01


@st.cache_data(ttl=10, show_spinner=False)
def workflows() -> pd.DataFrame:
    """Every stored workflow (not deleted), oldest first."""
    rows = api("GET", "/workflows/")["workflows"]
    frame = pd.DataFrame(rows, columns=WORKFLOW_COLUMNS)
    for column in ("created_at", "updated_at"):
        frame[column] = frame[column].map(utc)
    return frame


@st.cache_data(ttl=30, show_spinner=False)
def preview(workflow_id: str, version: int | None = None) -> dict[str, Any]:
    """The layout of a stored version (the latest by default): ``nodes`` with ``x``/``y``,
    ``layer``, ``type``, ``name``; ``edges`` with ``source``/``target`` and a switch's ``condition``."""
    params = {"version": int(version)} if version else None
    return api("GET", f"/workflows/{quote(workflow_id, safe='')}/preview", params=params)


@st.cache_data(ttl=30, show_spinner=False)
def versions(workflow_id: str) -> list[int]:
    """The workflow's version numbers, newest first."""
    found = api("GET", f"/workflows/{quote(workflow_id, safe='')}/versions")["versions"]
    return sorted((v["version"] for v in found), reverse=True)


def edge_segments(layout: dict[str, Any]) -> pd.DataFrame:
    """One row per drawable edge: source and target with their coordinates, the midpoint and the
    label (a switch's condition, or ``default``)."""
    where = {n["node_id"]: (n["x"], n["y"]) for n in layout.get("nodes", [])}
    rows = []
    for edge in layout.get("edges", []):
        if edge["source"] not in where or edge["target"] not in where:
            continue
        (x0, y0), (x1, y1) = where[edge["source"]], where[edge["target"]]
        label = edge.get("condition") or ("default" if edge.get("default") else "")
        rows.append({"source": edge["source"], "target": edge["target"], "x0": x0, "y0": y0, "x1": x1,
                     "y1": y1, "mx": (x0 + x1) / 2, "my": (y0 + y1) / 2, "label": label})
    return pd.DataFrame(rows, columns=["source", "target", "x0", "y0", "x1", "y1", "mx", "my", "label"])


@st.cache_data(ttl=5, show_spinner=False)
def runs(workflow_id: str | None = None, limit: int = 100) -> pd.DataFrame:
    """Runs, newest first (``GET /workflows/runs?workflow_id=&limit=``)."""
    params: dict[str, Any] = {"limit": int(limit)}
    if workflow_id:
        params["workflow_id"] = workflow_id
    frame = pd.DataFrame(api("GET", "/workflows/runs", params=params)["runs"], columns=RUN_COLUMNS)
    for column in ("created_at", "started_at", "finished_at"):
        frame[column] = frame[column].map(utc)
    return frame


@st.cache_data(ttl=5, show_spinner=False)
def replay(run_id: str) -> dict[str, Any]:
    """The run's events with offsets (ms) and per-node spans (``GET /workflows/trace/replay/{id}``)."""
    return api("GET", f"/workflows/trace/replay/{quote(run_id, safe='')}")


def spans(trace: dict[str, Any]) -> pd.DataFrame:
    """One row per node attempt with absolute start and end times, for a Gantt chart. A node still
    running (no end yet) ends at the run's last event."""
    origin = float(trace.get("started_at") or 0.0)
    last_ms = float(trace.get("duration_ms") or 0.0)
    rows = []
    for span in trace.get("spans", []):
        start_ms = span.get("start_ms")
        if start_ms is None:
            continue
        end_ms = span.get("end_ms")
        status = span.get("status") or "RUNNING"
        end_ms = max(float(end_ms if end_ms is not None else last_ms), float(start_ms))
        label = span["node_id"] + (f" (attempt {span['attempt']})" if span.get("attempt", 1) > 1 else "")
        rows.append({"node_id": span["node_id"], "node_type": span.get("node_type"),
                     "attempt": span.get("attempt", 1), "status": status,
                     "start": utc(origin + start_ms / 1000), "end": utc(origin + end_ms / 1000),
                     "start_ms": float(start_ms), "end_ms": end_ms,
                     "duration_ms": round(end_ms - start_ms, 3), "label": label})
    frame = pd.DataFrame(rows, columns=SPAN_COLUMNS)
    return frame.sort_values(["start_ms", "label"], ignore_index=True)


def events(trace: dict[str, Any]) -> pd.DataFrame:
    """The run's events in order: offset, type, node, status, attempt, error."""
    rows = [{"seq": e.get("seq"), "offset_ms": e.get("offset_ms"), "type": e.get("type"),
             "node_id": e.get("node_id"), "status": e.get("status"), "attempt": e.get("attempt"),
             "duration_ms": e.get("duration_ms"), "error": e.get("error")}
            for e in trace.get("events", [])]
    return pd.DataFrame(rows, columns=["seq", "offset_ms", "type", "node_id", "status", "attempt",
                                       "duration_ms", "error"])


def duration_text(ms: float) -> str:
    """A duration as a reader says it: ``42 µs``, ``3.5 ms``, ``2.31 s``."""
    if ms < 0.9995:
        return f"{ms * 1000:.0f} µs"
    if ms < 999.5:
        return f"{ms:.3g} ms"
    return f"{ms / 1000:.2f} s"


def timeline_bars(spans_frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`spans` ready for a Gantt chart in milliseconds since the run started: each bar starts
    at ``start_ms`` and is ``bar_ms`` wide, at least :data:`MIN_BAR_SHARE` of the run's span so
    that sub-millisecond nodes stay visible; ``duration`` is the true duration in words."""
    if spans_frame.empty:
        return spans_frame.assign(bar_ms=[], duration=[])
    span_ms = float(spans_frame["end_ms"].max() - spans_frame["start_ms"].min())
    narrowest = MIN_BAR_SHARE * span_ms if span_ms > 0 else 1.0
    return spans_frame.assign(bar_ms=spans_frame["duration_ms"].clip(lower=narrowest),
                              duration=spans_frame["duration_ms"].map(duration_text))
