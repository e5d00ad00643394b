"""Run any policy over seeded episodes and summarize it with 95% confidence intervals; or record
one episode of several policies step by step (:func:`record_episode`), for plots.

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
import pandas as pd
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
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], PolicyEvaluation]:
    """The parameters of baseline ``name`` with the best mean reward over a grid, and their
    evaluation: tuning a baseline on a trace's training part so it is no strawman. ``extra``:
    arguments every candidate gets besides its grid point (such as ``forecasts``), kept out of
    the returned parameters."""
    import itertools

    from ml.sim.policies import make_baseline

    keys = list(grid)
    best: tuple[dict[str, Any], PolicyEvaluation] | None = None
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        evaluation = evaluate_policy(make_baseline(name, config, **params, **(extra or {})), source,
                                     seeds=seeds, config=config)
        if best is None or evaluation.reward.mean() > best[1].reward.mean():
            best = (params, evaluation)
    if best is None:
        raise ValueError("empty grid")
    return best


def perfect_sizing_reward(source: RateSeries, seeds: Sequence[int], config: SimConfig) -> np.ndarray:
    """Per episode, the reward of paying each step for exactly ceil(arrivals / what one worker
    serves in a step) workers (at least ``min_workers``), with no queueing, no SLA penalty and no
    churn: a bound no policy reaches (it knows each step's arrivals before they come and its
    workers need no warm-up), to say how much room the best rule leaves."""
    env = PriorityMaxVecEnv(len(seeds), config, source)
    try:
        env.reset(seed=[int(s) for s in seeds])
        hold = np.full(len(seeds), config.scale_deltas.index(0))
        per_worker = config.service_rate * config.step_seconds
        total = np.zeros(len(seeds))
        for _ in range(config.episode_steps):
            info = env.step(hold)[4]  # arrivals do not depend on the actions
            workers = np.maximum(np.ceil(info["arrivals"].sum(axis=1) / per_worker), config.min_workers)
            total -= workers * config.worker_cost_per_step
    finally:
        env.close()
    return total


_SCALARS = ("active_workers", "warming_workers", "utilization", "arrival_rate", "worker_delta",
            "worker_cost", "sla_penalty", "churn_cost", "series_index")
_PER_CLASS = ("arrivals", "queue", "violations")


def record_episode(policies: dict[str, Policy], source: RateSeries, seed: int,
                   config: SimConfig | None = None) -> pd.DataFrame:
    """One episode per policy, every one from the same ``seed``, recorded step by step: one row
    per step and policy (``step, time, policy``; arrivals, queue and SLA violations per class and
    in total; workers active, warming and both; utilization, the cost parts, reward, cumulative
    reward). :func:`evaluate_policy` keeps totals only; this is for looking at an episode.

    The policies run side by side, env i by policy i, each env seeded alone with ``seed``: each
    trajectory is exactly that of a one-env evaluation with that seed, and all face the same
    arrivals."""
    config = config or SimConfig()
    names = list(policies)
    n, k, steps = len(names), config.num_classes, config.episode_steps
    record = {name: np.zeros((steps, n, k)) for name in _PER_CLASS}
    record |= {name: np.zeros((steps, n)) for name in (*_SCALARS, "reward")}
    env = PriorityMaxVecEnv(n, config, source)
    try:
        obs, info = env.reset(seed=[seed] * n)
        for policy in policies.values():
            policy.reset(1)
        for t in range(steps):
            actions = np.concatenate([
                policy.act(obs[i:i + 1], {key: value[i:i + 1] for key, value in info.items()})
                for i, policy in enumerate(policies.values())])
            obs, reward, _, _, info = env.step(actions)
            record["reward"][t] = reward
            for name in (*_SCALARS, *_PER_CLASS):
                record[name][t] = info[name]
    finally:
        env.close()
    return pd.concat([_episode_frame(name, i, record, source, config) for i, name in enumerate(names)],
                     ignore_index=True)


def _episode_frame(name: str, index: int, record: dict[str, np.ndarray], series: RateSeries,
                   config: SimConfig) -> pd.DataFrame:
    mine = {key: value[:, index] for key, value in record.items()}
    frame: dict[str, Any] = {
        "step": np.arange(len(mine["reward"])),
        "time": pd.to_datetime(series.timestamps[mine["series_index"].astype(np.int64)], utc=True),
        "policy": name,
    }
    for prefix in _PER_CLASS:
        for c, cls in enumerate(config.class_names):
            frame[f"{prefix}_{cls}"] = mine[prefix][:, c]
        frame[prefix] = mine[prefix].sum(axis=1)
    frame["active_workers"] = mine["active_workers"]
    frame["warming_workers"] = mine["warming_workers"]
    frame["workers"] = mine["active_workers"] + mine["warming_workers"]
    for key in ("utilization", "arrival_rate", "worker_delta", "worker_cost", "sla_penalty", "churn_cost",
                "reward"):
        frame[key] = mine[key]
    frame["cumulative_reward"] = np.cumsum(mine["reward"])
    return pd.DataFrame(frame)
