"""Load forecasts aligned with a traffic series, for policies that plan ahead.

:func:`forecast_series` trains the load predictor (``ml.predictor``, LightGBM per horizon with
conformal intervals) on a *training* series only, then forecasts every row of a target series in
one batch: the mean and p90 of the arrival rate ``horizon_steps`` steps after the row. The
predictor's features at a row use that row and earlier ones only, so the forecast at row t is
exactly what an online forecaster would have said at t - nothing from after t reaches it.

When the target directly continues the training series in time (a time split: the holdout starts
one step after the training part ends), the training part's last rows serve as the forecaster's
history, as they would for a forecaster running in production; otherwise the target's first rows
of each segment lack the history the lags and windows need. Rows without enough history (and rows
of a segment too short to forecast at all) get NaN; policies fall back to the current rate there.

The forecaster sees the series' rates (what a trace recorded), not the simulator's Poisson draws
around them; both are known only up to the row they belong to.

Models and forecasts are cached in memory by the content of the series, so tuning on a training
part and evaluating on its holdout train the predictor once.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.sim.config import SimConfig
from ml.sim.traffic import SECONDS_PER_DAY, RateSeries

log = logging.getLogger(__name__)

TARGET = "requests"
#: Share of the training rows the predictor keeps aside to score itself (it learns from the rest).
PREDICTOR_HOLDOUT_FRACTION = 0.1
_CACHE_SIZE = 8


@dataclass(frozen=True)
class SeriesForecasts:
    """Forecasts of the arrival rate (tasks/s) ``horizon_steps`` steps after each row of a series:
    ``mean[t]`` and ``p90[t]`` are made at row t from rows <= t (NaN without enough history)."""

    series_name: str
    horizon_steps: int
    mean: np.ndarray  # float64, one per series row
    p90: np.ndarray

    def __len__(self) -> int:
        return len(self.p90)

    def at(self, rows: np.ndarray, which: str = "p90") -> np.ndarray:
        """The forecast (``"p90"`` or ``"mean"``) made at each of ``rows`` (series indices)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside the {len(self)} forecast rows of {self.series_name!r}")
        return {"p90": self.p90, "mean": self.mean}[which][rows]

    def coverage(self, series: RateSeries) -> float:
        """Share of forecast rows whose actual rate ``horizon_steps`` later is at or under the
        p90 forecast (within a segment): how well calibrated the upper bound is."""
        actual = _ahead(series, self.horizon_steps)
        known = ~np.isnan(actual) & ~np.isnan(self.p90)
        return float(np.mean(actual[known] <= self.p90[known])) if known.any() else float("nan")


_models: OrderedDict[tuple, object] = OrderedDict()
_forecasts: OrderedDict[tuple, SeriesForecasts] = OrderedDict()


def forecast_horizon(config: SimConfig) -> int:
    """Steps from a decision to the first step a worker added by it serves: the scale-up lands
    in the next step and then warms up for ``warmup_steps`` steps."""
    return config.warmup_steps + 1


def forecast_series(train: RateSeries, target: RateSeries, horizon_steps: int,
                    seed: int = 0) -> SeriesForecasts:
    """Forecasts ``horizon_steps`` ahead for every row of ``target``, by a predictor trained on
    ``train`` alone (see the module's docstring). Raises ``ml.predictor.data.DataError`` when
    ``train`` is too short to train the predictor."""
    if horizon_steps < 1:
        raise ValueError(f"horizon_steps must be at least 1, got {horizon_steps}")
    if train.step_seconds != target.step_seconds:
        raise ValueError(f"train has {train.step_seconds} s steps, target {target.step_seconds} s")
    key = (_digest(train), _digest(target), horizon_steps, seed)
    if key in _forecasts:
        _forecasts.move_to_end(key)
        return _forecasts[key]
    model = _model(train, horizon_steps, seed)
    mean, p90 = _forecast(model, train, target, horizon_steps)
    result = SeriesForecasts(target.name, horizon_steps, mean, p90)
    _remember(_forecasts, key, result)
    return result


def clear_cache() -> None:
    _models.clear()
    _forecasts.clear()


# ------------------------------------------------------------------------------------ internals
def _remember(cache: OrderedDict, key: tuple, value: object) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _digest(series: RateSeries) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(series.rates, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(series.timestamps.astype("datetime64[s]").astype(np.int64)).tobytes())
    h.update(np.ascontiguousarray(series.segment_bounds, dtype=np.int64).tobytes())
    h.update(str(series.step_seconds).encode())
    return h.hexdigest()


