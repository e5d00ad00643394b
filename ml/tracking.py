"""Weights & Biases runs, shared by the trainers (``--wandb``).

Runs are offline unless WANDB_API_KEY is set, and their files go to the data home's ``wandb/``
rather than the working directory; ``wandb sync`` uploads an offline run later.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prioritymax.settings import get_settings


@contextlib.contextmanager
def wandb_run(project: str, job_type: str, config: dict[str, Any]) -> Iterator[Any]:
    import wandb

    settings = get_settings()
    online = settings.wandb_api_key is not None
    if online:
        os.environ.setdefault("WANDB_API_KEY", settings.wandb_api_key.get_secret_value())
    os.environ.setdefault("WANDB_DIR", str(settings.wandb_dir))
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=project,
        job_type=job_type,
        config=config,
        dir=str(settings.wandb_dir),
        mode="online" if online else "offline",
    )
    try:
        yield run
    finally:
        run.finish()


def log_model_artifact(run: Any, name: str, files: list[Path], metadata: dict[str, Any]) -> None:
    import wandb

    artifact = wandb.Artifact(name, type="model", metadata=metadata)
    for path in files:
        artifact.add_file(str(path))
    run.log_artifact(artifact)
