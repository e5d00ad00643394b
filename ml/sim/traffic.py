"""Traffic sources for the simulator: a real trace replayed from CSV, or a seeded synthetic profile.

Both become a :class:`RateSeries`: the mean arrival rate (tasks/s) of every simulation step, with the
contiguous *segments* the steps belong to. A gap in a trace (minutes with no rows at all) ends a
segment, and an episode always lies inside one segment, so no episode runs across a gap as if the
two sides were adjacent. Zero-count rows are data (a server that was down), not gaps.

The random part of traffic, Poisson arrivals around these rates, is drawn per episode by the
environment (see ``ml.sim.core``), so one series serves any number of seeded episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message names the file and the problem."""


@dataclass(frozen=True)
class RateSeries:
    """Arrival rate per step (tasks/s) with its timestamps and contiguous segments."""

    name: str
    timestamps: np.ndarray  # datetime64[s], UTC, start of each step
    rates: np.ndarray  # float64, mean arrival rate over the step, tasks/s
    segment_bounds: np.ndarray  # int64 (n_segments, 2): [start, end) row ranges
    step_seconds: int

    def __post_init__(self) -> None:
        if len(self.timestamps) != len(self.rates):
            raise ValueError("timestamps and rates differ in length")

    def __len__(self) -> int:
        return len(self.rates)

    @property
    def num_segments(self) -> int:
        return len(self.segment_bounds)

    @property
    def longest_segment(self) -> int:
        return int(np.max(self.segment_bounds[:, 1] - self.segment_bounds[:, 0], initial=0))

    def valid_starts(self, episode_steps: int) -> np.ndarray:
        """Every row an episode of ``episode_steps`` may start at without leaving its segment."""
        starts = [
            np.arange(lo, hi - episode_steps + 1, dtype=np.int64)
            for lo, hi in self.segment_bounds
            if hi - lo >= episode_steps
        ]
        if not starts:
            raise TraceError(
                f"traffic {self.name!r}: no contiguous segment holds an episode of "
                f"{episode_steps} steps (longest segment: {self.longest_segment} steps); "
                "use shorter episodes or a longer trace"
            )
        return np.concatenate(starts)

    def segment_of(self, rows: np.ndarray) -> np.ndarray:
        """The index of the segment each row belongs to."""
        return np.searchsorted(self.segment_bounds[:, 0], rows, side="right") - 1

    def segment_end(self, rows: np.ndarray) -> np.ndarray:
        """The exclusive end of the segment each row belongs to."""
        return self.segment_bounds[self.segment_of(rows), 1]

    def seconds_of_day(self, rows: np.ndarray) -> np.ndarray:
        """UTC seconds since midnight at the start of the given rows."""
        seconds = self.timestamps[rows].astype("datetime64[s]").astype(np.int64)
        return (seconds % SECONDS_PER_DAY).astype(np.float64)

    def scaled_to(self, mean_rate: float) -> RateSeries:
        """The same shape with its mean rate set to ``mean_rate`` tasks/s."""
        current = float(self.rates.mean()) if len(self.rates) else 0.0
        if current <= 0:
            raise TraceError(f"traffic {self.name!r} has no arrivals at all; cannot scale it")
        return replace(self, rates=self.rates * (mean_rate / current))

    def split(self, holdout_fraction: float) -> tuple[RateSeries, RateSeries]:
        """Time-ordered split: the latest ``holdout_fraction`` of the rows is the holdout."""
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        cut = int(round(len(self) * (1.0 - holdout_fraction)))
        return self.slice(0, cut, "train"), self.slice(cut, len(self), "holdout")

    def slice(self, start: int, stop: int, label: str) -> RateSeries:
        """Rows [start, stop) with their segments cut to fit."""
        lo = np.clip(self.segment_bounds[:, 0], start, stop)
        hi = np.clip(self.segment_bounds[:, 1], start, stop)
        keep = hi > lo
        bounds = np.stack([lo[keep], hi[keep]], axis=1) - start
        return RateSeries(
            name=f"{self.name}:{label}",
            timestamps=self.timestamps[start:stop],
            rates=self.rates[start:stop],
            segment_bounds=bounds.astype(np.int64).reshape(-1, 2),
            step_seconds=self.step_seconds,
        )

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "steps": len(self),
            "step_seconds": self.step_seconds,
            "segments": self.num_segments,
            "longest_segment_steps": self.longest_segment,
            "start": str(self.timestamps[0]) if len(self) else None,
            "end": str(self.timestamps[-1]) if len(self) else None,
            "mean_rate": float(self.rates.mean()) if len(self) else 0.0,
            "peak_rate": float(self.rates.max()) if len(self) else 0.0,
        }


