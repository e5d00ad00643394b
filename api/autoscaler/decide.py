"""From a reading to a decision, with no I/O: the champion policy's sampled action, or the HPA
rule. The worker (``worker.py``) picks the mode and the models; everything here is a pure
function of its arguments, which the tests drive directly."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from api.autoscaler.schemas import Reading
from ml.serving import ServedPolicy
from ml.sim.config import SimConfig
from ml.sim.core import observation_from_reading
from ml.sim.policies import HPAPolicy


class ReadingError(ValueError):
    """A reading that does not fit the policy (its priority classes): a 422."""


def per_class(config: SimConfig, values: dict[str, float], field: str) -> np.ndarray:
    """``values`` by class name, in the policy's class order; every class, no other."""
    missing = [c for c in config.class_names if c not in values]
    unknown = sorted(set(values) - set(config.class_names))
    if missing or unknown:
        parts = ([f"lacks {missing}"] if missing else []) + ([f"has unknown {unknown}"] if unknown else [])
        raise ReadingError(f"{field} {' and '.join(parts)}: the policy's priority classes are "
                           f"{list(config.class_names)}")
    return np.array([values[c] for c in config.class_names], dtype=np.float32)


def seconds_of_day(reading: Reading) -> float:
    when = reading.timestamp or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # a naive time is taken as UTC, as the traces are
    when = when.astimezone(UTC)
    return when.hour * 3600 + when.minute * 60 + when.second + when.microsecond / 1e6


def observation(config: SimConfig, reading: Reading) -> np.ndarray:
    """The observation the simulator would have shown the policy in this state."""
    wait = (per_class(config, reading.est_wait_seconds, "est_wait_seconds")
            if reading.est_wait_seconds is not None else None)
    smoothed = reading.arrival_rate_smoothed
    return observation_from_reading(
        config, queue=per_class(config, reading.queue, "queue"), arrival_rate=reading.arrival_rate,
        arrival_rate_smoothed=reading.arrival_rate if smoothed is None else smoothed,
        active_workers=reading.active_workers, warming_workers=reading.warming_workers,
        utilization=reading.utilization, seconds_of_day=seconds_of_day(reading), est_wait=wait)


def current_workers(reading: Reading) -> int:
    return reading.active_workers + reading.warming_workers


def policy_step(served: ServedPolicy, reading: Reading,
                rng: np.random.Generator) -> tuple[int, int, float | None, str | None]:
    """The policy's action index, its delta in workers, its probability, and - for a residual
    policy given a reading unlike any it trained on - why its base rule decided instead."""
    policy = served.policy
    if policy.control is None:
        action, probability = served.act(observation(served.config, reading), rng)
        return action, served.config.scale_deltas[action], probability, None
    action, probability, outside = policy.decide_residual(reading_info_of(served.config, reading))
    return action, served.config.scale_deltas[action], probability, outside


def reading_info_of(config: SimConfig, reading: Reading) -> dict[str, np.ndarray]:
    """A reading as the one-env info dict a residual policy reads (``ml.rl.residual``)."""
    from ml.rl.residual import reading_info

    smoothed = reading.arrival_rate_smoothed
    return reading_info(per_class(config, reading.queue, "queue"), reading.arrival_rate,
                        reading.arrival_rate if smoothed is None else smoothed,
                        reading.active_workers, reading.warming_workers, reading.utilization)


def hpa_step(hpa: HPAPolicy, reading: Reading) -> tuple[int, int]:
    """The HPA rule's action index and delta for one reading; ``hpa`` keeps the tenant's
    stabilization window (each reading is one interval)."""
    info = {"active_workers": np.array([reading.active_workers], dtype=np.float64),
            "warming_workers": np.array([reading.warming_workers], dtype=np.float64),
            "utilization": np.array([reading.utilization], dtype=np.float64)}
    action = int(hpa.act(np.empty((1, 0)), info)[0])
    return action, hpa.config.scale_deltas[action]


def target(config: SimConfig, reading: Reading, delta: int) -> int:
    """The pool after ``delta``, within the configuration's bounds (as the simulator applies it)."""
    wanted = current_workers(reading) + delta
    return int(min(max(wanted, config.min_workers), config.max_workers))


def hold_action(config: SimConfig) -> int:
    """The action index of "no change"."""
    return config.scale_deltas.index(0)
