"""The predictor's trainer commands, with the seed's names and flags (plus a few of our own)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from prioritymax.settings import get_settings

DATA = click.Path(dir_okay=False, path_type=Path)


def _default_ckpt() -> Path:
    return get_settings().models_dir / "predictor_lgbm.pkl"


def _horizons(text: str | None) -> tuple[int, ...] | None:
    """``--horizons 1,5,15`` as a tuple of whole, non-negative numbers of steps."""
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give whole numbers of steps, e.g. 1,5,15") from None
    if any(v < 0 for v in values):
        raise click.BadParameter("horizons are steps ahead: none may be negative")
    return values


def _emit(result) -> None:
    from ml.cli import emit

    emit(result)


@click.command("train_predictor")
@click.option("--data", type=DATA, required=True, help="CSV or Parquet: queue_metrics.csv or a trace")
@click.option("--target", default=None,
              help="column to forecast [default: the load: arrivals (queue_metrics.csv) or requests "
                   "(a trace); queue_next_sec is the seed's queue target]")
@click.option("--ckpt", type=DATA, default=None,
              help="checkpoint to write [default: <data home>/models/predictor_lgbm.pkl]")
@click.option("--model", "kind", type=click.Choice(["lgbm", "rf"]), default="lgbm",
              show_default=True, help="LightGBM or scikit-learn RandomForest")
@click.option("--horizon", type=click.IntRange(0, 1), default=None,
              help="steps ahead [default: 0 for queue_next_sec, which already looks ahead; else 1]")
@click.option("--horizons", default=None, callback=lambda c, p, v: _horizons(v),
              help="steps ahead to forecast, comma-separated [default: 1,5,15; queue_next_sec: 0]")
@click.option("--holdout-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--params", "params_json", default=None,
              help='LightGBM parameters as JSON, e.g. the best_params of optuna_predictor')
@click.option("--seed", default=0, show_default=True)
@click.option("--wandb", is_flag=True, help="log to Weights & Biases (offline without WANDB_API_KEY)")
@click.option("--mlflow", is_flag=True, help="log the run and register the model as challenger")
def train_predictor_command(data, target, ckpt, kind, horizon, horizons, holdout_fraction,
                            params_json, seed, wandb, mlflow):
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
                                horizons=horizons, holdout_fraction=holdout_fraction, params=params,
                                seed=seed, mlflow=mlflow, wandb=wandb)
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
@click.option("--target", default=None, help="column to forecast [default: arrivals or requests]")
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
@click.option("--target", default=None, help="column to forecast [default: arrivals or requests]")
@click.option("--folds", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--model", "kind", type=click.Choice(["lgbm", "rf"]), default="lgbm",
              show_default=True)
@click.option("--horizon", type=click.IntRange(0, 1), default=None)
@click.option("--horizons", default=None, callback=lambda c, p, v: _horizons(v),
              help="steps ahead to forecast, comma-separated [default: 1,5,15; queue_next_sec: 0]")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="rows between forecast origins [default: about 1000 origins per fold]")
@click.option("--no-statistical", is_flag=True, help="skip statsforecast's AutoETS and MSTL")
def backtest_predictor_command(data, target, folds, kind, horizon, horizons, stride, no_statistical):
    """Rolling-origin backtest against persistence, seasonal-naive, AutoETS and MSTL."""
    from ml.predictor.backtest import backtest_predictor

    _emit(backtest_predictor(data, target, folds=folds, kind=kind, horizon=horizon,
                             horizons=horizons, stride=stride, statistical=not no_statistical))


COMMANDS = (train_predictor_command, evaluate_predictor_command, canary_predictor_command,
            optuna_predictor_command, backtest_predictor_command)