def _model(train: RateSeries, horizon_steps: int, seed: int):
    from ml.predictor.train import train_predictor

    horizons = (1, horizon_steps) if horizon_steps > 1 else (1,)
    key = (_digest(train), horizons, seed)
    if key in _models:
        _models.move_to_end(key)
        return _models[key]
    with tempfile.TemporaryDirectory(prefix="prioritymax-forecast-") as folder:
        csv = Path(folder) / "train.csv"
        _training_frame(train).to_csv(csv, index=False)
        model, result = train_predictor(csv, TARGET, Path(folder) / "predictor.pkl",
                                        horizons=horizons, holdout_fraction=PREDICTOR_HOLDOUT_FRACTION,
                                        seed=seed, progress=False)
    log.info("load predictor trained on %s (%d rows) for horizons %s in %.1f s", train.name,
             len(train), list(horizons), result["seconds"])
    _remember(_models, key, model)
    return model


def _frame(series: RateSeries, rows: slice | np.ndarray, shift: np.ndarray | int = 0) -> pd.DataFrame:
    """``timestamp,requests`` for ``rows``: requests per step = rate (tasks/s) x step seconds."""
    seconds = series.timestamps[rows].astype("datetime64[s]").astype(np.int64) + shift
    return pd.DataFrame({
        "timestamp": pd.to_datetime(seconds, unit="s", utc=True),
        TARGET: series.rates[rows] * series.step_seconds,
    })


def _training_frame(train: RateSeries) -> pd.DataFrame:
    """The training rows in time order. Series made of pieces whose timestamps overlap (copies
    laid end to end) have later segments moved forward by whole weeks, which keeps time of day and
    day of week, until each starts after the one before (and so stays its own segment)."""
    week = 7 * SECONDS_PER_DAY
    seconds = train.timestamps.astype("datetime64[s]").astype(np.int64)
    shift = np.zeros(len(train), dtype=np.int64)
    previous_end = None
    for lo, hi in train.segment_bounds:
        if hi <= lo:
            continue
        offset = 0
        if previous_end is not None and seconds[lo] <= previous_end + train.step_seconds:
            offset = ((previous_end + train.step_seconds - seconds[lo]) // week + 1) * week
        shift[lo:hi] = offset
        previous_end = int(seconds[hi - 1] + offset)
    return _frame(train, slice(None), shift)


def _continues(train: RateSeries, target: RateSeries) -> bool:
    """Whether ``target``'s first row is the step right after ``train``'s last, in one segment."""
    if not len(train) or not len(target) or not train.num_segments:
        return False
    last = train.timestamps[-1].astype("datetime64[s]").astype(np.int64)
    first = target.timestamps[0].astype("datetime64[s]").astype(np.int64)
    return int(first - last) == target.step_seconds and int(train.segment_bounds[-1, 1]) == len(train)


def _forecast(model, train: RateSeries, target: RateSeries,
              horizon_steps: int) -> tuple[np.ndarray, np.ndarray]:
    from ml.predictor.data import DataError, load_table
    from ml.predictor.features import build_features

    spec = model.spec
    # History enough for every lag and window and for the seasonal feature (a day before the label).
    context_rows = spec.history + spec.season + horizon_steps + 1
    mean = np.full(len(target), np.nan)
    p90 = np.full(len(target), np.nan)
    windowed = [c for c in spec.target_features() if c != f"{spec.target}_season"]
    for number, (lo, hi) in enumerate(target.segment_bounds):
        piece = _frame(target, slice(lo, hi))
        context = 0
        if number == 0 and lo == 0 and _continues(train, target):
            start = max(int(train.segment_bounds[-1, 0]), len(train) - context_rows)
            piece = pd.concat([_frame(train, slice(start, len(train))), piece], ignore_index=True)
            context = len(train) - start
        try:
            frame = build_features(load_table(piece, target=TARGET), spec, min_complete_rows=1)
        except DataError as error:  # too short to have an interval or any complete row
            log.debug("no forecasts for rows %d..%d of %s: %s", lo, hi, target.name, error)
            continue
        frame = frame.iloc[context:]
        if len(frame) != hi - lo:
            raise RuntimeError("features do not line up with the series' rows")  # pragma: no cover
        ready = ~frame[windowed].isna().any(axis=1).to_numpy()
        if not ready.any():
            continue
        forecast = model.forecast(frame[ready])
        column = f"h{horizon_steps}"
        rows = np.arange(lo, hi)[ready]
        mean[rows] = np.maximum(forecast[column].to_numpy(np.float64), 0.0) / target.step_seconds
        p90[rows] = np.maximum(forecast[f"{column}_p90"].to_numpy(np.float64), 0.0) / target.step_seconds
    return mean, p90


def _ahead(series: RateSeries, steps: int) -> np.ndarray:
    """The rate ``steps`` rows after each row, NaN where that lies past the row's segment."""
    out = np.full(len(series), np.nan)
    for lo, hi in series.segment_bounds:
        if hi - lo > steps:
            out[lo:hi - steps] = series.rates[lo + steps:hi]
    return out
