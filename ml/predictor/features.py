"""Forecasting features, built with one DuckDB SQL query over a validated table.

The label of row t is the target ``horizon`` steps later: y(t + h); ``label_<k>`` is the target k
steps later for each forecast horizon k of ``horizons`` (1, 5 and 15 by default). For the simulator's
``queue_next_sec`` the column already holds the next step's queue, so its horizon is 0; for any
other target (``--target requests`` on a raw trace) it is 1, the next period. The latest value of
the target known at t is then y(t) (h = 1) or y(t - 1) (h = 0), and every target feature is built
from that known series only, so no future value feeds a row:

- lags, rolling mean / std / max over several windows and differences of the known target;
- exponentially weighted means of the known target (computed after the query, per segment: SQL
  has no recursive window);
- the value one day before the label (the seasonal-naive forecast, also a baseline);
- current values of every other numeric column, and lags / rolling means / differences of a few
  driver columns (``arrival_rate``, ``queue_len`` when present);
- time of day (sin, cos) and day of week, in UTC.

Gaps are respected: rows are grouped into contiguous segments (a spacing other than the table's
interval starts a new one), every window function is partitioned by segment, and a rolling
window that would need rows from before its segment's start is NULL rather than shorter. Columns
that by definition hold future values (``queue_next_sec`` when it is not the target) are never
features.

The same features written in pandas live in :mod:`ml.predictor.reference`; tests check that both
agree and ``bench/predictor.py`` times both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from ml.predictor.data import DEFAULT_TARGETS, DataError, Table

#: Columns that hold values from after their row's timestamp; only ever a target.
LOOKAHEAD_COLUMNS = ("queue_next_sec",)
#: Columns whose history (not just current value) feeds the model when present.
DRIVER_COLUMNS = ("arrival_rate", "queue_len")
MIN_COMPLETE_ROWS = 50


#: The forecast horizons, in steps, of a target that does not already look ahead.
DEFAULT_HORIZONS = (1, 5, 15)


def default_horizon(target: str) -> int:
    return 0 if target in LOOKAHEAD_COLUMNS else 1


@dataclass(frozen=True)
class FeatureSpec:
    """Which features to build; stored with a model so the same features are built for it."""

    target: str
    horizon: int
    interval_seconds: int
    lags: tuple[int, ...] = (1, 2, 3, 5, 10, 15, 30, 60)
    windows: tuple[int, ...] = (5, 15, 60, 240)
    diffs: tuple[int, ...] = (1, 5)
    driver_lags: tuple[int, ...] = (1, 2, 3)
    driver_windows: tuple[int, ...] = (5, 15, 60)
    exogenous: tuple[str, ...] = ()  # numeric columns used at their current value
    drivers: tuple[str, ...] = ()
    # Steps ahead forecast, one model each (empty: just ``horizon``); the first is ``horizon``.
    horizons: tuple[int, ...] = ()
    ewm_alphas: tuple[float, ...] = (0.03, 0.1, 0.3)

    @classmethod
    def for_table(cls, table: Table, horizon: int | None = None,
                  horizons: tuple[int, ...] | None = None, **overrides) -> FeatureSpec:
        """``horizon``: 0 or 1 (see the module's docstring); ``horizons``: the steps ahead to
        forecast, from ``horizon`` up (default: 1, 5 and 15; a look-ahead target: 0 alone)."""
        horizon = default_horizon(table.target) if horizon is None else horizon
        if horizon not in (0, 1):
            raise DataError("horizon must be 0 (the target already looks one step ahead) or 1")
        if horizon == 0 and table.target not in LOOKAHEAD_COLUMNS:
            raise DataError(f"horizon 0 is only for look-ahead targets {LOOKAHEAD_COLUMNS}")
        if horizons is None:
            horizons = (0,) if horizon == 0 else DEFAULT_HORIZONS
        horizons = tuple(sorted({int(k) for k in horizons}))
        if not horizons or horizons[0] != horizon:
            raise DataError(f"horizons must start at the horizon {horizon}; got {list(horizons)}")
        others = [c for c in table.numeric if c != table.target and c not in LOOKAHEAD_COLUMNS]
        if table.target in DEFAULT_TARGETS:
            # The load is forecast from its own history and the calendar alone: the pool's state
            # does not drive it, and a worker that sees only the load can forecast it.
            others = []
        return cls(
            target=table.target,
            horizon=horizon,
            horizons=horizons,
            interval_seconds=table.interval_seconds,
            exogenous=tuple(others),
            drivers=tuple(c for c in DRIVER_COLUMNS if c in others),
            **overrides,
        )

    @property
    def forecast_horizons(self) -> tuple[int, ...]:
        return self.horizons or (self.horizon,)

    @property
    def offset(self) -> int:
        """How many steps the latest known target value lies before the row (1 - horizon)."""
        return 1 - self.horizon

    @property
    def season(self) -> int:
        """Steps in a day."""
        return max(1, round(86_400 / self.interval_seconds))

    @property
    def history(self) -> int:
        """Rows of a segment before the first row with every non-seasonal feature."""
        return max(max(self.lags), max(self.windows), max(self.diffs)) + self.offset

    def target_features(self) -> list[str]:
        y, o = self.target, self.offset
        return [
            *(f"{y}_lag{k + o}" for k in (0, *self.lags)),
            *(f"{y}_{agg}{w}" for w in self.windows for agg in ("mean", "std", "max")),
            *(f"{y}_diff{d}" for d in self.diffs),
            f"{y}_season",
            *self.ewm_features(),
        ]

    def ewm_features(self) -> list[str]:
        return [f"{self.target}_ewm{a:g}" for a in self.ewm_alphas]

    def driver_features(self) -> list[str]:
        return [
            name
            for c in self.drivers
            for name in (
                *(f"{c}_lag{k}" for k in self.driver_lags),
                *(f"{c}_mean{w}" for w in self.driver_windows),
                f"{c}_diff1",
            )
        ]

    @property
    def features(self) -> list[str]:
        return [
            *self.target_features(),
            *self.exogenous,
            *self.driver_features(),
            "tod_sin",
            "tod_cos",
            "dow",
        ]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _window(spec: FeatureSpec, prefix: str, w: int, counted: bool) -> tuple[str, str, str]:
    """Sum, sum of squares and count of a ``w``-row window from running (prefix) sums.

    Running sums make every rolling mean and std one pass over the segment; DuckDB's framed
    aggregates measured several times slower here. The target's sums run over the target column
    itself, so its window over the known series (which trails the column by ``offset`` rows)
    ends ``offset`` rows back. A target window is only read where it is full (count ``w``);
    a driver's window counts its non-NULL values."""
    shift = spec.offset if prefix == "y" else 0

    def window(col: str) -> str:
        end = f"lag({col}, {shift}) OVER w" if shift else col
        return f"({end} - coalesce(lag({col}, {shift + w}) OVER w, 0))"

    count = window(f"{prefix}_n") if counted else str(w)
    return window(f"{prefix}_s1"), window(f"{prefix}_s2"), count


def _mean(spec: FeatureSpec, prefix: str, w: int, counted: bool = False) -> str:
    total, _, count = _window(spec, prefix, w, counted)
    return f"{prefix}_centre + {total} / {count}"


def _std(spec: FeatureSpec, prefix: str, w: int) -> str:
    total, squares, count = _window(spec, prefix, w, counted=False)
    return f"sqrt(greatest(({squares} - {total} * {total} / {count}) / ({count} - 1), 0))"


def features_sql(spec: FeatureSpec) -> str:
    """The query over table ``source`` (rows with ``seg`` and ``rn``, see
    :func:`ml.predictor.data.load_table`) that yields ts, seg, rn, label, the baselines and the
    features, in the order of ``spec.features``."""
    y, o, h = _q(spec.target), spec.offset, spec.horizon
    known = f"lag({y}, 1) OVER seg_w" if o else y
    label = f"lead({y}, {h}) OVER seg_w" if h else y
    ahead = [k for k in spec.forecast_horizons if k != h]
    labels = "".join(f", lead({y}, {k}) OVER seg_w AS label_{k}" for k in ahead)
    running = {"y": y, **{f"d{i}": _q(c) for i, c in enumerate(spec.drivers)}}
    # Values are centred on the table's first value, rounded: a value from the past of every
    # row (no statistic of the whole table may reach a row), and for whole-number data (counts,
    # queue lengths) the running sums stay whole numbers, which float64 holds exactly, so the
    # rolling std is exact too.
    centres = {
        name: f"(SELECT round({expr}) FROM source WHERE {expr} IS NOT NULL ORDER BY ts LIMIT 1)"
        for name, expr in running.items()
    }
    sums = ", ".join(
        f"{centres[name]} AS {name}_centre, "
        f"sum(coalesce({expr} - {centres[name]}, 0)) OVER run AS {name}_s1, "
        f"sum(coalesce(({expr} - {centres[name]}) ** 2, 0)) OVER run AS {name}_s2"
        + (f", count({expr}) OVER run AS {name}_n" if name != "y" else "")
        for name, expr in running.items()
    )

    name = spec.target
    cols = [f"y_now AS {_q(f'{name}_lag{o}')}"]
    cols += [f"lag(y_now, {k}) OVER w AS {_q(f'{name}_lag{k + o}')}" for k in spec.lags]
    for w in spec.windows:
        full = f"rn >= {w + o}"
        cols += [
            f"CASE WHEN {full} THEN {_mean(spec, 'y', w)} END AS {_q(f'{name}_mean{w}')}",
            f"CASE WHEN {full} THEN {_std(spec, 'y', w)} END AS {_q(f'{name}_std{w}')}",
            f"CASE WHEN {full} THEN max(y_now) OVER (w ROWS BETWEEN {w - 1} PRECEDING AND "
            f"CURRENT ROW) END AS {_q(f'{name}_max{w}')}",
        ]
    cols += [f"y_now - lag(y_now, {d}) OVER w AS {_q(f'{name}_diff{d}')}" for d in spec.diffs]
    cols.append(f"lag(label, {spec.season}) OVER w AS {_q(f'{name}_season')}")
    cols += [_q(c) for c in spec.exogenous]
    for i, c in enumerate(spec.drivers):
        q = _q(c)
        cols += [f"lag({q}, {k}) OVER w AS {_q(f'{c}_lag{k}')}" for k in spec.driver_lags]
        cols += [
            f"CASE WHEN rn >= {w} THEN {_mean(spec, f'd{i}', w, counted=True)} END "
            f"AS {_q(f'{c}_mean{w}')}"
            for w in spec.driver_windows
        ]
        cols.append(f"{q} - lag({q}, 1) OVER w AS {_q(f'{c}_diff1')}")
    cols += [
        "sin(2 * pi() * (epoch(ts) % 86400) / 86400) AS tod_sin",
        "cos(2 * pi() * (epoch(ts) % 86400) / 86400) AS tod_cos",
        "CAST(isodow(ts) AS DOUBLE) AS dow",
    ]
    return f"""
        WITH known AS (
            SELECT *, {known} AS y_now, {label} AS label{labels}, {sums}
            FROM source
            WINDOW seg_w AS (PARTITION BY seg ORDER BY ts),
                   run AS (PARTITION BY seg ORDER BY ts ROWS UNBOUNDED PRECEDING)
        )
        SELECT ts, seg, rn, label, y_now AS persistence,
               lag(label, {spec.season}) OVER w AS seasonal_naive,
               {"".join(f"label_{k}, lag(label_{k}, {spec.season}) OVER w AS seasonal_naive_{k}, "
                        for k in ahead)}
               {", ".join(cols)}
        FROM known
        WINDOW w AS (PARTITION BY seg ORDER BY ts)
        ORDER BY ts
    """


def build_features(table: Table, spec: FeatureSpec,
                   min_complete_rows: int = MIN_COMPLETE_ROWS) -> pd.DataFrame:
    """One row per table row: ts, seg, rn, label, persistence, seasonal_naive and the features.

    Rows whose label lies past their segment's end have a NaN label; rows too early in their
    segment for a lag or window have NaN there.
    """
    missing = [c for c in (*spec.exogenous, *spec.drivers) if c not in table.numeric]
    if spec.target not in table.numeric:
        missing.insert(0, spec.target)
    if missing:
        raise DataError(
            f"{table.path}: the model's features need columns {missing}, which the data lacks "
            f"(it has {list(table.numeric)})"
        )
    if table.interval_seconds != spec.interval_seconds:
        raise DataError(
            f"{table.path}: rows are {table.interval_seconds} s apart, the features were "
            f"specified for {spec.interval_seconds} s rows"
        )
    frame = table.con.execute(features_sql(spec)).df()
    add_ewm_features(frame, spec)
    complete = int((frame["rn"] > spec.history).sum())
    if complete < min_complete_rows:
        raise DataError(
            f"{table.path}: too few rows for the chosen lags and windows: the longest needs "
            f"{spec.history} earlier rows in the same segment, which leaves {complete} usable rows "
            f"(at least {min_complete_rows} are needed)"
        )
    return frame


def label_column(spec: FeatureSpec, k: int) -> str:
    """The column holding the target ``k`` steps ahead (``label`` for the first horizon)."""
    return "label" if k == spec.horizon else f"label_{k}"


def seasonal_naive_column(spec: FeatureSpec, k: int) -> str:
    return "seasonal_naive" if k == spec.horizon else f"seasonal_naive_{k}"


def add_ewm_features(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    """The known target's exponentially weighted means, as columns of ``frame`` (in place):
    m_t = alpha * y_t + (1 - alpha) * m_(t-1), restarted at each segment's first known value."""
    by_segment = frame.groupby("seg", sort=False)["persistence"]
    for alpha, name in zip(spec.ewm_alphas, spec.ewm_features(), strict=True):
        frame[name] = by_segment.transform(lambda v, a=alpha: v.ewm(alpha=a, adjust=False).mean())
