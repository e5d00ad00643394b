"""Run any policy over seeded episodes and summarize it with 95% confidence intervals.

All episodes run side by side in one :class:`~ml.sim.vec_env.PriorityMaxVecEnv` (one env per seed),
so evaluating a baseline over 8 episodes costs about as much as one. The same seeds give the same
traffic to every policy, so two evaluations with the same seeds can be compared episode by
episode (:func:`paired_improvement`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ml.sim.config import SimConfig
from ml.sim.policies import Policy
from ml.sim.traffic import RateSeries
from ml.sim.vec_env import PriorityMaxVecEnv


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Mean, standard deviation and the Student-t confidence interval of the mean.

    With a single value there is no interval: ``ci95`` is ``[None, None]`` (JSON has no NaN).
    """
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "std": 0.0, "ci95": [None, None]}
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * std / np.sqrt(len(values))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}


@dataclass
class PolicyEvaluation:
    """Per-episode results of one policy; :meth:`summary` gives mean ± 95% CI of each."""

    policy: str
    seeds: list[int]
    reward: np.ndarray  # episode return
    cost: np.ndarray  # worker cost over the episode
    sla_penalty: np.ndarray
    violation_rate: np.ndarray  # (episodes, classes): violating arrivals / arrivals
    overall_violation_rate: np.ndarray  # all classes together
    mean_workers: np.ndarray
    class_names: tuple[str, ...]

    @property
    def episodes(self) -> int:
        return len(self.seeds)

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "episodes": self.episodes,
            "reward": mean_ci(self.reward),
            "cost": mean_ci(self.cost),
            "sla_penalty": mean_ci(self.sla_penalty),
            "sla_violation_rate": {
                name: mean_ci(self.violation_rate[:, k]) for k, name in enumerate(self.class_names)
            }
            | {"all": mean_ci(self.overall_violation_rate)},
            "mean_workers": mean_ci(self.mean_workers),
        }


def evaluate_policy(
    policy: Policy,
    source: RateSeries | str | Path | None = None,
    episodes: int = 8,
    seeds: Sequence[int] | None = None,
    config: SimConfig | None = None,
) -> PolicyEvaluation:
    """Run ``policy`` for one full episode per seed (default seeds 0..episodes-1)."""
    seeds = list(range(episodes)) if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_policy needs at least one episode")
    config = config or SimConfig()
    env = PriorityMaxVecEnv(len(seeds), config, source)
    try:
        obs, info = env.reset(seed=seeds)
        policy.reset(len(seeds))
        n, k = len(seeds), config.num_classes
        reward = np.zeros(n)
        cost = np.zeros(n)
        penalty = np.zeros(n)
        workers = np.zeros(n)
        violations = np.zeros((n, k))
        arrivals = np.zeros((n, k))
        for _ in range(config.episode_steps):
            action = policy.act(obs, info)
            obs, r, _, truncated, info = env.step(action)
            reward += r
            cost += info["worker_cost"]
            penalty += info["sla_penalty"]
            workers += info["active_workers"] + info["warming_workers"]
            violations += info["violations"]
            arrivals += info["arrivals"]
        if not truncated.all():
            raise RuntimeError("episodes did not end together")  # pragma: no cover
    finally:
        env.close()
    rate = violations / np.maximum(arrivals, 1e-12)
    overall = violations.sum(axis=1) / np.maximum(arrivals.sum(axis=1), 1e-12)
    return PolicyEvaluation(
        policy=policy.name,
        seeds=seeds,
        reward=reward,
        cost=cost,
        sla_penalty=penalty,
        violation_rate=rate,
        overall_violation_rate=overall,
        mean_workers=workers / config.episode_steps,
        class_names=config.class_names,
    )


def paired_improvement(
    candidate: PolicyEvaluation, baseline: PolicyEvaluation
) -> dict[str, Any]:
    """Relative reward improvement of ``candidate`` over ``baseline`` on the same seeds.

    Rewards are negative costs, so the improvement of episode i is
    (r_candidate - r_baseline) / |r_baseline|; reported as mean ± 95% CI over episodes.
    """
    if candidate.seeds != baseline.seeds:
        raise ValueError("paired comparison needs the same seeds for both policies")
    relative = (candidate.reward - baseline.reward) / np.abs(baseline.reward)
    return mean_ci(relative)


def best_of_grid(
    name: str,
    grid: dict[str, Sequence[Any]],
    source: RateSeries,
    *,
    seeds: Sequence[int],
    config: SimConfig,
) -> tuple[dict[str, Any], PolicyEvaluation]:
    """The parameters of baseline ``name`` with the best mean reward over a grid, and their
    evaluation: tuning a baseline on a trace's training part so it is no strawman."""
    import itertools

    from ml.sim.policies import make_baseline

    keys = list(grid)
    best: tuple[dict[str, Any], PolicyEvaluation] | None = None
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        evaluation = evaluate_policy(make_baseline(name, config, **params), source, seeds=seeds,
                                     config=config)
        if best is None or evaluation.reward.mean() > best[1].reward.mean():
            best = (params, evaluation)
    if best is None:
        raise ValueError("empty grid")
    return best
