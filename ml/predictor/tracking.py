"""Recording a trained predictor in MLflow (run, model, registry) and W&B."""

from __future__ import annotations

import logging
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

from ml import registry
from ml.predictor.model import PredictorModel

log = logging.getLogger(__name__)

MODEL_NAME = "predictor"
EXPERIMENT = "predictor"
SKLEARN_TREE = "sklearn.tree._tree.Tree"


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """holdout metrics, baseline RMSEs and skills as flat MLflow metric names."""
    holdout = result["holdout"]
    metrics = {f"holdout_{k}": holdout[k] for k in ("rmse", "mae", "r2", "mape")
               if holdout.get(k) is not None}
    for name, values in holdout["baselines"].items():
        metrics[f"holdout_rmse_{name}"] = values["rmse"]
    for name, value in holdout["skill"].items():
        if value is not None:
            metrics[f"skill_vs_{name}"] = value
    return metrics


def log_to_mlflow(
    model: PredictorModel,
    ckpt: Path,
    result: dict[str, Any],
    example: pd.DataFrame,
    curve: list[float],
) -> dict[str, Any]:
    """One run with params, the validation curve, holdout metrics, the model (signature and input
    example) registered as a new ``predictor`` version with alias ``challenger``, and the
    checkpoint with its metadata as artifacts."""
    import mlflow
    from mlflow.models import infer_signature

    inputs = example[model.spec.features].astype("float64")
    signature = infer_signature(inputs, model.predict(example))
    library = "lightgbm" if model.kind == "lgbm" else "scikit-learn"
    requirements = [f"{library}=={importlib_metadata.version(library)}",
                    f"pandas=={importlib_metadata.version('pandas')}"]
    with registry.start_run(EXPERIMENT, f"{model.kind}-{model.spec.target}",
                            tags={"model_kind": model.kind, "target": model.spec.target}) as run:
        mlflow.log_params({
            "model": model.kind, "target": model.spec.target, "horizon": model.spec.horizon,
            "features": len(model.spec.features), "data": model.metadata["data"]["path"],
            "data_fingerprint": model.metadata["data"]["fingerprint"],
            **{f"param_{k}": v for k, v in model.metadata["params"].items()},
        })
        for step, value in enumerate(curve):
            mlflow.log_metric("valid_rmse", value, step=step)
        mlflow.log_metrics(flat_metrics(result))
        if model.kind == "lgbm":
            log_model, flavor = mlflow.lightgbm.log_model, {}
        else:
            # MLflow saves scikit-learn models with skops, which refuses a forest's tree type
            # unless it is trusted: this forest was trained here, a moment ago.
            log_model, flavor = mlflow.sklearn.log_model, {"skops_trusted_types": [SKLEARN_TREE]}
            requirements.append(f"skops=={importlib_metadata.version('skops')}")
        info = log_model(
            model.estimator,
            name="model",
            signature=signature,
            input_example=inputs.head(5),
            pip_requirements=requirements,
            registered_model_name=MODEL_NAME,
            **flavor,
        )
        mlflow.log_artifact(str(ckpt), "checkpoint")
        mlflow.log_artifact(str(PredictorModel.metadata_path(ckpt)), "checkpoint")
        version = str(info.registered_model_version)
    registry.set_challenger(MODEL_NAME, version)
    tracked = {"run_id": run.info.run_id, "model_name": MODEL_NAME, "model_version": version,
               "tracking_uri": mlflow.get_tracking_uri()}
    model.metadata["mlflow"] = tracked
    model.write_metadata(ckpt)
    log.info("logged run %s, registered %s version %s (challenger)", run.info.run_id, MODEL_NAME,
             version)
    return tracked


def champion_checkpoint(destination: Path) -> tuple[PredictorModel, str] | None:
    """The registry's champion predictor, loaded from its checkpoint artifact, with its version."""
    found = registry.champion_checkpoint(MODEL_NAME, "*.pkl", destination)
    return None if found is None else (PredictorModel.load(found[0]), found[1])


def log_to_wandb(model: PredictorModel, ckpt: Path, result: dict[str, Any], curve: list[float]) -> str:
    from ml.tracking import log_model_artifact, wandb_run

    config = {"model": model.kind, "target": model.spec.target, "horizon": model.spec.horizon,
              **model.metadata["params"]}
    with wandb_run("prioritymax", "train_predictor", config) as run:
        for step, value in enumerate(curve):
            run.log({"valid_rmse": value}, step=step)
        run.summary.update(flat_metrics(result))
        log_model_artifact(run, MODEL_NAME, [ckpt, PredictorModel.metadata_path(ckpt)],
                           {"target": model.spec.target})
        return run.dir
