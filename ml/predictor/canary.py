"""The canary gate: may a candidate predictor replace the champion?

It passes only if both hold on the holdout rows (the same rows for every model and baseline):

1. the candidate's RMSE is under ``threshold`` (the seed's semantics; without a threshold, the
   better baseline's RMSE on those rows, so a model must at least beat the naive forecasts);
2. when a champion exists, the candidate is not worse than it by more than ``margin`` (default
   2%): the upper end of a 95% moving-block-bootstrap interval of rmse(candidate) /
   rmse(champion) must be <= 1 + margin, so a candidate that is only better by luck of the rows
   does not get through on noise.

The result goes into the checkpoint's metadata and, when the candidate is a registered MLflow
version, onto that version as ``gate.*`` tags, which ``pmx models promote`` checks.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.predictor.metrics import block_bootstrap_rmse_ratio, rmse
from ml.predictor.model import PredictorModel
from ml.predictor.train import features_for, scoring_rows

log = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.02


def _champion_predictions(
    champion: PredictorModel, holdout: str | Path, rows: pd.DataFrame
) -> np.ndarray | None:
    """Champion predictions on the candidate's scoring rows (matched by timestamp)."""
    frame = features_for(champion, holdout)
    frame = frame.set_index("ts").reindex(rows["ts"])
    if frame["label"].isna().any():
        return None
    return champion.predict(frame.reset_index())


def canary_predictor(
    ckpt: str | Path,
    holdout: str | Path,
    threshold: float | None = None,
    *,
    margin: float = DEFAULT_MARGIN,
    champion_ckpt: str | Path | None = None,
    use_registry: bool = True,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Gate ``ckpt`` on ``holdout``; returns ``{"passed": ..., "reasons": [...], ...}``."""
    candidate = PredictorModel.load(ckpt)
    frame = features_for(candidate, holdout)
    mask, baselines = scoring_rows(frame)
    rows = frame[mask].reset_index(drop=True)
    y = rows["label"].to_numpy(dtype=np.float64)
    predicted = candidate.predict(rows)
    candidate_rmse = rmse(y, predicted)
    baseline_rmse = {b: rmse(y, rows[b].to_numpy()) for b in baselines}
    if threshold is None:
        threshold_source = f"best baseline ({min(baseline_rmse, key=baseline_rmse.get)})"
        threshold = min(baseline_rmse.values())
    else:
        threshold_source = "--threshold"

    checks = []
    under = candidate_rmse < threshold
    checks.append({
        "check": "threshold",
        "passed": under,
        "reason": f"holdout RMSE {candidate_rmse:.4f} {'<' if under else '>='} threshold "
                  f"{threshold:.4f} ({threshold_source})",
    })

    champion, champion_version = _resolve_champion(champion_ckpt, use_registry)
    comparison: dict[str, Any] = {"champion_version": champion_version}
    if champion is not None:
        champion_predicted = _champion_predictions(champion, holdout, rows)
        if champion_predicted is None or champion.spec.target != candidate.spec.target:
            checks.append({"check": "vs_champion", "passed": False,
                           "reason": "the champion predicts another target or cannot be scored on "
                                     "these rows"})
        else:
            ratios = block_bootstrap_rmse_ratio(y, predicted, champion_predicted,
                                                samples=bootstrap_samples, seed=seed)
            low, high = np.nanpercentile(ratios, [2.5, 97.5])
            champion_rmse = rmse(y, champion_predicted)
            ok = bool(high <= 1.0 + margin)
            comparison |= {"champion_rmse": champion_rmse,
                           "ratio": candidate_rmse / champion_rmse if champion_rmse else None,
                           "ratio_ci95": [float(low), float(high)], "margin": margin}
            checks.append({
                "check": "vs_champion",
                "passed": ok,
                "reason": f"RMSE ratio to champion {candidate_rmse / champion_rmse:.4f} "
                          f"(95% CI {low:.4f}..{high:.4f}) {'<=' if ok else '>'} 1 + {margin}",
            })
    else:
        checks.append({"check": "vs_champion", "passed": True,
                       "reason": "no champion yet: nothing to compare against"})

    passed = all(check["passed"] for check in checks)
    result = {
        "passed": passed,
        "rmse": candidate_rmse,
        "threshold": threshold,
        "rows": len(rows),
        "baselines": baseline_rmse,
        **comparison,
        "checks": checks,
        "reasons": [check["reason"] for check in checks if not check["passed"]] or
                   [check["reason"] for check in checks],
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "holdout": str(holdout),
    }
    _record(candidate, Path(ckpt), result)
    return result


def _resolve_champion(
    champion_ckpt: str | Path | None, use_registry: bool
) -> tuple[PredictorModel | None, str | None]:
    if champion_ckpt is not None:
        return PredictorModel.load(champion_ckpt), str(champion_ckpt)
    if not use_registry:
        return None, None
    from ml.predictor.tracking import champion_checkpoint

    with tempfile.TemporaryDirectory(prefix="pmx-champion-") as folder:  # loaded into memory inside
        found = champion_checkpoint(Path(folder))
    return found if found is not None else (None, None)


def _record(candidate: PredictorModel, ckpt: Path, result: dict[str, Any]) -> None:
    """Keep the gate result with the checkpoint and, if registered, on its MLflow version."""
    gate = {k: v for k, v in result.items() if k != "checks"}
    candidate.metadata["gate"] = gate
    candidate.write_metadata(ckpt)
    tracked = candidate.metadata.get("mlflow")
    if tracked:
        from ml import registry

        registry.record_gate(tracked["model_name"], tracked["model_version"], {
            "passed": result["passed"], "rmse": result["rmse"], "threshold": result["threshold"],
            "champion_version": result.get("champion_version"),
            "ratio_ci95_high": (result.get("ratio_ci95") or [None, None])[1],
            "checked_at": result["checked_at"], "holdout": result["holdout"],
        })
        log.info("gate result recorded on %s version %s", tracked["model_name"],
                 tracked["model_version"])
