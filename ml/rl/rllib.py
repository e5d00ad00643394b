"""``rllib_train``: PPO from Ray RLlib (new API stack) on the same simulator, and the conversion
of its checkpoint into the ``.pt`` that ``eval_rl``, ``canary_rl`` and the registry read.

The network is the one train_rl uses - separate actor and critic MLPs, two tanh layers of
``hidden_dim`` - and observations are normalized by RLlib's ``MeanStdFilter`` (clipped at ±10, as
ours), so a trained RLlib module maps weight for weight onto :class:`~ml.rl.ppo.Agent` plus the
filter's running mean/std. Hyperparameters come from the same :class:`~ml.rl.ppo.Args`; RLlib's
KL penalty is off, as in our PPO (CleanRL's), and the learning rate is constant.

Env runners: ``--cpus C`` gives ``C - 1`` env runner actors (one CPU stays with the driver, which
hosts the learner); ``C = 1`` or ``RAY_LOCAL_MODE=true`` samples in the driver. ``num_envs`` envs
in all are split across the runners (each vectorizes its share).

Checkpoints: ``<save_dir>/checkpoint_<iteration>`` every ``checkpoint_every`` iterations and at
the end (the last ``KEEP_CHECKPOINTS`` kept); a run resumes from the newest unless ``fresh``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from ml.rl.ppo import Agent, Args, CheckpointError, RunningMeanStd, policy_payload, write_checkpoint
from ml.sim.config import SimConfig

log = logging.getLogger(__name__)

ENV_NAME = "PriorityMaxSim-v0"
KEEP_CHECKPOINTS = 3
CHECKPOINT_PREFIX = "checkpoint_"
_MODULE_STATE = Path("learner_group/learner/rl_module/default_policy/module_state.pkl")
_FILTER_STATE = Path("env_runner/env_to_module_connector/MeanStdFilter/state.pkl")
#: RLlib module parameter -> (our Agent's parameter); layers 0, 2 of each encoder, then the head.
_LAYER_MAP = {
    "encoder.actor_encoder.net.mlp.0": "actor.0",
    "encoder.actor_encoder.net.mlp.2": "actor.2",
    "pi.net.mlp.0": "actor.4",
    "encoder.critic_encoder.net.mlp.0": "critic.0",
    "encoder.critic_encoder.net.mlp.2": "critic.2",
    "vf.net.mlp.0": "critic.4",
}


@functools.lru_cache(maxsize=4)
def _training_traffic(name: str, sim_config_json: str):
    from ml.rl.train import traffic_named

    return traffic_named(name, SimConfig.from_dict(json.loads(sim_config_json))).train


def make_env(env_config: dict[str, Any]):
    """RLlib's env creator: the training part of the run's traffic (loaded once per process)."""
    from ml.sim.env import PriorityMaxSimEnv

    sim_config = json.dumps(env_config["sim_config"], sort_keys=True)
    return PriorityMaxSimEnv(SimConfig.from_dict(env_config["sim_config"]),
                             _training_traffic(env_config["traffic"], sim_config))


def _observation_filter(*_args, **_kwargs):
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    return MeanStdFilter(clip_by_value=10.0)


def env_runners_for(cpus: int) -> int:
    from ml.rl.ray_runtime import local_mode

    return 0 if local_mode() else max(0, cpus - 1)


def build_config(args: Args, *, cpus: int, gpus: int, sim_config: SimConfig, traffic: str):
    """The PPOConfig that mirrors ``args``."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    runners = env_runners_for(cpus)
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config={"sim_config": sim_config.to_dict(), "traffic": traffic})
        .env_runners(num_env_runners=runners,
                     num_envs_per_env_runner=math.ceil(args.num_envs / max(1, runners)),
                     rollout_fragment_length="auto",
                     env_to_module_connector=_observation_filter)
        .learners(num_learners=0, num_gpus_per_learner=1 if gpus else 0)
        .training(lr=args.lr, gamma=args.gamma, lambda_=args.gae_lambda, clip_param=args.clip_coef,
                  entropy_coeff=args.ent_coef, vf_loss_coeff=args.vf_coef,
                  grad_clip=args.max_grad_norm, use_kl_loss=False,
                  train_batch_size_per_learner=args.steps,
                  minibatch_size=min(args.minibatch_size, args.steps),
                  num_epochs=args.update_epochs)
        .rl_module(model_config=DefaultModelConfig(
            fcnet_hiddens=[args.hidden_dim, args.hidden_dim], fcnet_activation="tanh",
            vf_share_layers=False))
        .debugging(seed=args.seed)
    )