def load_trace(
    path: str | Path,
    *,
    timestamp_col: str = "timestamp",
    count_col: str = "requests",
    step_seconds: int = 60,
) -> RateSeries:
    """Read a CSV of ``timestamp,count`` rows into a :class:`RateSeries` at ``step_seconds``.

    Timestamps may be ISO-8601 (``1995-07-01T04:00:00Z``) or ``YYYY-MM-DD HH:MM:SS`` (read as UTC).
    The trace interval is the most common spacing between rows; a larger spacing is a gap that
    starts a new segment. The trace is aggregated (or split evenly) to the simulator's step, which
    must be a whole multiple (or divisor) of the trace interval.
    """
    path = Path(path)
    frame = _read_csv(path)
    for column in (timestamp_col, count_col):
        if column not in frame.columns:
            raise TraceError(
                f"{path}: missing column {column!r}; the columns are {list(frame.columns)} "
                "(set the column names with --timestamp-col / --count-col)"
            )
    if frame.empty:
        raise TraceError(f"{path}: the file has a header but no rows")

    stamps = pd.to_datetime(frame[timestamp_col], utc=True, format="ISO8601", errors="coerce")
    _fail_on_first(path, stamps.isna(), frame[timestamp_col], f"column {timestamp_col!r}",
                   "is not a timestamp")
    counts = pd.to_numeric(frame[count_col], errors="coerce")
    _fail_on_first(path, counts.isna(), frame[count_col], f"column {count_col!r}", "is not a number")
    _fail_on_first(path, counts < 0, frame[count_col], f"column {count_col!r}", "is negative")

    seconds = stamps.to_numpy(dtype="datetime64[s]").astype(np.int64)
    spacing = np.diff(seconds)
    _fail_on_first(path, pd.Series(np.r_[False, spacing == 0]), frame[timestamp_col],
                   f"column {timestamp_col!r}", "is a duplicate timestamp")
    _fail_on_first(path, pd.Series(np.r_[False, spacing < 0]), frame[timestamp_col],
                   f"column {timestamp_col!r}", "is earlier than the row before (rows must be sorted)")

    interval = int(pd.Series(spacing).mode().iloc[0]) if len(spacing) else step_seconds
    irregular = (spacing % interval) != 0
    _fail_on_first(path, pd.Series(np.r_[False, irregular]), frame[timestamp_col],
                   f"column {timestamp_col!r}",
                   f"breaks the trace interval of {interval} s (not a whole number of intervals)")

    gap_rows = np.flatnonzero(spacing > interval) + 1
    bounds = np.stack([np.r_[0, gap_rows], np.r_[gap_rows, len(seconds)]], axis=1)
    return _resample(
        name=path.name.split(".")[0],
        seconds=seconds,
        rates=counts.to_numpy(dtype=np.float64) / interval,
        bounds=bounds,
        interval=interval,
        step_seconds=step_seconds,
        path=path,
    )


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    try:
        return pd.read_csv(path, dtype=str, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: not a readable CSV ({exc})") from None


def _fail_on_first(path: Path, bad: pd.Series, raw: pd.Series, what: str, problem: str) -> None:
    flagged = np.flatnonzero(bad.to_numpy(dtype=bool))
    if len(flagged):
        row = int(flagged[0])
        raise TraceError(
            f"{path}: data row {row + 1} (line {row + 2}): {what} value {raw.iloc[row]!r} {problem}"
            + (f" ({len(flagged)} such rows)" if len(flagged) > 1 else "")
        )


def _resample(
    *,
    name: str,
    seconds: np.ndarray,
    rates: np.ndarray,
    bounds: np.ndarray,
    interval: int,
    step_seconds: int,
    path: Path,
) -> RateSeries:
    """Bring a trace at ``interval`` seconds to the simulator's step, segment by segment."""
    if step_seconds % interval == 0:
        per_step = step_seconds // interval
        out_seconds, out_rates, out_bounds = [], [], []
        n = 0
        for lo, hi in bounds:
            usable = (hi - lo) // per_step * per_step
            if usable == 0:
                continue
            block = rates[lo : lo + usable].reshape(-1, per_step)
            out_rates.append(block.mean(axis=1))
            out_seconds.append(seconds[lo : lo + usable : per_step])
            out_bounds.append((n, n + len(block)))
            n += len(block)
    elif interval % step_seconds == 0:
        per_row = interval // step_seconds
        out_rates = [np.repeat(rates, per_row)]
        offsets = np.arange(per_row, dtype=np.int64) * step_seconds
        out_seconds = [(seconds[:, None] + offsets[None, :]).ravel()]
        out_bounds = [(lo * per_row, hi * per_row) for lo, hi in bounds]
    else:
        raise TraceError(
            f"{path}: the trace interval ({interval} s) and the simulator step ({step_seconds} s) "
            "are not whole multiples of each other"
        )
    if not out_rates:
        raise TraceError(f"{path}: no segment is as long as one {step_seconds} s step")
    return RateSeries(
        name=name,
        timestamps=np.concatenate(out_seconds).astype("datetime64[s]"),
        rates=np.concatenate(out_rates),
        segment_bounds=np.asarray(out_bounds, dtype=np.int64).reshape(-1, 2),
        step_seconds=step_seconds,
    )


@dataclass(frozen=True)
class SyntheticProfile:
    """Shape of synthetic traffic; rates are relative to the mean (the env scales them)."""

    diurnal_amplitude: float = 0.6  # peak-to-mean swing of the daily cycle
    peak_hour_utc: float = 15.0
    weekend_factor: float = 0.65  # Saturday and Sunday traffic relative to weekdays
    bursts_per_day: float = 3.0
    burst_peak: tuple[float, float] = (0.5, 3.0)  # extra load at a burst's start, x mean (uniform)
    burst_decay_minutes: float = 20.0
    noise_sigma: float = 0.08  # log-scale noise, AR(1)
    noise_autocorrelation: float = 0.9
    start: str = "2026-01-05T00:00:00"  # a Monday


def synthetic_series(
    *,
    days: int = 28,
    step_seconds: int = 60,
    seed: int = 0,
    profile: SyntheticProfile | None = None,
) -> RateSeries:
    """A seeded synthetic rate series with daily and weekly cycles, bursts and noise (mean 1)."""
    profile = profile or SyntheticProfile()
    if days <= 0:
        raise ValueError("days must be positive")
    rng = np.random.default_rng(seed)
    steps = int(days * SECONDS_PER_DAY // step_seconds)
    t = np.arange(steps, dtype=np.float64) * step_seconds
    start = np.datetime64(profile.start, "s")
    timestamps = start + t.astype(np.int64).astype("timedelta64[s]")

    hour = (t / 3600.0) % 24.0
    daily = 1.0 + profile.diurnal_amplitude * np.cos(2 * math.pi * (hour - profile.peak_hour_utc) / 24)
    weekday = ((timestamps.astype("datetime64[D]").astype(np.int64) - 4) % 7)  # 0 = Monday
    weekly = np.where(weekday >= 5, profile.weekend_factor, 1.0)

    burst_rate = profile.bursts_per_day * step_seconds / SECONDS_PER_DAY
    kicks = rng.poisson(burst_rate, steps) * rng.uniform(*profile.burst_peak, steps)
    decay = math.exp(-step_seconds / (60.0 * profile.burst_decay_minutes))
    bursts = _ar1(kicks, decay)

    shocks = rng.normal(0.0, profile.noise_sigma, steps)
    rho = profile.noise_autocorrelation
    noise = np.exp(_ar1(shocks * math.sqrt(1 - rho**2), rho))

    rates = daily * weekly * noise + bursts
    rates /= rates.mean()
    return RateSeries(
        name="synthetic",
        timestamps=timestamps,
        rates=rates,
        segment_bounds=np.array([[0, steps]], dtype=np.int64),
        step_seconds=step_seconds,
    )


def _ar1(kicks: np.ndarray, coefficient: float) -> np.ndarray:
    """x[t] = coefficient * x[t-1] + kicks[t], via a linear filter rather than a Python loop."""
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -coefficient], kicks)


def resolve_traffic(
    traffic: RateSeries | str | Path | None,
    mean_rate: float,
    step_seconds: int,
) -> RateSeries:
    """A series in tasks/s from a series, a CSV path, ``"synthetic"`` or ``None`` (synthetic).

    A series passed in is used as is (already in tasks/s, e.g. a split of a scaled trace); a path or
    the synthetic profile is scaled so that its mean rate is ``mean_rate``.
    """
    if isinstance(traffic, RateSeries):
        if traffic.step_seconds != step_seconds:
            raise ValueError(
                f"traffic {traffic.name!r} has {traffic.step_seconds} s steps, "
                f"the simulator {step_seconds} s"
            )
        return traffic
    if traffic is None or str(traffic) == "synthetic":
        return synthetic_series(step_seconds=step_seconds).scaled_to(mean_rate)
    return load_trace(traffic, step_seconds=step_seconds).scaled_to(mean_rate)
