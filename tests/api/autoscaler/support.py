"""Registered model versions for the autoscaler tests: real PPO checkpoints (two tiny trainings)
registered in the embedded MLflow registry of a data home, and one broken version whose
checkpoint artifact is garbage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

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

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIORITYMAX_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # one left by another test's MLflow
        get_settings.cache_clear()
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
    get_settings.cache_clear()
    return Versions(home, good, broken)
