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
  smoothed rate (at the instantaneous one when it jumps ``jump_ratio`` times past it), plus enough
  workers to drain, within a multiple of each class's SLA, the backlog beyond what the pool
  clears well inside that SLA (all of it once the pool nears its cap); its parameters are tuned on
  the training traffic (:func:`tune_base_rule`). The policy's action moves that recommendation by
  ``{-2, -1, 0, +1, +2}`` units of 10% of it (at least one worker); the pool then moves toward the
  adjusted target as far as one step allows. Action 0 (the middle one) is the rule itself.
- **It acts greedily.** A residual's most likely action is the rule unless training found a
  better one in that state, so the rule is the floor; sampling would add noise on top of it.
- **It learns its improvement over the rule** (:class:`ResidualVecEnv`: a twin simulator runs the
  rule on the same episodes), and **its adjustments must earn their place**: at the end of
  training they are kept only if they beat the rule on the training traffic's shifted variants
  (:func:`validate_adjustments`); otherwise the policy is its rule.

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
from ml.sim.evaluate import best_of_grid, evaluate_policy
from ml.sim.policies import erlang_c_servers
from ml.sim.traffic import RateSeries
from ml.sim.tuning import baseline_grids
from ml.sim.vec_env import PriorityMaxVecEnv

FEATURE_CAP = 20.0
#: What the control reads of a step's info (or of a live reading, :func:`reading_info`).
READING_KEYS = ("queue", "arrival_rate", "arrival_rate_smoothed", "active_workers", "warming_workers",
                "utilization")
