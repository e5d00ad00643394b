"""The robust policy's interface to the pool: capacity-relative inputs, and actions that adjust a
tuned queueing rule instead of replacing it (a *residual* policy).

Why. A policy that reads arrival rates normalized by its training traffic's mean, and picks raw
±workers, learns one load regime: trained where the pool was overloaded for days, it kept 47 of
50 workers on a quieter future. Here:

- **Inputs are relative to capacity**, so they mean the same at any load level: load over what
  the pool serves now (instantaneous and smoothed), the trend, the backlog per class in minutes
  of the pool's capacity, projected waits over each class's SLA, the warming share, utilization,
  the rule's recommendation over the current pool, and load over the largest pool's capacity (the
  one absolute fact that matters: how close the cap is). No time of day: daily shapes differ from
  trace to trace.
- **The action is a residual on a rule.** The base rule sizes the pool with Erlang-C at the
  smoothed rate (at the instantaneous one when it jumps 1.5x past it), plus enough workers to
  drain the backlog beyond a minute of service within ``drain_seconds``; its parameters are tuned
  on the training traffic (:func:`tune_base_rule`). The policy's action moves that recommendation by
  ``{-2, -1, 0, +1, +2}`` units of 10% of it (at least one worker); the pool then moves toward the
  adjusted target as far as one step allows. Action 0 (the middle one) is the rule itself.
- **It acts greedily.** A residual's most likely action is the rule unless training found a
  better one in that state, so the rule is the floor; sampling would add noise on top of a rule
  that is already good (a sampled residual measured worse than its rule).

The checkpoint keeps :meth:`ResidualControl.to_dict`; the autoscaler worker rebuilds it and also
uses the feature ranges seen in training to fall back to the rule on readings outside them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from ml.sim.config import SimConfig
from ml.sim.policies import erlang_c_servers
from ml.sim.traffic import RateSeries
from ml.sim.vec_env import PriorityMaxVecEnv

FEATURE_CAP = 20.0
#: What the control reads of a step's info (or of a live reading, :func:`reading_info`).
READING_KEYS = ("queue", "arrival_rate", "arrival_rate_smoothed", "active_workers", "warming_workers",
                "utilization")
RESIDUAL_STEPS = (-2, -1, 0, 1, 2)
RESIDUAL_UNIT = 0.1  # one residual step, as a share of the rule's recommendation
TRAINING_REGIME_SLACK = 0.01  # see tune_base_rule
JUMP_RATIO = 1.5  # an instantaneous rate this far above the smoothed one is a jump, not noise


def feature_names(config: SimConfig) -> tuple[str, ...]:
    names = config.class_names
    return (
        "load_over_pool", "smoothed_load_over_pool", "rate_trend",
        *(f"backlog_minutes_{c}" for c in names),
        *(f"wait_over_sla_{c}" for c in names),
        "warming_share", "utilization", "rule_over_pool", "load_over_max_pool",
    )


@dataclass(frozen=True)
class ResidualControl:
    """The base rule's parameters and the maps between the pool and the policy."""

    config: SimConfig
    wait_seconds: float = 30.0  # Erlang-C: the wait whose probability is bounded
    max_wait_probability: float = 0.05
    drain_seconds: float | None = 300.0  # backlog term: drain the queue within this time (None: off)
    # Size for the instantaneous rate when it jumps past JUMP_RATIO x the smoothed one (a flash
    # crowd: the smoothing's lag would cost minutes), else for the smoothed rate.
    instant_rate: bool = True
    # The backlog term counts only the queue beyond this many minutes of the pool's service, so a
    # pool in its normal regime is sized by Erlang-C alone and only a real backlog adds workers.
    drain_deadband_minutes: float = 1.0

    kind = "residual"

    @property
    def num_actions(self) -> int:
        return len(RESIDUAL_STEPS)

    @property
    def rule_action(self) -> int:
        """The action that follows the rule unchanged."""
        return RESIDUAL_STEPS.index(0)

    # ------------------------------------------------------------------------------ the rule
    def rule_target(self, info: dict[str, Any]) -> np.ndarray:
        """Workers the base rule asks for: Erlang-C for the larger of the instantaneous and
        smoothed rates (reacting to a jump at once, not after the smoothing's lag), plus the
        backlog drained within ``drain_seconds``."""
        cfg = self.config
        rate = _f64(info["arrival_rate_smoothed"])
        if self.instant_rate:
            now = _f64(info["arrival_rate"])
            rate = np.where(now > JUMP_RATIO * rate, now, rate)
        sized = erlang_c_servers(rate, cfg.service_rate, self.wait_seconds,
                                 self.max_wait_probability, cfg.max_workers)
        if self.drain_seconds is not None:
            serving = _f64(info["active_workers"]) * cfg.service_rate
            backlog = np.maximum(_f64(info["queue"]).sum(axis=1)
                                 - self.drain_deadband_minutes * 60.0 * serving, 0.0)
            sized = sized + backlog / (cfg.service_rate * self.drain_seconds)
        return np.clip(sized, cfg.min_workers, cfg.max_workers)

    def env_action(self, residual: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The simulator's action (a scale delta index) for residual action indices."""
        cfg = self.config
        base = self.rule_target(info)
        unit = np.maximum(1.0, np.round(RESIDUAL_UNIT * base))
        steps = np.asarray(RESIDUAL_STEPS, dtype=np.float64)[np.asarray(residual)]
        desired = np.clip(base + steps * unit, cfg.min_workers, cfg.max_workers)
        pool = _f64(info["active_workers"]) + _f64(info["warming_workers"])
        return cfg.action_for_delta(np.round(desired - pool))

    # ---------------------------------------------------------------------------- features
    def features(self, info: dict[str, Any]) -> np.ndarray:
        """(N, F) float32 inputs, each relative to capacity (see the module's docstring)."""
        cfg = self.config
        active = np.maximum(_f64(info["active_workers"]), 1e-9)
        warming = _f64(info["warming_workers"])
        pool = active + warming
        serving = active * cfg.service_rate
        rate, smoothed = _f64(info["arrival_rate"]), _f64(info["arrival_rate_smoothed"])
        queue = _f64(info["queue"])  # (N, K)
        ahead = np.cumsum(queue, axis=1)
        wait = ahead / serving[:, None] / np.asarray(cfg.sla_seconds)
        columns = [
            rate / serving,
            smoothed / serving,
            (rate + 1e-6) / (smoothed + 1e-6),
            *(queue / (serving[:, None] * 60.0)).T,
            *wait.T,
            warming / np.maximum(pool, 1e-9),
            _f64(info["utilization"]),
            self.rule_target(info) / np.maximum(pool, 1e-9),
            rate / (cfg.max_workers * cfg.service_rate),
        ]
        return np.minimum(np.stack(columns, axis=1), FEATURE_CAP).astype(np.float32)

    def policy_action(self, logits: np.ndarray) -> np.ndarray:
        return np.argmax(logits, axis=1)

    # ------------------------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return {"kind": self.kind, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResidualControl:
        data = {k: v for k, v in data.items() if k != "kind"}
        return cls(**{**data, "config": SimConfig.from_dict(data["config"])})


def reading_info(queue: np.ndarray, arrival_rate: float, arrival_rate_smoothed: float,
                 active_workers: float, warming_workers: float, utilization: float) -> dict[str, Any]:
    """One live reading as the one-env info dict the control reads."""
    return {"queue": np.asarray(queue, dtype=np.float64)[None, :],
            "arrival_rate": np.array([arrival_rate]),
            "arrival_rate_smoothed": np.array([arrival_rate_smoothed]),
            "active_workers": np.array([active_workers]),
            "warming_workers": np.array([warming_workers]),
            "utilization": np.array([utilization])}


def _f64(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


class RulePolicy:
    """The base rule alone, as a simulator policy (what the residual adds is measured against it)."""

    name = "residual_base"

    def __init__(self, control: ResidualControl) -> None:
        self.control = control

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        n = len(np.asarray(info["active_workers"]))
        return self.control.env_action(np.full(n, self.control.rule_action), info)


class ResidualVecEnv:
    """A :class:`PriorityMaxVecEnv` seen through a :class:`ResidualControl`: observations are
    its features, actions are residuals. Only what ``ml.rl.ppo.train`` uses is exposed."""

    def __init__(self, num_envs: int, control: ResidualControl, traffic: RateSeries) -> None:
        self.control = control
        self.env = PriorityMaxVecEnv(num_envs, control.config, traffic, autoreset_mode="SameStep")
        size = len(feature_names(control.config))
        self.single_observation_space = spaces.Box(0.0, FEATURE_CAP, (size,), np.float32)
        self.single_action_space = spaces.Discrete(control.num_actions)
        self._info: dict[str, Any] | None = None

    def reset(self, *, seed: int | list[int | None] | None = None):
        _, info = self.env.reset(seed=seed)
        self._info = info
        return self.control.features(info), info

    def step(self, actions: np.ndarray):
        assert self._info is not None, "call reset() before step()"
        env_actions = self.control.env_action(actions, self._info)
        _, reward, terminated, truncated, info = self.env.step(env_actions)
        if truncated.any():
            final = np.full(len(truncated), None, dtype=object)
            final_info = info["final_info"]
            features = self.control.features(final_info)
            for i in np.flatnonzero(truncated):
                final[i] = features[i]
            info = {**info, "final_obs": final}
        self._info = info
        return self.control.features(info), reward, terminated, truncated, info

    def get_state(self) -> dict[str, Any]:
        info = self._info or {}
        return {"env": self.env.get_state(), "info": {k: np.array(info[k]) for k in READING_KEYS}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.env.set_state(state["env"])
        self._info = state["info"]

    def close(self) -> None:
        self.env.close()


def tune_base_rule(config: SimConfig, traffic: RateSeries, episodes: int = 8,
                   episode_steps: int = 240) -> ResidualControl:
    """The base rule's parameters, tuned on the training traffic only, in two stages.

    1. Erlang-C's wait target and probability: the best mean reward on ``traffic`` as it is, as
       the Erlang-C baseline is tuned, so in the training regime the rule is that baseline.
    2. The reactions to what the training part may not show - the backlog term, its dead band,
       and sizing for a jump in the instantaneous rate - on ``traffic`` as it is, at 0.3x and 3x
       its load, and with flash crowds. On each variant a candidate's shortfall is its distance
       from the best candidate's reward there, relative to it. Among the candidates within
       ``TRAINING_REGIME_SLACK`` of the best on the training traffic itself, the smallest worst
       shortfall over the shifted variants wins (ties: the smaller mean): robustness is bought
       only where it costs the regime the policy was trained for next to nothing, and one
       overloaded variant's large rewards do not decide the rule for every load level.

    Episodes are short (``episode_steps``) and seeded alike for every candidate."""
    import itertools

    from ml.sim.evaluate import evaluate_policy
    from ml.sim.shifts import scaled, with_flash_crowds

    short = config.replace(episode_steps=min(episode_steps, config.episode_steps))
    seeds = list(range(episodes))

    def reward(control: ResidualControl, series: RateSeries) -> float:
        policy = RulePolicy(dataclasses.replace(control, config=short))
        return float(evaluate_policy(policy, series, seeds=seeds, config=short).reward.mean())

    waits = sorted({config.sla_seconds[0], config.sla_seconds[min(1, len(config.sla_seconds) - 1)]})
    sizing = [ResidualControl(config, float(w), p, None, False)
              for w, p in itertools.product(waits, (0.01, 0.05, 0.1, 0.2, 0.4))]
    erlang = max(sizing, key=lambda c: reward(c, traffic))
    variants = [traffic, scaled(traffic, 0.3), scaled(traffic, 3.0), with_flash_crowds(traffic, 0)]
    candidates = [erlang] + [
        dataclasses.replace(erlang, drain_seconds=d, instant_rate=i, drain_deadband_minutes=b)
        for d, i, b in itertools.product((120.0, 300.0, 900.0), (False, True), (1.0, 3.0))]
    rewards = np.array([[reward(c, v) for v in variants] for c in candidates])
    best = rewards.max(axis=0)
    shortfall = (best - rewards) / np.abs(best)
    # Within TRAINING_REGIME_SLACK of the best on the training traffic itself (Erlang-C alone
    # always is), the smallest worst shortfall over the shifted variants.
    keeps_regime = shortfall[:, 0] <= TRAINING_REGIME_SLACK
    worst = np.where(keeps_regime, shortfall[:, 1:].max(axis=1), np.inf)
    order = np.lexsort((shortfall.mean(axis=1), worst))
    return candidates[int(order[0])]
