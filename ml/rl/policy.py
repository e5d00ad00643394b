"""A trained PPO agent as a simulator :class:`~ml.sim.policies.Policy`.

It normalizes observations with the statistics frozen at training time. A *direct* policy samples
its actions as in training, from a generator re-seeded at every ``reset``, so an evaluation is
reproducible given the env seeds. (Acting greedily is not the same policy for it: a trained agent
that mostly holds the pool and scales with smaller probabilities never scales at all when it takes
its most likely action, measured far worse.) A *residual* policy (:mod:`ml.rl.residual`) reads its
capacity-relative inputs from the step's info and acts greedily: its most likely action is the
tuned rule unless training found better, so the rule is its floor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.rl.ppo import Agent, RolloutPolicy, RunningMeanStd, load_checkpoint, obs_range_of
from ml.rl.residual import ResidualControl, feature_names


class ExportedPolicy(torch.nn.Module):
    """Raw observations in, action logits out: the actor with its normalization built in, the
    self-contained model that the registry serves (``mlflow.pytorch``)."""

    def __init__(self, agent: Agent, obs_rms: RunningMeanStd) -> None:
        super().__init__()
        self.actor = agent.actor
        self.register_buffer("mean", torch.as_tensor(np.asarray(obs_rms.mean), dtype=torch.float32))
        self.register_buffer("std", torch.sqrt(torch.as_tensor(np.asarray(obs_rms.var),
                                                               dtype=torch.float32) + 1e-8))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(torch.clamp((obs - self.mean) / self.std, -10.0, 10.0))


class PPOPolicy:
    name = "ppo"

    def __init__(self, agent: Agent, obs_rms: RunningMeanStd, seed: int = 0,
                 control: ResidualControl | None = None,
                 obs_range: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.agent = agent
        self.control = control
        self.obs_range = obs_range
        self.obs_rms = RunningMeanStd(np.array(obs_rms.mean), np.array(obs_rms.var), obs_rms.count)
        self.seed = seed
        self.rollout = RolloutPolicy(agent)
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> PPOPolicy:
        """Any checkpoint, whatever device it trained on: acting runs in numpy on the CPU."""
        return cls.from_payload(load_checkpoint(path))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PPOPolicy:
        """From a checkpoint already read (:func:`~ml.rl.ppo.load_checkpoint`). The agent is
        built on the meta device and takes the checkpoint's tensors as they are: no initialization
        computed only to be overwritten (an autoscaler worker loads one at every promotion)."""
        with torch.device("meta"):
            agent = Agent(payload["obs_dim"], payload["num_actions"], payload["args"]["hidden_dim"])
        agent.load_state_dict(payload["agent"], assign=True)
        control = payload.get("control")
        return cls(agent.eval(), RunningMeanStd.from_state(payload["obs_rms"]),
                   control=None if control is None else ResidualControl.from_dict(control),
                   obs_range=obs_range_of(payload))

    @classmethod
    def from_state(cls, state) -> PPOPolicy:
        """The policy of a training run in progress (``ml.rl.ppo.TrainState``)."""
        return cls(state.agent, state.obs_rms, control=state.control, obs_range=state.obs_range)

    def reset(self, num_envs: int) -> None:
        self.rng = np.random.default_rng(self.seed)

    #: How far beyond the inputs seen in training a reading may go before :meth:`unseen` calls it
    #: out of distribution: this share of each input's range, plus an absolute margin (inputs are
    #: ratios: a backlog of 0.05 minutes of service is nothing, even if training never saw one).
    RANGE_SLACK, ABSOLUTE_SLACK = 0.1, 0.1

    def unseen(self, features: np.ndarray) -> str | None:
        """Why one row of residual inputs lies outside what training saw (None: it does not).
        The autoscaler worker falls back to the base rule on such a reading: the policy's
        adjustment there would be an extrapolation nobody measured."""
        if self.control is None or self.obs_range is None:
            return None
        low, high = self.obs_range
        slack = self.RANGE_SLACK * (high - low) + self.ABSOLUTE_SLACK
        outside = np.flatnonzero((features < low - slack) | (features > high + slack))
        if not len(outside):
            return None
        names = feature_names(self.control.config)
        i = int(outside[0])
        return (f"{names[i]} = {features[i]:.3g} is outside what the policy was trained on "
                f"[{low[i]:.3g}, {high[i]:.3g}]")

    def decide_residual(self, info: dict[str, Any]) -> tuple[int, float | None, str | None]:
        """One reading (a one-env info dict) of a residual policy: the simulator's action index,
        the chosen adjustment's probability, and why the rule decided alone (None: the policy did)."""
        assert self.control is not None
        target = self.control.rule_target(info)
        features = self.control.features(info, target)
        outside = self.unseen(features[0])
        if outside is not None:
            residual = np.array([self.control.rule_action])
            return int(self.control.env_action(residual, info, target)[0]), None, outside
        logits = self.rollout.logits(self.obs_rms.normalize(features))
        residual = self.control.policy_action(logits)
        weights = np.exp(logits[0] - logits[0].max())
        return (int(self.control.env_action(residual, info, target)[0]),
                float(weights[residual[0]] / weights.sum()), None)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        if self.control is None:
            return self.rollout.act(self.obs_rms.normalize(obs), self.rng)[0]
        target = self.control.rule_target(info)
        logits = self.rollout.logits(self.obs_rms.normalize(self.control.features(info, target)))
        return self.control.env_action(self.control.policy_action(logits), info, target)
