"""Recording PPO runs: MLflow (per-epoch metrics, the checkpoint, the registered ``rl_agent``),
W&B, and the metadata file beside a checkpoint (``rl_agent.json``) that keeps the registry
version and the gate result."""

from __future__ import annotations

import dataclasses
import json
import logging
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ml import registry
from ml.rl.ppo import Args
from prioritymax.files import atomic_write_bytes

log = logging.getLogger(__name__)

MODEL_NAME = "rl_agent"
EXPERIMENT = "rl_agent"


def metadata_path(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def read_metadata(checkpoint: Path) -> dict[str, Any]:
    path = metadata_path(checkpoint)
    return json.loads(path.read_text()) if path.is_file() else {}


def update_metadata(checkpoint: Path, **sections: Any) -> None:
    document = read_metadata(checkpoint) | sections
    atomic_write_bytes(metadata_path(checkpoint), json.dumps(document, indent=2, default=str).encode())


def forget_metadata(checkpoint: Path) -> None:
    """Drop the registry version and gate result kept for a checkpoint about to be rewritten:
    they describe the policy it held before."""
    metadata_path(checkpoint).unlink(missing_ok=True)


def _flat(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k not in ("epoch", "global_step")
            and v == v}  # v == v drops NaN


class MlflowTracker:
    """An MLflow run for one train_rl call: params now, metrics every epoch, model at the end."""

    def __init__(self, args: Args, checkpoint: Path, traffic: str, *, run_name: str = "ppo",
                 extra_params: dict[str, Any] | None = None) -> None:
        import mlflow

        self.checkpoint = checkpoint
        self._run = registry.start_run(EXPERIMENT, f"{run_name}-{args.num_envs}envs",
                                       tags={"traffic": traffic})
        self.run = self._run.__enter__()
        mlflow.log_params({**dataclasses.asdict(args), "traffic": traffic, **(extra_params or {})})

    def log_epoch(self, metrics: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(_flat(metrics), step=int(metrics["epoch"]))

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        from ml.rl.policy import ExportedPolicy, PPOPolicy

        mlflow.log_metrics({"eval_reward": result["eval_reward"],
                            "hpa_reward": result["hpa_reward"]})
        policy = PPOPolicy.from_checkpoint(self.checkpoint)
        exported = ExportedPolicy(policy.agent, policy.obs_rms).eval()
        example = np.asarray(policy.obs_rms.mean, dtype=np.float32)[None, :].repeat(4, axis=0)
        with torch.no_grad():
            logits = exported(torch.from_numpy(example)).numpy()
        info = mlflow.pytorch.log_model(
            exported, name="model", signature=infer_signature(example, logits),
            input_example=example,
            pip_requirements=[f"torch=={importlib_metadata.version('torch').split('+')[0]}"],
            registered_model_name=MODEL_NAME,
        )
        mlflow.log_artifact(str(self.checkpoint), "checkpoint")
        version = str(info.registered_model_version)
        self._run.__exit__(None, None, None)
        registry.set_challenger(MODEL_NAME, version)
        tracked = {"run_id": self.run.info.run_id, "model_name": MODEL_NAME,
                   "model_version": version}
        update_metadata(self.checkpoint, mlflow=tracked)
        log.info("registered %s version %s (challenger)", MODEL_NAME, version)
        return {"mlflow": tracked}

    def abort(self) -> None:
        self._run.__exit__(RuntimeError, RuntimeError("train_rl failed"), None)


class WandbTracker:
    def __init__(self, args: Args, traffic: str) -> None:
        from ml.tracking import wandb_run

        self._context = wandb_run("prioritymax", "train_rl",
                                  {**dataclasses.asdict(args), "traffic": traffic})
        self.run = self._context.__enter__()

    def log_epoch(self, metrics: dict[str, float]) -> None:
        self.run.log(_flat(metrics), step=int(metrics["epoch"]))

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        from ml.tracking import log_model_artifact

        log_model_artifact(self.run, MODEL_NAME, [Path(result["checkpoint"])],
                           {"eval_reward": result["eval_reward"]})
        directory = self.run.dir
        self._context.__exit__(None, None, None)
        return {"wandb_dir": directory}

    def abort(self) -> None:
        self._context.__exit__(None, None, None)


def record_gate(checkpoint: Path, result: dict[str, Any], *, version: str | None = None) -> None:
    """Keep the gate result beside the checkpoint and, if registered, on its MLflow version.

    A checkpoint read from the registry (``version``) is the registry's own artifact: the result
    goes onto that version only, never into the artifact store."""
    if version is None:
        update_metadata(checkpoint, gate={k: v for k, v in result.items() if k != "checks"})
        version = (read_metadata(checkpoint).get("mlflow") or {}).get("model_version")
    if version:
        registry.record_gate(MODEL_NAME, version, {
            "passed": result["passed"], "reward": result["reward"],
            "hpa_reward": result["hpa_reward"],
            "best_baseline": result.get("best_baseline"),
            # JSON, as a tag holds text: the dashboard runs the very rule the gate compared with.
            "best_baseline_params": (json.dumps(result["best_baseline_params"], sort_keys=True)
                                     if result.get("best_baseline_params") is not None else None),
            "best_baseline_reward": result.get("best_baseline_reward"),
            "champion_version": result.get("champion_version"),
            "episodes": result["episodes"],
        })


def champion_checkpoint(destination: Path) -> tuple[Path, str] | None:
    """The registry champion's checkpoint file, downloaded, with its version."""
    return registry.champion_checkpoint(MODEL_NAME, "*.pt", destination)
