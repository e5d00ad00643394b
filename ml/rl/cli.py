"""The RL trainer commands with the seed's names and flags: train_rl, eval_rl, and canary_rl."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from ml.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRef,
    RegistryError,
    parse_model_ref,
    registered_checkpoint,
)
from prioritymax.settings import get_settings

FILE = click.Path(dir_okay=False, path_type=Path)
MODEL_NAME = "rl_agent"

log = logging.getLogger(__name__)


def _default_checkpoint() -> Path:
    return get_settings().models_dir / "rl_agent.pt"


def _model_ref(ctx, param, value: str | None) -> ModelRef | None:
    """``--model``: a registered rl_agent version, as MLflow names one."""
    if value is None:
        return None
    try:
        ref = parse_model_ref(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    if ref.name != MODEL_NAME:
        raise click.BadParameter(f"{value!r} is a {ref.name} version; this command runs {MODEL_NAME}")
    return ref


def model_option(default_alias: str):
    """``--model REF``, whose default (when neither flag is given and the default file is missing)
    is ``rl_agent@default_alias``: the champion to evaluate, the challenger to gate."""
    return click.option(
        "--model", callback=_model_ref, default=None, metavar="REF",
        help=f"a registered version instead of a file: {MODEL_NAME}@champion, @challenger, any alias, "
             f"{MODEL_NAME}/3 or @3, {MODEL_NAME}/latest; models:/ URIs too [default: --checkpoint's "
             f"default when that file exists, else {MODEL_NAME}@{default_alias}]")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The checkpoint a command runs on, and the registered version it came from (if any)."""

    path: Path
    ref: ModelRef | None = None
    version: str | None = None

    def describe(self) -> dict[str, str]:
        """What the command's JSON says about where its policy came from."""
        described = {"checkpoint": str(self.path)}
        if self.ref is not None:
            described |= {"model": str(self.ref), "model_version": str(self.version)}
        return described


@contextlib.contextmanager
def resolve_checkpoint(checkpoint: Path | None, model: ModelRef | None,
                       default_alias: str) -> Iterator[Checkpoint]:
    """``--checkpoint``, else ``--model``'s registered version, else the default file when it
    exists, else the registry's ``default_alias`` version: after ``make up`` the only policy is
    the pipeline's, registered in MLflow (its file lives in a candidate folder). A checkpoint
    downloaded from a remote artifact store lives as long as the block."""
    if checkpoint is not None and model is not None:
        raise click.UsageError("give --checkpoint or --model, not both")
    default = _default_checkpoint()
    if checkpoint is not None or (model is None and default.is_file()):
        yield Checkpoint(checkpoint or default)
        return
    ref = model or ModelRef(MODEL_NAME, alias=default_alias)
    with tempfile.TemporaryDirectory(prefix="pmx-rl-model-") as folder:
        try:
            path, version = registered_checkpoint(ref, Path(folder))
        except RegistryError as error:
            if model is not None:
                raise
            raise RegistryError(f"no checkpoint at {default}, and {error}; or pass --checkpoint PATH "
                                "or --model REF") from None
        log.info("%s is version %s: %s", ref, version, path)
        yield Checkpoint(path, ref, version)


def _emit(result) -> None:
    from ml.cli import emit

    emit(result)


@click.command("train_rl")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="PPO epochs (rollout + update) in all; a resumed run continues to this")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="env steps collected per epoch, all envs together")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu or cuda")
@click.option("--checkpoint", type=FILE, default=None,
              help="written every few epochs and resumed from [default: <home>/models/rl_agent.pt]")
@click.option("--num-envs", type=click.IntRange(min=1), default=None,
              help="parallel simulated envs [default: PRIORITYMAX_RL_ENVS]")
@click.option("--seed", default=0, show_default=True)
@click.option("--trace", type=FILE, default=None,
              help="traffic CSV: train on its earlier part, evaluate on the latest "
                   "[default: the synthetic profile]")
