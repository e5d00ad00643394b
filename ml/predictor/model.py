"""A trained predictor: the estimator, the feature spec it was trained with, and its metadata.

Saved as the seed's pickle (``predictor_lgbm.pkl``) with a JSON file of metadata beside it
(``predictor_lgbm.json``): features, target, horizons, quantiles, training window, metrics, library
versions, the data's fingerprint, and - once they exist - the MLflow run and registry version and
the canary gate's result. Both are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import pickle
import platform
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.predictor.data import DataError
from ml.predictor.features import FeatureSpec
from prioritymax.files import atomic_write_bytes, unreadable

FORMAT_VERSION = 2  # 2: one estimator per horizon, a base column, conformal intervals
#: The forecast's quantiles besides its mean: each from conformal scores (see Interval).
QUANTILES = (0.5, 0.9)
LIBRARIES = ("lightgbm", "scikit-learn", "numpy", "pandas", "duckdb")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, or of another format."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class Interval:
    """Normalized split-conformal quantiles of one horizon's forecast.

    On the validation rows (after the training rows, never seen by the fit) the errors
    ``(actual - forecast) / scale`` are computed, ``scale`` being the known target's rolling
    standard deviation (``scale_column``, floored at ``floor``); the forecast's quantile q is then
    ``forecast + quantile_q(errors) * scale``. Scaling by recent volatility keeps the band as wide
    as the load is wild, so coverage holds from quiet nights to bursts and across load levels."""

    scale_column: str
    floor: float
    offsets: dict[float, float]  # quantile -> the errors' quantile, in scale units

    def scale(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.scale_column].to_numpy(dtype=np.float64)
        return np.maximum(np.nan_to_num(values, nan=self.floor), self.floor)

    @classmethod
    def calibrate(cls, frame: pd.DataFrame, actual: np.ndarray, forecast: np.ndarray,
                  scale_column: str) -> Interval:
        raw = frame[scale_column].to_numpy(dtype=np.float64)
        positive = raw[raw > 0]
        floor = max(float(np.median(positive)) * 0.1 if len(positive) else 1.0, 1e-9)
        interval = cls(scale_column, floor, {})
        errors = (actual - forecast) / interval.scale(frame)
        return cls(scale_column, floor, {q: float(np.quantile(errors, q)) for q in QUANTILES})

    def to_dict(self) -> dict[str, Any]:
        return {"scale_column": self.scale_column, "floor": self.floor,
                "offsets": {str(q): v for q, v in self.offsets.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        return cls(data["scale_column"], data["floor"],
                   {float(q): v for q, v in data["offsets"].items()})


@dataclass
class PredictorModel:
    """One estimator per forecast horizon over ``spec.features``; ``kind`` is ``lgbm`` or ``rf``.

    Each estimator predicts the *change* from a base column known at the row (``base``: the last
    known value, or an exponentially weighted mean of the known target, chosen on the training
    rows), which is added back: trees cannot extrapolate, and a burst reaches levels the training
    rows never held, but changes of that size they have seen. ``intervals`` hold each horizon's
    conformal quantiles (:class:`Interval`)."""

    kind: str
    spec: FeatureSpec
    estimators: dict[int, Any]
    base: str = "persistence"
    intervals: dict[int, Interval] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def horizons(self) -> tuple[int, ...]:
        return tuple(sorted(self.estimators))

    @property
    def estimator(self) -> Any:
        """The first horizon's estimator (the seed's single-horizon model)."""
        return self.estimators[self.horizons[0]]

    def predict(self, frame: pd.DataFrame, horizon: int | None = None) -> np.ndarray:
        """The mean forecast ``horizon`` steps ahead (default: the first horizon)."""
        horizon = self.horizons[0] if horizon is None else horizon
        if horizon not in self.estimators:
            raise DataError(f"the model forecasts horizons {list(self.horizons)}, not {horizon}")
        missing = [c for c in (*self.spec.features, self.base) if c not in frame.columns]
        if missing:
            raise DataError(f"the model needs feature columns the data lacks: {missing}")
        return self.predict_change(frame, horizon) + frame[self.base].to_numpy(dtype=np.float64)

    def predict_change(self, frame: pd.DataFrame, horizon: int | None = None) -> np.ndarray:
        estimator = self.estimators[self.horizons[0] if horizon is None else horizon]
        matrix = frame[self.spec.features].to_numpy(dtype=np.float64)
        if self.kind == "lgbm":
            return estimator.predict(matrix, num_iteration=estimator.best_iteration or None)
        return estimator.predict(matrix)

    def quantile(self, frame: pd.DataFrame, horizon: int, q: float,
                 mean: np.ndarray | None = None) -> np.ndarray:
        """The forecast's quantile ``q`` (one of :data:`QUANTILES`) ``horizon`` steps ahead."""
        interval = self.intervals[horizon]
        mean = self.predict(frame, horizon) if mean is None else mean
        return mean + interval.offsets[q] * interval.scale(frame)

    def forecast(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Every horizon's forecast: columns ``h<k>`` (mean), ``h<k>_p50`` and ``h<k>_p90``."""
        columns: dict[str, np.ndarray] = {}
        for k in self.horizons:
            mean = columns[f"h{k}"] = self.predict(frame, k)
            if k in self.intervals:
                for q in QUANTILES:
                    columns[f"h{k}_p{round(q * 100)}"] = self.quantile(frame, k, q, mean)
        return pd.DataFrame(columns, index=frame.index)

    def forecast_latest(self, history: pd.DataFrame, timestamp: str = "timestamp") -> dict[str, Any]:
        """The forecasts made at the latest row of ``history`` (a frame with ``timestamp`` and the
        columns the model reads, oldest first): ``{"horizons": {"<k>": {"mean", "p50", "p90"}},
        "at": ...}``. Raises :class:`DataError` when the history is too short for the model's
        lags and windows (it names how many rows are needed) or lacks a column."""
        from ml.predictor.data import load_table
        from ml.predictor.features import build_features

        needed = self.spec.history + 1
        if len(history) < needed:
            raise DataError(f"{len(history)} rows of history; the model needs at least {needed}")
        table = load_table(history, target=self.spec.target, timestamp=timestamp)
        frame = build_features(table, self.spec, min_complete_rows=1)
        latest = frame.iloc[[-1]]
        windowed = [c for c in self.spec.target_features() if c != f"{self.spec.target}_season"]
        if latest[windowed].isna().any(axis=None):
            raise DataError("the latest rows are not contiguous enough for the model's windows")
        values = self.forecast(latest).iloc[0]
        return {"at": str(latest["ts"].iloc[0]), "horizons": {
            str(k): {"mean": float(values[f"h{k}"]),
                     **{f"p{round(q * 100)}": float(values[f"h{k}_p{round(q * 100)}"])
                        for q in QUANTILES if f"h{k}_p{round(q * 100)}" in values}}
            for k in self.horizons}}

    # ---------------------------------------------------------------------------------- files
    @staticmethod
    def metadata_path(path: Path) -> Path:
        return Path(path).with_suffix(".json")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT_VERSION, "kind": self.kind, "spec": self.spec.to_dict(),
                   "estimators": self.estimators, "base": self.base,
                   "intervals": {k: v.to_dict() for k, v in self.intervals.items()}}
        atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        self.write_metadata(path)
        return path

    def write_metadata(self, path: str | Path) -> None:
        document = {"format": FORMAT_VERSION, "kind": self.kind, "target": self.spec.target,
                    "horizon": self.spec.horizon, "horizons": list(self.horizons),
                    "quantiles": list(QUANTILES) if self.intervals else [], "base": self.base,
                    "intervals": {k: v.to_dict() for k, v in self.intervals.items()},
                    "features": self.spec.features,
                    "feature_spec": self.spec.to_dict(), **self.metadata}
        atomic_write_bytes(self.metadata_path(Path(path)),
                      json.dumps(document, indent=2, default=str).encode())

    @classmethod
    def load(cls, path: str | Path) -> PredictorModel:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint")
        try:
            payload = pickle.loads(path.read_bytes())
        except Exception as error:  # a truncated or foreign file raises many kinds of errors
            raise CheckpointError(f"{path}: not a predictor checkpoint ({unreadable(path, error)})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: not a predictor checkpoint of format {FORMAT_VERSION} "
                "(retrain it with this version)"
            )
        meta_path = cls.metadata_path(path)
        metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        for key in ("format", "kind", "target", "horizon", "horizons", "quantiles", "base",
                    "intervals", "features", "feature_spec"):
            metadata.pop(key, None)
        return cls(
            kind=payload["kind"],
            spec=FeatureSpec.from_dict(payload["spec"]),
            estimators=payload["estimators"],
            base=payload["base"],
            intervals={int(k): Interval.from_dict(v) for k, v in payload["intervals"].items()},
            metadata=metadata,
        )
