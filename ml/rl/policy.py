"""A trained PPO agent as a simulator :class:`~ml.sim.policies.Policy`.

It normalizes observations with the statistics frozen at training time and samples its actions
as in training, from a generator re-seeded at every ``reset``, so an evaluation is reproducible
given the env seeds. (Acting greedily is not the same policy: a trained agent that mostly holds
the pool and scales with smaller probabilities never scales at all when it takes its most likely
action, measured far worse.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.rl.ppo import Agent, RolloutPolicy, RunningMeanStd, load_checkpoint


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

    def __init__(self, agent: Agent, obs_rms: RunningMeanStd, seed: int = 0) -> None:
        self.agent = agent
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
        return cls(agent.eval(), RunningMeanStd.from_state(payload["obs_rms"]))

    def reset(self, num_envs: int) -> None:
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        return self.rollout.act(self.obs_rms.normalize(obs), self.rng)[0]
