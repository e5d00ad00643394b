"""The RL trainer commands with the seed's names and flags: train_rl, eval_rl, and canary_rl."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from prioritymax.settings import get_settings

FILE = click.Path(dir_okay=False, path_type=Path)


def _default_checkpoint() -> Path:
    return get_settings().models_dir / "rl_agent.pt"


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
def train_rl_command(epochs, steps, lr, device, checkpoint, num_envs, seed, trace, eval_every,
                     eval_episodes, holdout_fraction, torch_threads, fresh, stop_after, wandb,
                     mlflow):
    """Train single-machine PPO RL agent."""
    from ml.rl.ppo import Args
    from ml.rl.train import train_rl

    given = {"epochs": epochs, "steps": steps, "lr": lr, "eval_every": eval_every,
             "eval_episodes": eval_episodes, "torch_threads": torch_threads}
    args = Args(device=device, seed=seed, num_envs=num_envs or get_settings().rl_envs,
                **{k: v for k, v in given.items() if v is not None})
    _emit(train_rl(args, checkpoint or _default_checkpoint(), trace=trace,
                   holdout_fraction=holdout_fraction, fresh=fresh, stop_after=stop_after,
                   mlflow=mlflow, wandb=wandb))


@click.command("eval_rl")
@click.option("--checkpoint", type=FILE, default=None,
              help="[default: <home>/models/rl_agent.pt]")
@click.option("--episodes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--trace", type=FILE, default=None,
              help="evaluate on this trace's held-out part [default: the training traffic's]")
def eval_rl_command(checkpoint, episodes, trace):
    """Evaluate PPO checkpoint (and the baselines on the same episodes)."""
    from ml.rl.train import eval_rl

    _emit(eval_rl(checkpoint or _default_checkpoint(), episodes, trace=trace))


@click.command("canary_rl")
@click.option("--checkpoint", type=FILE, default=None,
              help="candidate [default: <home>/models/rl_agent.pt]")
@click.option("--episodes", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--trace", type=FILE, default=None)
@click.option("--champion-checkpoint", type=FILE, default=None,
              help="compare with this checkpoint instead of the registry's champion")
@click.option("--no-registry", is_flag=True, help="do not look up a champion in MLflow")
def canary_rl_command(checkpoint, episodes, trace, champion_checkpoint, no_registry):
    """Run the RL gate: beat the HPA rule and the champion (exit status 1 when it fails)."""
    from ml.rl.train import canary_rl

    result = canary_rl(checkpoint or _default_checkpoint(), episodes, trace=trace,
                       champion_checkpoint=champion_checkpoint, use_registry=not no_registry)
    _emit(result)
    if not result["passed"]:
        sys.exit(1)


COMMANDS = (train_rl_command, eval_rl_command, canary_rl_command)