@click.option("--eval-every", type=click.IntRange(min=0), default=None,
              help="evaluate against HPA every N epochs (0: never)")
@click.option("--eval-episodes", type=click.IntRange(min=1), default=None)
@click.option("--holdout-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--torch-threads", type=click.IntRange(min=1), default=None)
@click.option("--fresh", is_flag=True, help="start over, overwriting an existing checkpoint")
@click.option("--stop-after", type=click.IntRange(min=1), default=None,
              help="stop after this many epochs of this call (resume later)")
@click.option("--wandb", is_flag=True, help="log to Weights & Biases (offline without WANDB_API_KEY)")
@click.option("--mlflow", is_flag=True, help="log the run; register the model as rl_agent challenger")
@click.option("--preset", default=None,
              help="start from a saved preset (`tune` saves one); flags given here still win")
@click.option("--control", type=click.Choice(["residual", "direct"]), default=None,
              help="residual: adjust a tuned rule from capacity-relative inputs [default]; "
                   "direct: pick raw scale deltas from the simulator's observation")
@click.option("--randomize/--no-randomize", default=None,
              help="train on the traffic at several load levels, with flash crowds [on]")
def train_rl_command(epochs, steps, lr, device, checkpoint, num_envs, seed, trace, eval_every,
                     eval_episodes, holdout_fraction, torch_threads, fresh, stop_after, wandb,
                     mlflow, preset, control, randomize):
    """Train single-machine PPO RL agent."""
    from ml.rl.presets import resolve_args
    from ml.rl.train import train_rl

    args = resolve_args(preset, epochs=epochs, steps=steps, lr=lr, eval_every=eval_every,
                 eval_episodes=eval_episodes, torch_threads=torch_threads, num_envs=num_envs,
                 device=device, seed=seed, control=control, randomize=randomize)
    _emit(train_rl(args, checkpoint or _default_checkpoint(), trace=trace,
                   holdout_fraction=holdout_fraction, fresh=fresh, stop_after=stop_after,
                   mlflow=mlflow, wandb=wandb))


