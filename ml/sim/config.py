"""Parameters of the PriorityMax queue simulation, in one frozen dataclass.

Units are explicit in the names: seconds, tasks per second, cost per worker-hour. The defaults
describe a mid-sized pool: traffic scaled to 10 tasks/s on average, workers that serve 1 task/s,
a 60 s decision interval and 2 minutes of warm-up for a new worker.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines the queue, the pool, the reward and an episode."""

    # Priority classes, highest first: share of arrivals, SLA wait target and the penalty per task
    # that arrives into a projected SLA miss.
    class_names: tuple[str, ...] = ("high", "normal", "low")
    class_shares: tuple[float, ...] = (0.2, 0.5, 0.3)
    sla_seconds: tuple[float, ...] = (30.0, 120.0, 600.0)
    sla_penalty: tuple[float, ...] = (0.05, 0.0125, 0.0025)

    # Traffic and service.
    mean_arrival_rate: float = 10.0  # tasks/s; trace and synthetic rates are scaled to this mean
    service_rate: float = 1.0  # tasks/s served by one active worker
    max_queue: float = 100_000.0  # tasks per class; overflow is dropped and counted as violations

    # Pool and actions.
    min_workers: int = 1
    max_workers: int = 50
    warmup_steps: int = 2  # steps between a scale-up and the new worker serving
    scale_deltas: tuple[int, ...] = (-2, -1, 0, 1, 2)
    initial_utilization: float = 0.7  # an episode starts with the pool sized for this utilization

    # Reward: -(worker cost + SLA penalty + churn).
    worker_cost_per_hour: float = 0.6
    churn_cost: float = 0.005  # per worker added or removed

    # Time.
    step_seconds: int = 60
    episode_steps: int = 720
    rate_smoothing_steps: float = 5.0  # time constant of the smoothed arrival rate

    def __post_init__(self) -> None:
        k = len(self.class_names)
        problems = []
        if not (len(self.class_shares) == len(self.sla_seconds) == len(self.sla_penalty) == k):
            problems.append("class_names, class_shares, sla_seconds and sla_penalty differ in length")
        if k == 0:
            problems.append("at least one priority class is required")
        if not math.isclose(sum(self.class_shares), 1.0, rel_tol=1e-6):
            problems.append(f"class_shares must sum to 1, got {sum(self.class_shares)}")
        if any(s < 0 for s in self.class_shares):
            problems.append("class_shares must be non-negative")
        if self.min_workers < 1:
            problems.append("min_workers must be at least 1 (a pool with no worker never drains)")
        if self.max_workers < self.min_workers:
            problems.append("max_workers must be >= min_workers")
        if self.warmup_steps < 0:
            problems.append("warmup_steps must be >= 0")
        if self.step_seconds <= 0 or self.episode_steps <= 0:
            problems.append("step_seconds and episode_steps must be positive")
        if self.service_rate <= 0 or self.mean_arrival_rate <= 0:
            problems.append("service_rate and mean_arrival_rate must be positive")
        deltas = self.scale_deltas
        if list(deltas) != list(range(deltas[0], deltas[-1] + 1)) or 0 not in deltas:
            problems.append("scale_deltas must be a contiguous integer range that includes 0")
        if problems:
            raise ValueError("invalid SimConfig: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def worker_cost_per_step(self) -> float:
        return self.worker_cost_per_hour * self.step_seconds / 3600.0

    @property
    def mean_arrivals_per_step(self) -> float:
        return self.mean_arrival_rate * self.step_seconds

    @property
    def rate_smoothing_alpha(self) -> float:
        return 1.0 - math.exp(-1.0 / self.rate_smoothing_steps)

    def action_for_delta(self, delta: np.ndarray) -> np.ndarray:
        """The action index that moves the pool by ``delta`` workers, clipped to the action range."""
        lo, hi = self.scale_deltas[0], self.scale_deltas[-1]
        return (np.clip(delta, lo, hi) - lo).astype(np.int64)

    def replace(self, **changes: object) -> SimConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SimConfig:
        """Inverse of :meth:`to_dict`, also after a round trip through JSON (lists for tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
