"""Registered model versions for the autoscaler tests: real PPO checkpoints (two tiny trainings)
registered in the embedded MLflow registry of a data home, and one broken version whose
checkpoint artifact is garbage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prioritymax.settings import get_settings

READING = {"queue": {"high": 10, "normal": 100, "low": 50}, "arrival_rate": 12.0, "active_workers": 10,
           "utilization": 0.9}


@dataclass
class Versions:
    home: Path
    good: list[str]
    broken: str


def register_policies(home: Path, work: Path) -> Versions:
    """In ``home``: rl_agent versions 1 and 2 (trained with seeds 1 and 2, gates passed), 3 (a
    garbage checkpoint, gate passed too, so only loading can refuse it); version 1 the champion."""
    from ml import registry
    from ml.rl.ppo import Args
    from ml.rl.train import train_rl

    previous = os.environ.get("PRIORITYMAX_HOME")
    os.environ["PRIORITYMAX_HOME"] = str(home)
    get_settings.cache_clear()
    try:
        good = []
        for seed in (1, 2):
            checkpoint = work / f"seed{seed}" / "rl_agent.pt"
            result = train_rl(Args(epochs=1, steps=256, num_envs=2, eval_every=1, eval_episodes=1, seed=seed),
                              checkpoint, progress=False)
            good.append(registry.register_files("rl_agent", [checkpoint],
                                                metrics={"eval_reward": result["eval_reward"]}))
        garbage = work / "broken" / "rl_agent.pt"
        garbage.parent.mkdir(parents=True)
        garbage.write_bytes(b"not a checkpoint")
        broken = registry.register_files("rl_agent", [garbage])
        for version in (*good, broken):
            registry.record_gate("rl_agent", version, {"passed": True})
        registry.promote("rl_agent", good[0], actor="test")
    finally:
        if previous is None:
            os.environ.pop("PRIORITYMAX_HOME", None)
        else:
            os.environ["PRIORITYMAX_HOME"] = previous
        get_settings.cache_clear()
    return Versions(home, good, broken)
