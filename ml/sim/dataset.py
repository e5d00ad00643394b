"""The queue-metrics dataset: per-step simulator metrics over a whole traffic series.

``build_queue_metrics`` replays every row of a series (a trace or the synthetic profile) through
the simulator under a policy (HPA by default) and returns one row per step: arrivals, queue per
class, workers, utilization, waits, violations and costs, plus the seed's target ``queue_next_sec``:
the total queue length at the next step of the same segment. ``arrivals`` (all classes) is the
load the predictor forecasts by default. This is the seed's ``queue_metrics.csv``,
the predictor's training data.

The series is cut into day-long blocks simulated side by side in one vector env (fast: a whole
trace in about a second). Each block starts ``burn_in_steps`` early, inside its own segment where
possible, and those burn-in rows are dropped, so the queue and pool at a block's first row are
those of a system that has been running, not an empty one. No row's target crosses a gap: the
last row of each segment has no next step and is left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ml.sim.config import SimConfig
from ml.sim.policies import HPAPolicy, Policy
from ml.sim.traffic import RateSeries
from ml.sim.vec_env import PriorityMaxVecEnv
from prioritymax.files import atomic_path

TARGET = "queue_next_sec"
#: The load the predictor forecasts by default: arrivals per step, all classes together.
LOAD_TARGET = "arrivals"


def _blocks(series: RateSeries, block_steps: int, burn_in_steps: int) -> np.ndarray:
    """(start, first_kept, end_kept, run_length) per block; runs stay inside their segment."""
    rows = []
    for lo, hi in series.segment_bounds:
        for first in range(int(lo), int(hi), block_steps):
            last = min(first + block_steps, int(hi))
            start = max(int(lo), first - burn_in_steps)
            run = last - start + (1 if last < hi else 0)  # one more step gives the last target
            rows.append((start, first, last, run))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def build_queue_metrics(
    series: RateSeries,
    *,
    policy: Policy | None = None,
    config: SimConfig | None = None,
    seed: int = 0,
    block_steps: int = 1440,
    burn_in_steps: int = 60,
) -> pd.DataFrame:
    """Simulate every row of ``series`` under ``policy``; one dataset row per step."""
    config = config or SimConfig()
    blocks = _blocks(series, block_steps, burn_in_steps)
    if len(blocks) == 0:
        raise ValueError(f"traffic {series.name!r} has no rows")
    horizon = int(blocks[:, 3].max())
    env_config = config.replace(episode_steps=horizon)
    policy = policy or HPAPolicy(env_config)
    n, k = len(blocks), config.num_classes
    env = PriorityMaxVecEnv(n, env_config, series)
    try:
        obs, info = env.reset(
            seed=seed, options={"start_index": blocks[:, 0], "episode_steps": blocks[:, 3]}
        )
        policy.reset(n)
        scalars = (
            "arrival_rate", "arrival_rate_smoothed", "active_workers", "warming_workers",
            "utilization", "worker_delta", "worker_cost", "sla_penalty", "churn_cost",
        )
        per_class = ("arrivals", "queue", "est_wait", "violations")
        record = {name: np.zeros((horizon, n)) for name in (*scalars, "reward", "series_index")}
        record |= {name: np.zeros((horizon, n, k)) for name in per_class}
        for t in range(horizon):
            obs, reward, _, _, info = env.step(policy.act(obs, info))
            record["reward"][t] = reward
            for name in (*scalars, *per_class, "series_index"):
                record[name][t] = info[name]
    finally:
        env.close()

    # Keep, per block, the rows [first_kept, end_kept) and pair each with the next step's queue.
    step = np.arange(horizon)[:, None]
    row = record["series_index"]
    queue_len = record["queue"].sum(axis=2)
    target = np.zeros_like(queue_len)
    target[:-1] = queue_len[1:]
    keep = (step + 1 < blocks[:, 3]) & (row >= blocks[:, 1]) & (row < blocks[:, 2])
    t_idx, env_idx = np.nonzero(keep)
    index = row[t_idx, env_idx].astype(np.int64)
    segment = series.segment_of(index)

    frame = {
        "timestamp": pd.to_datetime(series.timestamps[index], utc=True),
        "segment": segment,
    }
    frame[LOAD_TARGET] = record["arrivals"][t_idx, env_idx].sum(axis=1)
    for c, name in enumerate(config.class_names):
        frame[f"arrivals_{name}"] = record["arrivals"][t_idx, env_idx, c]
    for name in ("arrival_rate", "arrival_rate_smoothed"):
        frame[name] = record[name][t_idx, env_idx]
    for c, name in enumerate(config.class_names):
        frame[f"queue_{name}"] = record["queue"][t_idx, env_idx, c]
    frame["queue_len"] = queue_len[t_idx, env_idx]
    for name in ("active_workers", "warming_workers", "utilization"):
        frame[name] = record[name][t_idx, env_idx]
    for c, name in enumerate(config.class_names):
        frame[f"est_wait_{name}"] = record["est_wait"][t_idx, env_idx, c]
    for c, name in enumerate(config.class_names):
        frame[f"violations_{name}"] = record["violations"][t_idx, env_idx, c]
    frame["worker_delta"] = record["worker_delta"][t_idx, env_idx]
    for name in ("worker_cost", "sla_penalty", "churn_cost", "reward"):
        frame[name] = record[name][t_idx, env_idx]
    frame[TARGET] = target[t_idx, env_idx]
    return pd.DataFrame(frame).sort_values("timestamp", kind="stable").reset_index(drop=True)


def dataset_path(data_dir: Path, source: str) -> Path:
    """Where a source's dataset lives in the data home: ``data/<source>/queue_metrics.csv``."""
    return Path(data_dir) / source / "queue_metrics.csv"


def write_queue_metrics(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the dataset as CSV (ISO-8601 UTC timestamps), atomically."""
    out = frame.copy()
    out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    with atomic_path(path) as partial:
        out.to_csv(partial, index=False, float_format="%.6g")
    return Path(path)
