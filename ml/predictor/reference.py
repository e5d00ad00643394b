"""The predictor's features written in plain pandas, as a second implementation of
:func:`ml.predictor.features.build_features`.

Not used by training: it is the oracle the tests compare the DuckDB query against, and the
baseline ``bench/predictor.py`` times it against. It follows the same rules (segments at gaps,
windows NULL until full, the known target series), one pandas operation per feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.predictor.features import FeatureSpec


def build_features_pandas(path: str, spec: FeatureSpec, timestamp: str = "timestamp") -> pd.DataFrame:
    """Read ``path`` (CSV or Parquet) and build the same columns as the DuckDB query."""
    raw = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
    raw["ts"] = pd.to_datetime(raw[timestamp], utc=True, format="ISO8601")
    raw = raw.sort_values("ts", kind="stable").reset_index(drop=True)
    step = raw["ts"].diff().dt.total_seconds()
    seg = (step != spec.interval_seconds).cumsum().astype(np.int64)
    groups = raw.groupby(seg, sort=False)
    rn = groups.cumcount() + 1
    o, h = spec.offset, spec.horizon

    y = raw[spec.target].astype(float)
    y_now = groups[spec.target].shift(1).astype(float) if o else y
    label = groups[spec.target].shift(-h).astype(float) if h else y
    by_seg = y_now.groupby(seg)

    out = {"ts": raw["ts"], "seg": seg, "rn": rn, "label": label, "persistence": y_now,
           "seasonal_naive": label.groupby(seg).shift(spec.season)}
    name = spec.target
    out[f"{name}_lag{o}"] = y_now
    for k in spec.lags:
        out[f"{name}_lag{k + o}"] = by_seg.shift(k)
    for w in spec.windows:
        rolling = by_seg.rolling(w, min_periods=1)
        full = rn >= w + o
        for agg in ("mean", "std", "max"):
            values = getattr(rolling, agg)().reset_index(level=0, drop=True)
            out[f"{name}_{agg}{w}"] = values.where(full)
    for d in spec.diffs:
        out[f"{name}_diff{d}"] = y_now - by_seg.shift(d)
    out[f"{name}_season"] = out["seasonal_naive"]
    for alpha, column in zip(spec.ewm_alphas, spec.ewm_features(), strict=True):
        out[column] = by_seg.transform(lambda v, a=alpha: v.ewm(alpha=a, adjust=False).mean())
    for k in spec.forecast_horizons:
        if k != h:
            out[f"label_{k}"] = groups[spec.target].shift(-k).astype(float)
            out[f"seasonal_naive_{k}"] = out[f"label_{k}"].groupby(seg).shift(spec.season)
    for column in spec.exogenous:
        out[column] = raw[column].astype(float)
    for column in spec.drivers:
        series = raw[column].astype(float)
        driver = series.groupby(seg)
        for k in spec.driver_lags:
            out[f"{column}_lag{k}"] = driver.shift(k)
        for w in spec.driver_windows:
            mean = driver.rolling(w, min_periods=1).mean().reset_index(level=0, drop=True)
            out[f"{column}_mean{w}"] = mean.where(rn >= w)
        out[f"{column}_diff1"] = series - driver.shift(1)
    seconds = raw["ts"].astype("int64") // 10**6 % 86_400  # microseconds since the epoch
    out["tod_sin"] = np.sin(2 * np.pi * seconds / 86_400)
    out["tod_cos"] = np.cos(2 * np.pi * seconds / 86_400)
    out["dow"] = (raw["ts"].dt.day_of_week + 1).astype(float)
    return pd.DataFrame(out)
