"""A trained predictor: the estimator, the feature spec it was trained with, and its metadata.

Saved as the seed's pickle (``predictor_lgbm.pkl``) with a JSON file of metadata beside it
(``predictor_lgbm.json``): features, target, horizon, training window, metrics, library
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
from prioritymax.files import atomic_write_bytes

FORMAT_VERSION = 1
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


@dataclass
class PredictorModel:
    """An estimator over ``spec.features``; ``kind`` is ``lgbm`` or ``rf``.

    The estimator predicts the *change* from the last known value (``persistence``), which is
    added back: trees cannot extrapolate, and a queue in a burst reaches levels the training
    rows never held, but changes of that size they have seen."""

    kind: str
    spec: FeatureSpec
    estimator: Any
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in (*self.spec.features, "persistence") if c not in frame.columns]
        if missing:
            raise DataError(f"the model needs feature columns the data lacks: {missing}")
        return self.predict_change(frame) + frame["persistence"].to_numpy(dtype=np.float64)

    def predict_change(self, frame: pd.DataFrame) -> np.ndarray:
        matrix = frame[self.spec.features].to_numpy(dtype=np.float64)
        if self.kind == "lgbm":
            return self.estimator.predict(matrix, num_iteration=self.estimator.best_iteration or None)
        return self.estimator.predict(matrix)

    # ---------------------------------------------------------------------------------- files
    @staticmethod
    def metadata_path(path: Path) -> Path:
        return Path(path).with_suffix(".json")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT_VERSION, "kind": self.kind, "spec": self.spec.to_dict(),
                   "estimator": self.estimator}
        atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        self.write_metadata(path)
        return path

    def write_metadata(self, path: str | Path) -> None:
        document = {"format": FORMAT_VERSION, "kind": self.kind, "target": self.spec.target,
                    "horizon": self.spec.horizon, "features": self.spec.features,
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
            raise CheckpointError(f"{path}: not a predictor checkpoint ({error!r})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: not a predictor checkpoint of format {FORMAT_VERSION} "
                "(retrain it with this version)"
            )
        meta_path = cls.metadata_path(path)
        metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        for key in ("format", "kind", "target", "horizon", "features", "feature_spec"):
            metadata.pop(key, None)
        return cls(
            kind=payload["kind"],
            spec=FeatureSpec.from_dict(payload["spec"]),
            estimator=payload["estimator"],
            metadata=metadata,
        )