RESIDUAL_STEPS = (-2, -1, 0, 1, 2)
RESIDUAL_UNIT = 0.1  # one residual step, as a share of the rule's recommendation
#: Near the cap - the rule's Erlang-C size at least this share of the largest pool - every queued
#: task counts toward the backlog term (``drain_threshold`` is ignored): the pool cannot grow much
#: later, so a backlog left to sit there is still there when the next peak arrives.
NEAR_CAP_SHARE = 0.5


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
    # Backlog term: workers to drain, within this share of its SLA, the backlog ahead of each
    # class's newest task (the largest need over the classes; None: no backlog term).
    drain_sla_fraction: float | None = 2.0
    # Size for the instantaneous rate when it jumps past jump_ratio x the smoothed one (a flash
    # crowd: the smoothing's lag would cost minutes), else for the smoothed rate.
    instant_rate: bool = True
    jump_ratio: float = 1.5
    # The backlog the pool clears within this share of each class's SLA is left to it (a queue
    # the Erlang-C size serves in time needs no extra worker); only the rest is drained. 0: every
    # queued task counts. Ignored near the cap (NEAR_CAP_SHARE).
    drain_threshold: float = 0.0
    # Whether the policy's learned adjustments are applied: set at the end of training by
    # validate_adjustments (False: they did not beat the rule on the training traffic's
    # variants, and the policy is its rule).
    learned: bool = True

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
        """Workers the base rule asks for: Erlang-C for the arrival rate (see ``instant_rate``),
        plus the workers that drain each class's excess backlog within ``drain_sla_fraction`` of
        its SLA (the most any class needs). The excess is what the active pool would not clear
        within ``drain_threshold`` of the SLA, or the whole backlog near the cap. The term is
        scale-free: a queue a pool serves in seconds adds nothing, one that breaks SLAs adds many.

        Why a threshold: counting every queued task made the rule pay for queues Erlang-C's size
        clears on its own (4% of NASA's held-out reward against predictive Erlang-C); counting
        none until the SLA breaks let a pool near its cap fall behind for good at 3x load (-20%).
        """
        cfg = self.config
        rate = _f64(info["arrival_rate_smoothed"])
        if self.instant_rate:
            now = _f64(info["arrival_rate"])
            rate = np.where(now > self.jump_ratio * rate, now, rate)
        sized = erlang_c_servers(rate, cfg.service_rate, self.wait_seconds,
                                 self.max_wait_probability, cfg.max_workers)
        if self.drain_sla_fraction is not None:
            sla = np.asarray(cfg.sla_seconds)
            ahead = np.cumsum(_f64(info["queue"]), axis=1)
            threshold = np.where(sized < NEAR_CAP_SHARE * cfg.max_workers, self.drain_threshold, 0.0)
            cleared = (threshold * _f64(info["active_workers"]) * cfg.service_rate)[:, None] * sla
            excess = np.maximum(ahead - cleared, 0.0)
            horizon = self.drain_sla_fraction * sla * cfg.service_rate
            sized = sized + np.max(excess / horizon, axis=1)
        return np.clip(sized, cfg.min_workers, cfg.max_workers)

    def env_action(self, residual: np.ndarray, info: dict[str, Any],
                   target: np.ndarray | None = None) -> np.ndarray:
        """The simulator's action (a scale delta index) for residual action indices. ``target``
        is :meth:`rule_target` of ``info`` when the caller has it already (it is the costliest
        part of a step: Erlang-C's search over pool sizes)."""
        cfg = self.config
        base = self.rule_target(info) if target is None else target
        unit = np.maximum(1.0, np.round(RESIDUAL_UNIT * base))
        steps = np.asarray(RESIDUAL_STEPS, dtype=np.float64)[np.asarray(residual)]
        desired = np.clip(base + steps * unit, cfg.min_workers, cfg.max_workers)
        pool = _f64(info["active_workers"]) + _f64(info["warming_workers"])
        return cfg.action_for_delta(np.round(desired - pool))

    # ---------------------------------------------------------------------------- features
    def features(self, info: dict[str, Any], target: np.ndarray | None = None) -> np.ndarray:
        """(N, F) float32 inputs, each relative to capacity (see the module's docstring);
        ``target`` as for :meth:`env_action`."""
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
            (self.rule_target(info) if target is None else target) / np.maximum(pool, 1e-9),
            rate / (cfg.max_workers * cfg.service_rate),
        ]
        return np.minimum(np.stack(columns, axis=1), FEATURE_CAP).astype(np.float32)

    def policy_action(self, logits: np.ndarray) -> np.ndarray:
        """Greedy; the rule's own action when the adjustments were not validated."""
        if not self.learned:
            return np.full(len(logits), self.rule_action)
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
    its features, actions are residuals. Only what ``ml.rl.ppo.train`` uses is exposed.

    The reward PPO sees is the step's reward *over the rule's*: a twin simulator, seeded alike
    (so it draws the very same episodes and arrivals: they do not depend on actions), runs the
    rule alone in lockstep, and each step pays (reward - rule's reward) divided by the cost of a
    step of a pool sized for the episode's mean load. An episode's return is then its
    improvement over the rule, in units comparable across load levels: without the twin, flash
    crowd and overloaded episodes (rewards a hundred times the others) decided every adjustment,
    and PPO learned to over-provision quiet pools. The maximizing policy is unchanged: per
    episode, the rule's return and the scale are constants."""

    def __init__(self, num_envs: int, control: ResidualControl, traffic: RateSeries) -> None:
        self.control = control
        self.env = PriorityMaxVecEnv(num_envs, control.config, traffic, autoreset_mode="SameStep")
        self.twin = PriorityMaxVecEnv(num_envs, control.config, traffic, autoreset_mode="SameStep")
        self.rule = RulePolicy(control)
        size = len(feature_names(control.config))
        self.single_observation_space = spaces.Box(0.0, FEATURE_CAP, (size,), np.float32)
        self.single_action_space = spaces.Discrete(control.num_actions)
        self._info: dict[str, Any] | None = None
        self._target: np.ndarray | None = None  # the rule's target for _info
        self._twin_info: dict[str, Any] | None = None
        self._scale = np.ones(num_envs)
        self._cumulative_rates = np.concatenate([[0.0], np.cumsum(self.env.traffic.rates)])

    def _episode_scale(self) -> np.ndarray:
        """Per env: the cost of one step of a pool sized for its episode's mean rate."""
        cfg, core, cumulative = self.control.config, self.env._core, self._cumulative_rates
        mean = (cumulative[core.start + core.length] - cumulative[core.start]) / core.length
        return np.maximum(mean / cfg.service_rate, cfg.min_workers) * cfg.worker_cost_per_step

    def _observe(self, info: dict[str, Any]) -> np.ndarray:
        """The features of ``info``, keeping the rule's target for the next step's action."""
        self._info, self._target = info, self.control.rule_target(info)
        return self.control.features(info, self._target)

    def reset(self, *, seed: int | list[int | None] | None = None):
        _, info = self.env.reset(seed=seed)
        _, self._twin_info = self.twin.reset(seed=seed)
        self._scale = self._episode_scale()
        return self._observe(info), info

    def step(self, actions: np.ndarray):
        assert self._info is not None and self._twin_info is not None, "call reset() before step()"
        env_actions = self.control.env_action(actions, self._info, self._target)
        _, reward, terminated, truncated, info = self.env.step(env_actions)
        _, rule_reward, _, _, self._twin_info = self.twin.step(self.rule.act(None, self._twin_info))
        reward = (reward - rule_reward) / self._scale
        if truncated.any():
            final = np.full(len(truncated), None, dtype=object)
            final_info = info["final_info"]
            features = self.control.features(final_info)
            for i in np.flatnonzero(truncated):
                final[i] = features[i]
            info = {**info, "final_obs": final}
            self._scale = self._episode_scale()  # the envs that ended have started anew
        return self._observe(info), reward, terminated, truncated, info

    def get_state(self) -> dict[str, Any]:
        info, twin = self._info or {}, self._twin_info or {}
        return {"env": self.env.get_state(), "twin": self.twin.get_state(),
                "info": {k: np.array(info[k]) for k in READING_KEYS},
                "twin_info": {k: np.array(twin[k]) for k in READING_KEYS}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.env.set_state(state["env"])
        self.twin.set_state(state["twin"])
        self._twin_info = state["twin_info"]
        self._observe(state["info"])
        self._scale = self._episode_scale()

    def close(self) -> None:
        self.env.close()
        self.twin.close()


VALIDATION_SEEDS = tuple(range(500, 508))  # apart from tuning's and evaluation's seeds
VALIDATION_TOLERANCE = 0.005


#: Load levels of the variants, as shares of what the largest pool serves.
VARIANT_LOADS = (0.06, 0.2, 0.6)
FLASH_VARIANT_LOAD = 0.2


def shift_variants(traffic: RateSeries, config: SimConfig) -> list[RateSeries]:
    """The training traffic's shape at the load levels a pool of this size may face - 6%, 20%
    and 60% of the largest pool's capacity - and at 20% with flash crowds: what the base rule is
    tuned on and the learned adjustments are validated on. The levels are relative to capacity,
    not to the training traffic's own mean, so a rule tuned on an overloaded history is not a
    rule for overload only (tuned on the training mean, such a rule scored 7% below Erlang-C on
    the quieter future)."""
    from ml.sim.shifts import capacity_rate, scaled_to_mean, with_flash_crowds

    capacity = capacity_rate(config)
    levels = [scaled_to_mean(traffic, share * capacity, f"{share:g}_capacity") for share in VARIANT_LOADS]
    flash = with_flash_crowds(scaled_to_mean(traffic, FLASH_VARIANT_LOAD * capacity, "flash_base"), 0)
    return [*levels, flash]


def validate_adjustments(policy: Any, control: ResidualControl, traffic: RateSeries,
                         episode_steps: int = 240) -> dict[str, Any]:
    """Whether a trained residual policy's adjustments beat its own rule, on the training
    traffic's variants (:func:`shift_variants`; short episodes, seeds apart from tuning's).

    They are kept only if they help on average and cost no variant more than
    ``VALIDATION_TOLERANCE`` of the rule's reward: a learned part that helps one regime and
    hurts another is not worth deploying over a rule that holds in both. ``policy`` is the
    trained policy (any simulator policy acting with ``control``)."""
    config = control.config
    short = config.replace(episode_steps=min(episode_steps, config.episode_steps))
    seeds = list(VALIDATION_SEEDS)
    changes = []
    for series in shift_variants(traffic, config):
        learned = evaluate_policy(policy, series, seeds=seeds, config=short).reward.mean()
        rule = evaluate_policy(RulePolicy(control), series, seeds=seeds, config=short).reward.mean()
        changes.append(float((learned - rule) / abs(rule)))
    keep = min(changes) >= -VALIDATION_TOLERANCE and float(np.mean(changes)) > 0
    return {"kept": bool(keep), "change_vs_rule": changes,
            "variants": [*(f"load_{share:g}_of_capacity" for share in VARIANT_LOADS),
                         f"flash_crowds_at_{FLASH_VARIANT_LOAD:g}"]}


# What tune_base_rule tries.
#: The backlog term's thresholds, as shares of each class's SLA.
DRAIN_THRESHOLDS = (0.0, 0.25, 0.5)
#: Its horizons, in SLAs (0.5 and 8 were never chosen on NASA, its overloaded history or the
#: synthetic profile; each horizon is 9 of the candidates, about a fifth of the tuning time).
DRAIN_HORIZONS = (1.0, 2.0, 4.0)
#: Jump ratios. The smoothed rate takes 18% of a step at once, so a 3x jump of the instantaneous
#: over the smoothed rate is a 5.4x step in load (a flash crowd), and 1.5x a 1.7x step (ordinary
#: bursts on many traces).
JUMP_RATIOS = (1.5, 3.0)


def tune_base_rule(config: SimConfig, traffic: RateSeries, episodes: int = 8,
                   episode_steps: int = 240) -> ResidualControl:
    """The base rule's parameters, tuned on the training traffic only, in two stages.

    1. Erlang-C's wait target and probability: the best mean reward on ``traffic`` as it is, as
       the Erlang-C baseline is tuned.
    2. The reactions to what the training part may not show - the backlog term's horizon and
       threshold, and sizing for a jump in the instantaneous rate (and how large a jump) - on the
       training traffic's shape at the load levels the pool may face (:func:`shift_variants`).
       On each variant a candidate's shortfall is its distance from the best candidate's
       reward there, relative to it; the smallest worst shortfall wins (ties: the smaller
       mean), so no load level, and not the overloaded variants' large rewards, decides the
       rule for all of them.

    Episodes are short (``episode_steps``) and seeded alike for every candidate."""
    import itertools

    short = config.replace(episode_steps=min(episode_steps, config.episode_steps))
    seeds = list(range(episodes))

    def reward(control: ResidualControl, series: RateSeries) -> float:
        policy = RulePolicy(dataclasses.replace(control, config=short))
        return float(evaluate_policy(policy, series, seeds=seeds, config=short).reward.mean())

    params, _ = best_of_grid("erlang_c", baseline_grids(config)["erlang_c"], traffic,
                             seeds=seeds, config=short)  # as the Erlang-C baseline is tuned
    erlang = ResidualControl(config, float(params["wait_seconds"]),
                             float(params["max_wait_probability"]),
                             drain_sla_fraction=None, instant_rate=False)
    variants = shift_variants(traffic, config)
    drains = [(None, 0.0), *itertools.product(DRAIN_HORIZONS, DRAIN_THRESHOLDS)]
    jumps = [(False, 1.5), *((True, ratio) for ratio in JUMP_RATIOS)]
    candidates = [dataclasses.replace(erlang, drain_sla_fraction=d, drain_threshold=t,
                                      instant_rate=i, jump_ratio=r)
                  for (d, t), (i, r) in itertools.product(drains, jumps)]
    rewards = np.array([[reward(c, v) for v in variants] for c in candidates])
    best = rewards.max(axis=0)
    shortfall = (best - rewards) / np.abs(best)
    order = np.lexsort((shortfall.mean(axis=1), shortfall.max(axis=1)))
    return candidates[int(order[0])]
