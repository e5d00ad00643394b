"""Optuna tuning of the LightGBM predictor (``optuna_predictor``).

TPE over num_leaves, learning_rate, feature_fraction, bagging_fraction and min_data_in_leaf,
scored by the validation RMSE at early stopping (the holdout stays unseen). Unpromising trials are
pruned: each boosting round reports its validation RMSE and a median pruner stops trials that
trail the others at the same round. The study lives in SQLite in the data home
(``models/optuna.db``), named after the target and the data's fingerprint, so calling again with
the same data resumes it and adds ``trials`` more.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from ml.predictor.train import default_lgbm_params, fit_lgbm, prepare
from prioritymax.settings import get_settings

log = logging.getLogger(__name__)

SEARCH_SPACE = ("num_leaves", "learning_rate", "feature_fraction", "bagging_fraction",
                "min_data_in_leaf")


def suggest(trial) -> dict[str, Any]:
    return {
        "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 200, log=True),
    }


def optuna_predictor(
    data: str | Path,
    target: str | None,
    trials: int,
    *,
    horizon: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    import optuna

    if trials < 1:
        raise ValueError("trials must be >= 1")
    prepared = prepare(data, target, horizon=horizon)
    x_train, y_train = prepared.matrix(prepared.train), prepared.changes(prepared.train)
    x_valid, y_valid = prepared.matrix(prepared.valid), prepared.changes(prepared.valid)
    settings = get_settings()
    storage_path = settings.models_dir / "optuna.db"
    storage = f"sqlite:///{storage_path}"
    name = f"predictor-{prepared.spec.target}-h{prepared.spec.horizon}-{prepared.table.fingerprint}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    existing = _trial_count(optuna, name, storage)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="minimize",
        # A resumed study gets a sampler seeded past the trials it already has, so it does not
        # replay the same random start-up points.
        sampler=optuna.samplers.TPESampler(seed=seed + existing),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=20),
        load_if_exists=True,
    )

    def objective(trial) -> float:
        params = {**default_lgbm_params(seed), **suggest(trial)}

        def report(env) -> None:
            value = dict((r[1], r[2]) for r in env.evaluation_result_list)["rmse"]
            trial.report(value, env.iteration)
            if trial.should_prune():
                raise optuna.TrialPruned()

        booster = fit_lgbm(x_train, y_train, x_valid, y_valid, params, progress=False,
                           callbacks=[report])
        trial.set_user_attr("best_iteration", booster.best_iteration)
        return float(booster.best_score["valid"]["rmse"])

    study.optimize(objective, n_trials=trials,
                   show_progress_bar=sys.stderr.isatty() if progress is None else progress)
    states = [t.state for t in study.trials]
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    result: dict[str, Any] = {
        "study": name,
        "storage": str(storage_path),
        "trials": len(study.trials),
        "trials_this_call": len(study.trials) - existing,
        "completed": len(completed),
        "pruned": sum(s == optuna.trial.TrialState.PRUNED for s in states),
    }
    if completed:
        best = study.best_trial
        result |= {
            "best_params": best.params,
            "best_score": best.value,
            "metric": "valid_rmse",
            "best_trial": best.number,
            "best_iteration": best.user_attrs.get("best_iteration"),
        }
    log.info("study %s: %d trials, best %s", name, len(study.trials), result.get("best_score"))
    return result


def _trial_count(optuna, name: str, storage: str) -> int:
    try:
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:
        return 0


