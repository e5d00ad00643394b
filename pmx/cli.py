"""``pmx``: the workbench's command line.

Every trainer command of the seed (``python ml/trainer_full.py <command>``) is also a ``pmx``
command; ``pmx sim ...`` holds the simulator's tools and ``pmx demo`` the main job.
"""

from __future__ import annotations

import json

import click

from api.cli import serve_api, serve_autoscaler, tokens
from ml.cli import TrainerGroup, demo, run, sim, trainer
from ml.models_cli import models
from pmx.replay import replay_command
from pmx.up import up_command
from prioritymax.settings import get_settings


@click.group(cls=TrainerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prioritymax-workbench")
def cli() -> None:
    """PriorityMax Workbench: simulator, trainers, registry, control plane, orchestration."""


@cli.command("settings")
def show_settings() -> None:
    """Show the resolved settings (secrets masked) and lay out the data home."""
    click.echo(json.dumps(get_settings().public_dict(), indent=2))


cli.add_command(demo)
cli.add_command(sim)
cli.add_command(models)
cli.add_command(serve_api)
cli.add_command(serve_autoscaler)
cli.add_command(tokens)
cli.add_command(up_command)
cli.add_command(replay_command)
for _name, _command in trainer.commands.items():
    cli.add_command(_command, _name)


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