def iteration_metrics(result: dict[str, Any]) -> dict[str, float]:
    """An RLlib result in train_rl's (CleanRL's) metric names."""
    runners, learner = result.get("env_runners", {}), result.get("learners", {}).get("default_policy", {})
    metrics = {
        "epoch": int(result["training_iteration"]),
        "global_step": int(result.get("num_env_steps_sampled_lifetime", 0)),
        "charts/SPS": float(runners.get("num_env_steps_sampled", 0)) / max(result["time_this_iter_s"], 1e-9),
    }
    names = {"charts/episodic_return": runners.get("episode_return_mean"),
             "charts/learning_rate": learner.get("default_optimizer_learning_rate"),
             "losses/value_loss": learner.get("vf_loss"),
             "losses/policy_loss": learner.get("policy_loss"),
             "losses/entropy": learner.get("entropy"),
             "losses/approx_kl": learner.get("mean_kl_loss"),
             "losses/explained_variance": learner.get("vf_explained_var")}
    metrics |= {k: float(v) for k, v in names.items() if v is not None and not math.isnan(float(v))}
    return metrics


# ---------------------------------------------------------------------------- checkpoints
def rllib_checkpoints(save_dir: Path) -> list[Path]:
    """This run directory's RLlib checkpoints, oldest first."""
    return sorted(p for p in save_dir.glob(f"{CHECKPOINT_PREFIX}*")
                  if (p / "rllib_checkpoint.json").is_file())


def save_rllib_checkpoint(algo, save_dir: Path) -> Path:
    """Save to ``checkpoint_<iteration>`` (written aside, then renamed) and prune old ones."""
    final = save_dir / f"{CHECKPOINT_PREFIX}{algo.iteration:06d}"
    partial = save_dir / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    algo.save_to_path(str(partial))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in rllib_checkpoints(save_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)
    return final


def _running_stat(state: dict[str, Any]):
    from ray.rllib.utils.filter import RunningStat

    return RunningStat.from_state(state[None]["running_stats"][0])


def export_policy(checkpoint: Path, destination: Path, args: Args, sim_config: SimConfig,
                  traffic: str) -> Path:
    """Convert an RLlib checkpoint into a policy ``.pt`` (``trainer: rllib``) that
    :meth:`~ml.rl.policy.PPOPolicy.from_checkpoint` loads like any train_rl checkpoint."""
    import torch

    try:
        module = pickle.loads((checkpoint / _MODULE_STATE).read_bytes())
        filter_state = pickle.loads((checkpoint / _FILTER_STATE).read_bytes())
    except FileNotFoundError as missing:
        raise CheckpointError(f"{checkpoint}: not an RLlib PPO checkpoint of rllib_train "
                              f"({missing.filename} missing)") from None
    expected = {f"{ours}.{p}" for ours in _LAYER_MAP for p in ("weight", "bias")}
    found = {k for k in module if k.endswith((".weight", ".bias"))}
    if found != expected:
        raise CheckpointError(f"{checkpoint}: unexpected RLlib module layout {sorted(found)}")
    state = {f"{ours}.{p}": torch.as_tensor(np.asarray(module[f"{theirs}.{p}"]), dtype=torch.float32)
             for theirs, ours in _LAYER_MAP.items() for p in ("weight", "bias")}
    obs_dim, num_actions = state["actor.0.weight"].shape[1], state["actor.4.weight"].shape[0]
    agent = Agent(obs_dim, num_actions, state["actor.0.weight"].shape[0])
    agent.load_state_dict(state)
    stat = _running_stat(filter_state)
    # RLlib divides by (std + 1e-8), ours by sqrt(var + 1e-8): choose var so both agree.
    var = np.maximum((np.asarray(stat.std, dtype=np.float64) + 1e-8) ** 2 - 1e-8, 0.0)
    obs_rms = RunningMeanStd(np.asarray(stat.mean, dtype=np.float64), var, float(stat.num_pushes))
    payload = policy_payload(args, sim_config, traffic, agent, obs_rms, trainer="rllib")
    payload["rllib_checkpoint"] = str(checkpoint)
    write_checkpoint(destination, payload)
    return destination


