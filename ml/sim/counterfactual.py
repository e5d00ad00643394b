"""What one scaling decision would cost from a pool's current state: the expected-value version of
the simulator's step (``ml/sim/core.py``), for comparing two decisions taken on the same reading.

A shadow challenger (``api/autoscaler/worker.py``) never acts, so its decisions cannot be scored by
what happened next. This scores both the champion's and the challenger's target with the same
model: the simulator's dynamics with the arrivals fixed at their expected value (the reading's
arrival rate split by the class shares), over the steps a decision needs to take effect
(``warmup_steps + 1``: a worker added now serves only after warming up), counting worker cost,
churn and the SLA penalties exactly as the simulator's reward does. Workers already warming are
taken to start serving after one step (a reading does not say how far along they are).

It is a counterfactual of one decision, not of a trajectory: what follows would be decided
again at the next reading. The difference of two such costs says which decision leaves the pool
better placed; the absolute figure is in the reward's units (the negative of reward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.sim.config import SimConfig


@dataclass(frozen=True)
class DecisionCost:
    """The cost of moving the pool to one target, over the steps that decision takes to act."""

    total: float
    worker_cost: float
    sla_penalty: float
    churn_cost: float
    #: Expected tasks per class that would miss their SLA (or be dropped) over those steps.
    violations: tuple[float, ...]


def decision_cost(config: SimConfig, *, queue: np.ndarray, arrival_rate: float, active: int,
                  warming: int, target: int, steps: int | None = None) -> DecisionCost:
    """The cost of moving a pool of ``active`` + ``warming`` workers with ``queue`` (per class, in
    the configuration's class order) to ``target`` workers (clipped to the bounds, as the
    simulator does) with arrivals at ``arrival_rate``, over ``steps`` (default
    ``warmup_steps + 1``)."""
    steps = config.warmup_steps + 1 if steps is None else steps
    total_now = active + warming
    target = int(min(max(target, config.min_workers), config.max_workers))
    change = target - total_now
    removed = max(-change, 0)
    cancelled = min(removed, warming)  # removals cancel warming workers first, as in the core
    warming_left = warming - cancelled
    serving = active - (removed - cancelled)
    added = max(change, 0)
    shares = np.asarray(config.class_shares, dtype=np.float64)
    sla = np.asarray(config.sla_seconds, dtype=np.float64)
    arrivals = shares * (arrival_rate * config.step_seconds)
    backlog = np.asarray(queue, dtype=np.float64).copy()
    violations = np.zeros(config.num_classes)
    for step in range(steps):
        if step == 1:
            serving += warming_left
        if step == config.warmup_steps:
            serving += added
        backlog = backlog + arrivals
        spare = serving * config.service_rate * config.step_seconds
        for c in range(config.num_classes):  # strict priority, as the simulator serves
            served = min(backlog[c], spare)
            backlog[c] -= served
            spare -= served
        overflow = np.maximum(backlog - config.max_queue, 0.0)
        backlog -= overflow
        drain_rate = max(serving, 0) * config.service_rate
        ahead = np.cumsum(backlog)
        missed = np.minimum(np.minimum(np.maximum(ahead - sla * drain_rate, 0.0), backlog), arrivals)
        violations += missed + overflow
    worker_cost = target * config.worker_cost_per_step * steps
    sla_penalty = float(np.dot(violations, config.sla_penalty))
    churn_cost = abs(change) * config.churn_cost
    return DecisionCost(total=worker_cost + sla_penalty + churn_cost, worker_cost=worker_cost,
                        sla_penalty=sla_penalty, churn_cost=churn_cost,
                        violations=tuple(float(v) for v in violations))
