"""Forecast error metrics, skill against baselines, and a block bootstrap for comparing models."""

from __future__ import annotations

import numpy as np


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(p)) ** 2)))


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | int | None]:
    """rmse, mae, r2 and mape. MAPE is over rows whose actual value is not zero (a queue is often
    empty, and an error relative to zero is undefined); ``mape_rows`` says how many those were."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    error = y - p
    total = float(np.sum((y - y.mean()) ** 2))
    nonzero = y != 0
    return {
        "rmse": rmse(y, p),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else None,
        "mape": float(np.mean(np.abs(error[nonzero] / y[nonzero]))) if nonzero.any() else None,
        "mape_rows": int(nonzero.sum()),
        "rows": len(y),
    }


def skill(model_rmse: float, baseline_rmse: float) -> float | None:
    """1 - rmse_model / rmse_baseline: 0 is no better than the baseline, 1 is perfect."""
    return 1.0 - model_rmse / baseline_rmse if baseline_rmse > 0 else None


def block_bootstrap_rmse_ratio(
    y: np.ndarray,
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    samples: int = 1000,
    block: int = 60,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap distribution of rmse(candidate) / rmse(reference) on the same rows.

    Rows of a time series are autocorrelated, so blocks of ``block`` consecutive rows are
    resampled (moving-block bootstrap) rather than single rows; both models are scored on each
    resample, so the ratio's spread reflects the data, not two independent draws.
    """
    y = np.asarray(y, dtype=float)
    err_c = (y - np.asarray(candidate, dtype=float)) ** 2
    err_r = (y - np.asarray(reference, dtype=float)) ** 2
    n = len(y)
    block = max(1, min(block, n))
    starts_per_sample = int(np.ceil(n / block))
    rng = np.random.default_rng(seed)
    # Prefix sums turn each block's sum into one subtraction.
    cum_c = np.concatenate([[0.0], np.cumsum(err_c)])
    cum_r = np.concatenate([[0.0], np.cumsum(err_r)])
    starts = rng.integers(0, n - block + 1, size=(samples, starts_per_sample))
    sum_c = (cum_c[starts + block] - cum_c[starts]).sum(axis=1)
    sum_r = (cum_r[starts + block] - cum_r[starts]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(sum_c / sum_r)
