"""``tune``: Ray Tune over our PPO's hyperparameters, with ASHA early stopping and Optuna search.

Each trial is a train_rl run (:func:`ml.rl.ppo.train`) that reports after every epoch, so ASHA
stops trials on their real learning curves. The metric, ``episode_reward_mean``, is the policy's
mean reward on fixed held-out episodes (the same seeds for every trial and epoch, so scores are
comparable). The space is the seed's:

    lr ∈ [1e-5, 1e-3] (log) · hidden_dim ∈ {64, 128, 256} · clip_range ∈ {0.1, 0.2, 0.3}
    · entropy_coef ∈ [0, 0.05]

Results land in ``<home>/models/tune/<name>/`` (Tune's experiment folder: one folder per trial
with its ``result.json``, ``progress.csv`` and PPO checkpoint); the best configuration is
returned, and saved as the train_rl preset ``preset`` (see :mod:`ml.rl.presets`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from ml.rl.ppo import Args
from ml.sim.config import SimConfig

METRICS = ("episode_reward_mean",)
#: The seed's names for the searched parameters -> Args fields.
SPACE_TO_ARGS = {"lr": "lr", "hidden_dim": "hidden_dim", "clip_range": "clip_coef",
                 "entropy_coef": "ent_coef"}


def search_space() -> dict[str, Any]:
    from ray import tune

    return {
        "lr": tune.loguniform(1e-5, 1e-3),
        "hidden_dim": tune.choice([64, 128, 256]),
        "clip_range": tune.choice([0.1, 0.2, 0.3]),
        "entropy_coef": tune.uniform(0.0, 0.05),
    }


def trial_args(base: dict[str, Any], config: dict[str, Any]) -> Args:
    return Args(**{**base, **{SPACE_TO_ARGS[k]: v for k, v in config.items() if k in SPACE_TO_ARGS}})


def ppo_trial(config: dict[str, Any], *, base: dict[str, Any], traffic_name: str,
              sim_config: dict[str, Any]) -> None:
    """Tune's function trainable: one PPO run, one ``tune.report`` per epoch."""
    from ray import tune

    from ml.rl.ppo import train
    from ml.rl.train import evaluator, traffic_named

    args = trial_args(base, config)
    sim = SimConfig.from_dict(sim_config)
    traffic = traffic_named(traffic_name, sim)

    def report(metrics: dict[str, float]) -> None:
        tune.report({"episode_reward_mean": metrics["charts/eval_reward"], "epoch": metrics["epoch"],
                     "global_step": metrics["global_step"],
                     **{k.replace("/", "_"): v for k, v in metrics.items() if k.startswith("losses/")}})

    train(args, traffic=traffic.train, traffic_name=traffic.name,
          checkpoint=Path(tune.get_context().get_trial_dir()) / "rl_agent.pt", config=sim,
          fresh=True, evaluate=evaluator(traffic.evaluation, sim, args.eval_episodes),
          on_epoch=report, progress=False)


def _progress_callback():
    from ray.tune import Callback

    class Progress(Callback):
        """One line per trial result on stderr (stdout carries the JSON result)."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("epoch", 0) % 5 == 0:
                click.echo(f"tune {trial.trial_id} epoch {result['epoch']}: "
                           f"episode_reward_mean {result['episode_reward_mean']:,.1f}", err=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            click.echo(f"tune {trial.trial_id} done after {last.get('epoch', 0)} epochs "
                       f"(episode_reward_mean {last.get('episode_reward_mean', float('nan')):,.1f})",
                       err=True)

    return Progress()


def run_tune(
    base: Args,
    *,
    samples: int = 10,
    scheduler: str = "asha",
    optuna: bool = False,
    metric: str = "episode_reward_mean",
    name: str | None = None,
    preset: str | None = "tuned",
    trace: str | Path | None = None,
    holdout_fraction: float = 0.2,
    cpus: int | None = None,
    grace_period: int = 5,
    reduction_factor: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the search; return the best configuration, every trial's outcome and compute used."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    from ml.rl.presets import save_preset
    from ml.rl.ray_runtime import local_mode, ray_session
    from ml.rl.train import traffic_for
    from prioritymax.settings import get_settings

    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r}: tune reports {', '.join(METRICS)}")
    if scheduler not in ("asha", "fifo"):
        raise ValueError(f"--scheduler {scheduler!r}: asha or fifo")
    sim = SimConfig()
    traffic = traffic_for(trace, sim, holdout_fraction)
    name = name or time.strftime("tune-%Y%m%d-%H%M%S")
    storage = get_settings().models_dir / "tune"
    base_args = dataclasses.asdict(base) | {"eval_every": 1, "checkpoint_every": base.epochs,
                                            "seed": seed}
    started = time.perf_counter()
    with ray_session(num_cpus=cpus) as cluster:
        concurrent = 1 if local_mode() else max(1, int(cluster["resources"].get("CPU", 1)))
        if optuna:
            from ray.tune.search.optuna import OptunaSearch

            searcher = ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=concurrent)
        else:
            searcher = BasicVariantGenerator(random_state=seed, max_concurrent=concurrent)
        chosen = (ASHAScheduler(time_attr="training_iteration", max_t=base.epochs,
                                grace_period=min(grace_period, base.epochs),
                                reduction_factor=reduction_factor)
                  if scheduler == "asha" else FIFOScheduler())
        trainable = tune.with_resources(
            tune.with_parameters(ppo_trial, base=base_args, traffic_name=traffic.name,
                                 sim_config=sim.to_dict()),
            {"cpu": 1},
        )
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(),
            tune_config=tune.TuneConfig(metric=metric, mode="max", num_samples=samples,
                                        search_alg=searcher, scheduler=chosen),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                      callbacks=[_progress_callback()] if progress else []),
        )
        with contextlib.redirect_stdout(sys.stderr):  # Tune's banners; stdout carries the JSON
            grid = tuner.fit()
    trials = []
    for result in grid:
        history = result.metrics_dataframe
        scores = history[metric] if history is not None and metric in history else []
        trials.append({
            "trial_id": result.metrics.get("trial_id") if result.metrics else None,
            "config": result.config,
            "epochs": int(len(scores)),
            "last": float(scores.iloc[-1]) if len(scores) else None,
            "best": float(scores.max()) if len(scores) else None,
            "error": str(result.error) if result.error else None,
            "path": result.path,
        })
    if all(t["error"] for t in trials):
        raise RuntimeError(f"every tune trial failed; first error: {trials[0]['error']}")
    best = grid.get_best_result(metric=metric, mode="max", scope="all")
    best_score = float(best.metrics_dataframe[metric].max())
    best_params = {SPACE_TO_ARGS[k]: v for k, v in best.config.items()}
    summary: dict[str, Any] = {
        "experiment": str(storage / name),
        "scheduler": scheduler,
        "searcher": "optuna" if optuna else "random",
        "metric": metric,
        "samples": samples,
        "max_epochs": base.epochs,
        "concurrent_trials": concurrent,
        "seconds": round(time.perf_counter() - started, 2),
        "best": {"config": best.config, "params": best_params, metric: best_score,
                 "checkpoint": str(Path(best.path) / "rl_agent.pt")},
        "total_epochs": sum(t["epochs"] for t in trials),
        "trials": trials,
    }
    if preset:
        path = save_preset(preset, best_params, {
            "experiment": summary["experiment"], metric: best_score, "traffic": traffic.name,
            "scheduler": scheduler, "searcher": summary["searcher"],
            "epochs": base.epochs, "steps": base.steps, "num_envs": base.num_envs})
        summary["preset"] = {"name": preset, "path": str(path)}
    (storage / name / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
