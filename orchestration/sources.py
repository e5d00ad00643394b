"""Where the graph's traffic comes from, as one CSV of ``timestamp,requests`` that both the
simulator (``queue_metrics``) and ``train_rl`` read.

- ``trace_days``: the trace files that landed in ``<home>/data/traces/`` (``*.csv``, ``*.csv.gz``),
  one per day as a collector exports them, joined in time into ``data/trace_days/trace.csv``. A day
  that never landed is a gap, which the simulator treats as a segment boundary and the
  data-quality check bounds.
- ``default``: PRIORITYMAX_TRACE, else the NASA HTTP trace.
- ``synthetic``: the simulator's seeded synthetic profile, written as a trace.
- ``auto``: ``trace_days`` when any file has landed, else ``default``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from prioritymax.files import atomic_path
from prioritymax.settings import Settings

Source = Literal["auto", "trace_days", "default", "synthetic"]
TRACE_PATTERNS = ("*.csv", "*.csv.gz")
LANDED = "trace_days"


@dataclasses.dataclass(frozen=True)
class Traffic:
    """A resolved source: its name (the dataset's folder under ``data/``), the trace CSV, and the
    landed files it was joined from (empty for the other sources)."""

    name: str
    trace: Path
    files: tuple[str, ...] = ()


def traces_dir(settings: Settings) -> Path:
    return settings.data_dir / "traces"


def landed_traces(settings: Settings) -> list[Path]:
    folder = traces_dir(settings)
    found = {p for pattern in TRACE_PATTERNS for p in folder.glob(pattern)
             if p.is_file() and not p.name.startswith(".")}  # dot files: copies still being written
    return sorted(found)


def resolve(source: Source, settings: Settings, *, synthetic_days: int = 28, seed: int = 0) -> Traffic:
    if source == "auto":
        source = LANDED if landed_traces(settings) else "default"
    if source == LANDED:
        files = landed_traces(settings)
        if not files:
            raise FileNotFoundError(f"no trace files (*.csv, *.csv.gz) in {traces_dir(settings)}")
        return Traffic(LANDED, join_traces(files, settings.data_dir / LANDED / "trace.csv"),
                       tuple(p.name for p in files))
    if source == "synthetic":
        out = settings.data_dir / "synthetic" / "trace.csv"
        return Traffic("synthetic", write_synthetic_trace(out, days=synthetic_days, seed=seed))
    trace = settings.trace_path
    return Traffic(trace.name.split(".")[0], trace)


def join_traces(files: list[Path], out: Path) -> Path:
    """One trace from several files, in time order. Each file is read by ``load_trace`` first, so
    a bad file is an error naming that file and row; a timestamp in two files keeps the value of
    the file written last (a re-export of a day replaces it)."""
    import pandas as pd

    from ml.sim.traffic import load_trace

    frames = []
    for order, path in enumerate(sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))):
        load_trace(path)  # validates: columns, numbers, no negatives, sorted, regular spacing
        frame = pd.read_csv(path, usecols=["timestamp", "requests"])
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
        frame["order"] = order
        frames.append(frame)
    joined = (pd.concat(frames, ignore_index=True).sort_values(["timestamp", "order"], kind="stable")
              .drop_duplicates("timestamp", keep="last"))
    joined["timestamp"] = joined["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    with atomic_path(out) as partial:
        joined[["timestamp", "requests"]].to_csv(partial, index=False)
    return out


def write_synthetic_trace(out: Path, *, days: int, seed: int) -> Path:
    """The synthetic profile as requests per step at the simulator's mean rate."""
    import pandas as pd

    from ml.sim.config import SimConfig
    from ml.sim.traffic import synthetic_series

    config = SimConfig()
    series = synthetic_series(days=days, step_seconds=config.step_seconds, seed=seed)
    requests = (series.rates * config.mean_arrival_rate * config.step_seconds).round().astype(int)
    stamps = pd.to_datetime(series.timestamps).tz_localize("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    with atomic_path(out) as partial:
        pd.DataFrame({"timestamp": stamps, "requests": requests}).to_csv(partial, index=False)
    return out
