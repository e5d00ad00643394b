"""The predictor's trainer commands, with the seed's names and flags (plus a few of our own)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from prioritymax.settings import get_settings

DATA = click.Path(dir_okay=False, path_type=Path)


def _default_ckpt() -> Path:
    return get_settings().models_dir / "predictor_lgbm.pkl"


def _emit(result) -> None:
    from ml.cli import emit

    emit(result)


@click.command("train_predictor")
@click.option("--data", type=DATA, required=True, help="CSV or Parquet: queue_metrics.csv or a trace")
@click.option("--target", default="queue_next_sec", show_default=True,
              help="column to forecast (a trace: --target requests forecasts the next period)")
@click.option("--ckpt", type=DATA, default=None,
              help="checkpoint to write [default: <data home>/models/predictor_lgbm.pkl]")
@click.option("--model", "kind", type=click.Choice(["lgbm", "rf"]), default="lgbm",
              show_default=True, help="LightGBM or scikit-learn RandomForest")
@click.option("--horizon", type=click.IntRange(0, 1), default=None,
              help="steps ahead [default: 0 for queue_next_sec, which already looks ahead; else 1]")
@click.option("--holdout-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--params", "params_json", default=None,
              help='LightGBM parameters as JSON, e.g. the best_params of optuna_predictor')
@click.option("--seed", default=0, show_default=True)
@click.option("--wandb", is_flag=True, help="log to Weights & Biases (offline without WANDB_API_KEY)")
@click.option("--mlflow", is_flag=True, help="log the run and register the model as challenger")
def train_predictor_command(data, target, ckpt, kind, horizon, holdout_fraction, params_json, seed,
                            wandb, mlflow):
    """Train LightGBM/RandomForest predictor for queue forecasting."""
    import json

    from ml.predictor.train import train_predictor

    try:
        params = json.loads(params_json) if params_json else None
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--params") from None
    if params is not None and not isinstance(params, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--params")
    _, result = train_predictor(data, target, ckpt or _default_ckpt(), kind=kind, horizon=horizon,
                                holdout_fraction=holdout_fraction, params=params, seed=seed,
                                mlflow=mlflow, wandb=wandb)
    _emit(result)


@click.command("evaluate_predictor")
@click.option("--ckpt", type=DATA, default=None,
              help="checkpoint [default: <data home>/models/predictor_lgbm.pkl]")
@click.option("--data", type=DATA, required=True, help="CSV or Parquet to score on")
def evaluate_predictor_command(ckpt, data):
    """Evaluate saved predictor model on a CSV dataset."""
    from ml.predictor.train import evaluate_predictor

    _emit(evaluate_predictor(ckpt or _default_ckpt(), data))


@click.command("canary_predictor")
@click.option("--ckpt", type=DATA, default=None,
              help="candidate checkpoint [default: <data home>/models/predictor_lgbm.pkl]")
@click.option("--holdout", type=DATA, required=True, help="CSV or Parquet of held-out rows")
@click.option("--threshold", type=float, default=None,
              help="pass only if the holdout RMSE is below this [default: the best baseline's]")
@click.option("--margin", type=click.FloatRange(0), default=0.02, show_default=True,
              help="how much worse than the champion a candidate may be (relative)")
@click.option("--champion-ckpt", type=DATA, default=None,
              help="compare with this checkpoint instead of the registry's champion")
@click.option("--no-registry", is_flag=True, help="do not look up a champion in MLflow")
def canary_predictor_command(ckpt, holdout, threshold, margin, champion_ckpt, no_registry):
    """Run canary gate for predictor (exit status 1 when it fails)."""
    from ml.predictor.canary import canary_predictor

    result = canary_predictor(ckpt or _default_ckpt(), holdout, threshold, margin=margin,
                              champion_ckpt=champion_ckpt, use_registry=not no_registry)
    _emit(result)
    if not result["passed"]:
        sys.exit(1)


@click.command("optuna_predictor")
@click.option("--data", type=DATA, required=True, help="CSV or Parquet")
@click.option("--target", default="queue_next_sec", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="trials to add to the study (it resumes where the last call stopped)")
@click.option("--horizon", type=click.IntRange(0, 1), default=None)
@click.option("--seed", default=0, show_default=True)
def optuna_predictor_command(data, target, trials, horizon, seed):
    """Run Optuna tuning for LightGBM predictor hyperparameters."""
    from ml.predictor.tune import optuna_predictor

    _emit(optuna_predictor(data, target, trials, horizon=horizon, seed=seed))


@click.command("backtest_predictor")
@click.option("--data", type=DATA, required=True, help="CSV or Parquet")
@click.option("--target", default="queue_next_sec", show_default=True)
@click.option("--folds", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--model", "kind", type=click.Choice(["lgbm", "rf"]), default="lgbm",
              show_default=True)
@click.option("--horizon", type=click.IntRange(0, 1), default=None)
def backtest_predictor_command(data, target, folds, kind, horizon):
    """Rolling-origin backtest of the predictor (each fold trains on all earlier rows)."""
    from ml.predictor.train import backtest_predictor

    _emit(backtest_predictor(data, target, folds=folds, kind=kind, horizon=horizon))


COMMANDS = (train_predictor_command, evaluate_predictor_command, canary_predictor_command,
            optuna_predictor_command, backtest_predictor_command)