def _tuned_rules(ctx, param, value: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--rule`` values, checked against the tuned rules (imported only when given: ml.sim.tuning
    costs a second to import)."""
    if not value:
        return None
    from ml.sim.tuning import TUNED_BASELINES

    if unknown := sorted(set(value) - set(TUNED_BASELINES)):
        raise click.BadParameter(f"{', '.join(unknown)}: not a tuned rule; choose among "
                                 f"{', '.join(TUNED_BASELINES)}")
    return value


@click.command("eval_rl")
@click.option("--checkpoint", type=FILE, default=None,
              help="[default: <home>/models/rl_agent.pt if it exists, else rl_agent@champion]")
@model_option(CHAMPION)
@click.option("--episodes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--trace", type=FILE, default=None,
              help="evaluate on this trace's held-out part [default: the training traffic's]")
@click.option("--rule", "rules", multiple=True, callback=_tuned_rules, metavar="RULE",
              help="compare with these tuned rules only (repeatable; HPA always) [default: all]")
def eval_rl_command(checkpoint, model, episodes, trace, rules):
    """Evaluate PPO checkpoint (and the baselines on the same episodes)."""
    from ml.rl.train import eval_rl

    with resolve_checkpoint(checkpoint, model, CHAMPION) as chosen:
        _emit(chosen.describe() | eval_rl(chosen.path, episodes, trace=trace, rules=rules))


def _refuse_gating_the_champion(chosen: Checkpoint) -> None:
    """A registered champion gated against itself always fails, and the failed gate would be
    recorded on the version that serves: refuse before spending the evaluation."""
    from ml.registry import champion_version

    champion = champion_version(MODEL_NAME) if chosen.version is not None else None
    if champion is not None and str(champion.version) == chosen.version:
        raise click.ClickException(
            f"{chosen.ref} is version {chosen.version}, the champion: canary_rl gates a candidate "
            f"against it; pass --model {MODEL_NAME}@{CHALLENGER} or a version number, or add "
            "--no-registry to judge it against the tuned rules only")


@click.command("canary_rl")
@click.option("--checkpoint", type=FILE, default=None,
              help="candidate [default: <home>/models/rl_agent.pt if it exists, else rl_agent@challenger]")
@model_option(CHALLENGER)
@click.option("--episodes", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--trace", type=FILE, default=None)
@click.option("--champion-checkpoint", type=FILE, default=None,
              help="compare with this checkpoint instead of the registry's champion")
@click.option("--no-registry", is_flag=True, help="do not look up a champion in MLflow")
@click.option("--rule", "rules", multiple=True, callback=_tuned_rules, metavar="RULE",
              help="compare with these tuned rules only (repeatable; HPA always) [default: all]")
def canary_rl_command(checkpoint, model, episodes, trace, champion_checkpoint, no_registry, rules):
    """Run the RL gate: match the best tuned rule and beat the champion (exit status 1 when it fails).

    A registered candidate (--model, or the challenger by default) gets the result on its version."""
    from ml.rl.train import canary_rl

    with resolve_checkpoint(checkpoint, model, CHALLENGER) as chosen:
        if not no_registry and champion_checkpoint is None:
            _refuse_gating_the_champion(chosen)
        result = canary_rl(chosen.path, episodes, trace=trace, champion_checkpoint=champion_checkpoint,
                           use_registry=not no_registry, rules=rules, version=chosen.version)
    _emit(result | chosen.describe())
    if not result["passed"]:
        sys.exit(1)


@click.command("rllib_train")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True,
              help="RLlib training iterations in all; a resumed run continues to this")
@click.option("--cpus", type=click.IntRange(min=1), default=2, show_default=True,
              help="CPUs for a local Ray; env runners = cpus - 1 (the driver keeps one)")
@click.option("--gpus", type=click.IntRange(min=0), default=0, show_default=True,
              help="GPUs for a local Ray; >0 puts the learner on a GPU")
@click.option("--save_dir", "--save-dir", "save_dir", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="RLlib checkpoints (resumed from) [default: <home>/models/rllib_checkpoints]")
@click.option("--export", type=FILE, default=None,
              help="the converted policy .pt [default: <save_dir>/rllib_agent.pt]")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="env steps per iteration (the train batch)")
@click.option("--num-envs", type=click.IntRange(min=1), default=None,
              help="envs in all, split across env runners [default: PRIORITYMAX_RL_ENVS]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--hidden-dim", type=click.IntRange(min=1), default=None)
@click.option("--seed", default=0, show_default=True)
@click.option("--trace", type=FILE, default=None,
              help="traffic CSV: train on its earlier part, evaluate on the latest")
@click.option("--holdout-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
              help="iterations between RLlib checkpoints")
@click.option("--eval-episodes", type=click.IntRange(min=1), default=None)
@click.option("--fresh", is_flag=True, help="delete save_dir's checkpoints and start over")
@click.option("--mlflow", is_flag=True, help="log the run; register the policy as rl_agent challenger")
def rllib_train_command(epochs, cpus, gpus, save_dir, export, steps, num_envs, lr, hidden_dim, seed,
                        trace, holdout_fraction, checkpoint_every, eval_episodes, fresh, mlflow):
    """Distributed PPO with Ray RLlib; exports a .pt that eval_rl reads."""
    from ml.rl.presets import resolve_args
    from ml.rl.rllib import rllib_train

    args = resolve_args(epochs=epochs, seed=seed, num_envs=num_envs, steps=steps, lr=lr,
                 hidden_dim=hidden_dim, checkpoint_every=checkpoint_every,
                 eval_episodes=eval_episodes)
    _emit(rllib_train(args, save_dir or get_settings().models_dir / "rllib_checkpoints",
                      cpus=cpus, gpus=gpus, export=export, trace=trace,
                      holdout_fraction=holdout_fraction, fresh=fresh, mlflow=mlflow))


@click.command("tune")
@click.option("--samples", type=click.IntRange(min=1), default=10, show_default=True,
              help="trials (configurations) to run")
@click.option("--scheduler", type=click.Choice(["asha", "fifo"]), default="asha", show_default=True,
              help="asha stops poor trials early; fifo runs every trial to the end")
@click.option("--optuna", is_flag=True, help="Optuna's TPE proposes configurations (else random)")
@click.option("--metric", type=click.Choice(["episode_reward_mean"]), default="episode_reward_mean",
              show_default=True, help="maximized: mean reward on fixed held-out episodes")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True,
              help="PPO epochs per trial at most (ASHA's max_t)")
@click.option("--grace-period", type=click.IntRange(min=1), default=5, show_default=True,
              help="epochs before ASHA may stop a trial")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="env steps per epoch")
@click.option("--num-envs", type=click.IntRange(min=1), default=None,
              help="envs per trial [default: PRIORITYMAX_RL_ENVS]")
@click.option("--eval-episodes", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--cpus", type=click.IntRange(min=1), default=None,
              help="CPUs for a local Ray (one trial per CPU) [default: all]")
@click.option("--seed", default=0, show_default=True, help="searcher and PPO seed")
@click.option("--trace", type=FILE, default=None)
@click.option("--name", default=None, help="experiment folder under <home>/models/tune")
@click.option("--preset", default="tuned", show_default=True,
              help="save the best configuration as this train_rl preset")
def tune_command(samples, scheduler, optuna, metric, epochs, grace_period, steps, num_envs,
                 eval_episodes, cpus, seed, trace, name, preset):
    """Ray Tune over PPO's lr, hidden_dim, clip_range, entropy_coef (ASHA, Optuna)."""
    from ml.rl.presets import resolve_args
    from ml.rl.tune import run_tune

    args = resolve_args(epochs=epochs, eval_episodes=eval_episodes, num_envs=num_envs, steps=steps)
    _emit(run_tune(args, samples=samples, scheduler=scheduler, optuna=optuna, metric=metric,
                   name=name, preset=preset, trace=trace, cpus=cpus, grace_period=grace_period,
                   seed=seed))


@click.command("torch_distributed")
@click.option("--world_size", "--world-size", "world_size", type=click.IntRange(min=1), default=2,
              show_default=True, help="processes (ranks); with --device cuda, one GPU each")
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="env steps per epoch, all ranks together")
@click.option("--num-envs", type=click.IntRange(min=1), default=None,
              help="envs in all, split over the ranks [default: PRIORITYMAX_RL_ENVS]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--device", default="cpu", show_default=True, help="cpu (gloo) or cuda (nccl)")
@click.option("--checkpoint", type=FILE, default=None,
              help="written by rank 0 [default: <home>/models/rl_agent_ddp.pt]")
@click.option("--seed", default=0, show_default=True)
@click.option("--trace", type=FILE, default=None)
@click.option("--eval-every", type=click.IntRange(min=0), default=None)
@click.option("--eval-episodes", type=click.IntRange(min=1), default=None)
@click.option("--preset", default=None, help="start from a saved preset")
def torch_distributed_command(world_size, epochs, steps, num_envs, lr, device, checkpoint, seed,
                              trace, eval_every, eval_episodes, preset):
    """Data-parallel PPO with torch.distributed (DDP) on this machine."""
    from ml.rl.distributed import torch_distributed
    from ml.rl.presets import resolve_args

    args = resolve_args(preset, epochs=epochs, steps=steps, lr=lr, eval_every=eval_every,
                 eval_episodes=eval_episodes, num_envs=num_envs, device=device, seed=seed)
    _emit(torch_distributed(args, world_size,
                            checkpoint or get_settings().models_dir / "rl_agent_ddp.pt", trace=trace))


COMMANDS = (train_rl_command, eval_rl_command, canary_rl_command, rllib_train_command, tune_command,
            torch_distributed_command)