# ------------------------------------------------------------------------------- training
def rllib_train(
    args: Args,
    save_dir: Path,
    *,
    cpus: int = 2,
    gpus: int = 0,
    export: Path | None = None,
    trace: str | Path | None = None,
    holdout_fraction: float = 0.2,
    fresh: bool = False,
    mlflow: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train RLlib PPO to ``args.epochs`` iterations (resuming from ``save_dir``), export the
    policy, evaluate it against HPA on held-out traffic, and return a train_rl-shaped summary."""
    from ray.tune.registry import register_env

    from ml.rl.ray_runtime import ray_session
    from ml.rl.tracking import forget_metadata
    from ml.rl.train import final_scores, history_summary, traffic_for

    sim_config = SimConfig()
    traffic = traffic_for(trace, sim_config, holdout_fraction)
    save_dir = Path(save_dir)
    export = Path(export) if export else save_dir / "rllib_agent.pt"
    if fresh:
        for old in rllib_checkpoints(save_dir):
            shutil.rmtree(old)
    save_dir.mkdir(parents=True, exist_ok=True)
    tracker = None
    if mlflow:
        from ml.rl.tracking import MlflowTracker

        tracker = MlflowTracker(args, export, traffic.name, run_name="rllib-ppo",
                                extra_params={"cpus": cpus, "gpus": gpus, "trainer": "rllib"})
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    try:
        with ray_session(num_cpus=cpus, num_gpus=gpus) as cluster:
            register_env(ENV_NAME, make_env)
            config = build_config(args, cpus=cpus, gpus=gpus, sim_config=sim_config, traffic=traffic.name)
            algo = config.build_algo()
            try:
                existing = rllib_checkpoints(save_dir)
                if existing:
                    algo.restore_from_path(str(existing[-1]))
                    log.info("resuming %s at iteration %d", existing[-1], algo.iteration)
                last = existing[-1] if existing else None
                while algo.iteration < args.epochs:
                    metrics = iteration_metrics(algo.train())
                    history.append(metrics)
                    if tracker:
                        tracker.log_epoch(metrics)
                    if progress:
                        click.echo(_progress_line(metrics, args.epochs), err=True)
                    if algo.iteration % args.checkpoint_every == 0 or algo.iteration == args.epochs:
                        last = save_rllib_checkpoint(algo, save_dir)
                if last is None:
                    last = save_rllib_checkpoint(algo, save_dir)
                iterations = algo.iteration
                global_step = int(history[-1]["global_step"]) if history else None
            finally:
                algo.stop()
        forget_metadata(export)
        export_policy(last, export, args, sim_config, traffic.name)
        result: dict[str, Any] = {
            "checkpoint": str(export),
            "rllib_checkpoint": str(last),
            "epochs": iterations,
            "global_step": global_step,
            "traffic": traffic.name,
            "num_envs": args.num_envs,
            "env_runners": env_runners_for(cpus),
            "cpus": cpus,
            "gpus": gpus,
            "ray": cluster["address"],
            "device": "cuda" if gpus else "cpu",
            "seconds": round(time.perf_counter() - started, 2),
            **final_scores(export, args.eval_episodes),
            **history_summary(history),
        }
        if tracker:
            result |= tracker.finish(result)
            tracker = None
    finally:
        if tracker:
            tracker.abort()
    return result


def _progress_line(metrics: dict[str, float], epochs: int) -> str:
    episodic = metrics.get("charts/episodic_return")
    return (f"rllib_train iter {metrics['epoch']}/{epochs}  steps {metrics['global_step']:,}  "
            f"return {'n/a' if episodic is None else f'{episodic:,.1f}'}  "
            f"sps {metrics['charts/SPS']:,.0f}  "
            f"vf_loss {metrics.get('losses/value_loss', float('nan')):.3g}")
