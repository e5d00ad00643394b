"""Traffic under shift: the transformations that turn one series into the train/test pairs a
learned policy is judged on (``bench/generalization.py``), and into the varied traffic it trains
on (domain randomization, :func:`randomized_mix`).

Every function returns a new :class:`~ml.sim.traffic.RateSeries` (rates in tasks/s) and keeps
the segment structure, so episodes never run across a gap or across the seam between two copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ml.sim.config import SimConfig
from ml.sim.traffic import RateSeries


def scaled(series: RateSeries, factor: float, label: str | None = None) -> RateSeries:
    """The same shape at ``factor`` times the load."""
    if not factor > 0:
        raise ValueError(f"a load factor must be positive, got {factor}")
    return replace(series, rates=series.rates * factor,
                   name=f"{series.name}:{label or f'x{factor:g}'}")


def scaled_to_mean(series: RateSeries, mean_rate: float, label: str) -> RateSeries:
    """The same shape with its mean rate set to ``mean_rate`` tasks/s."""
    return scaled(series, mean_rate / float(series.rates.mean()), label)


def with_flash_crowds(
    series: RateSeries,
    seed: int,
    *,
    every_minutes: float = 240.0,
    magnitude: tuple[float, float] = (5.0, 20.0),
    minutes: tuple[float, float] = (5.0, 30.0),
) -> RateSeries:
    """Flash crowds injected into ``series``: on average one every ``every_minutes``, each
    multiplying the rate by a factor drawn from ``magnitude`` for a duration drawn from
    ``minutes`` (a sudden start, as when a link goes viral, and a sudden end)."""
    rng = np.random.default_rng(seed)
    step_minutes = series.step_seconds / 60.0
    rates = series.rates.copy()
    starts = np.flatnonzero(rng.random(len(rates)) < step_minutes / every_minutes)
    for start in starts:
        length = max(1, int(round(rng.uniform(*minutes) / step_minutes)))
        end = min(int(series.segment_end(np.array([start]))[0]), start + length)
        rates[start:end] *= rng.uniform(*magnitude)
    return replace(series, rates=rates, name=f"{series.name}:flash{seed}")


def concat(parts: Sequence[RateSeries], name: str) -> RateSeries:
    """Several series end to end, each part its own segments (no episode spans two parts).

    Timestamps are kept as they are, so time of day stays true to each part."""
    if not parts:
        raise ValueError("concat needs at least one series")
    step = parts[0].step_seconds
    if any(p.step_seconds != step for p in parts):
        raise ValueError("concat needs series with the same step")
    offsets = np.cumsum([0, *(len(p) for p in parts[:-1])])
    return RateSeries(
        name=name,
        timestamps=np.concatenate([p.timestamps for p in parts]),
        rates=np.concatenate([p.rates for p in parts]),
        segment_bounds=np.concatenate([p.segment_bounds + o for p, o in zip(parts, offsets, strict=True)]),
        step_seconds=step,
    )


#: Load levels a robust policy trains on, relative to its training traffic (domain randomization).
RANDOMIZED_LOAD_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def randomized_mix(series: RateSeries, seed: int = 0,
                   load_factors: Sequence[float] = RANDOMIZED_LOAD_FACTORS) -> RateSeries:
    """Domain randomization over traffic: ``series`` at every load factor, with and without
    flash crowds. Episodes start uniformly over the result, so a policy trained on it sees load
    levels far from its training mean and sudden bursts, not only the one history it was given."""
    parts = []
    for i, factor in enumerate(load_factors):
        level = scaled(series, factor)
        parts += [level, with_flash_crowds(level, seed * 1000 + i)]
    return concat(parts, f"{series.name}:randomized")


def capacity_rate(config: SimConfig) -> float:
    """Tasks/s that the largest pool serves."""
    return config.max_workers * config.service_rate
