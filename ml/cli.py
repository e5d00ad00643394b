"""Command-line entry points of the ML core.

- ``trainer``: the seed's unified trainer (``python ml/trainer_full.py <command>``); its commands
  land with their issues, under the seed's names and flags, and are also ``pmx <command>``.
- ``sim``: the simulator's tools (``pmx sim dataset|evaluate|describe``).
- ``demo``: the main job on embedded defaults (``pmx demo``, run by ``make up``).

Results go to stdout as JSON (``pmx demo``: tables, JSON with ``--json``); logs go to stderr.
Bad input exits non-zero with a message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from prioritymax.settings import get_settings

TRAFFIC_HELP = "traffic: 'synthetic' or a CSV of timestamp,count rows (default: the NASA trace)"


def emit(result: Any) -> None:
    """Print a command's result as JSON on stdout."""
    click.echo(json.dumps(result, indent=2, default=str))


class TrainerGroup(click.Group):
    """Commands listed in the order they were added (the seed's order), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=TrainerGroup, context_settings={"help_option_names": ["-h", "--help"]})
def trainer() -> None:
    """PriorityMax Unified Trainer: PPO, predictors, canary gating, RLlib, Tune, Optuna."""


def _load_series(source: str, *, timestamp_col: str, count_col: str):
    from ml.sim.config import SimConfig
    from ml.sim.traffic import load_trace, synthetic_series

    config = SimConfig()
    if source == "synthetic":
        series = synthetic_series(step_seconds=config.step_seconds)
    else:
        series = load_trace(
            source or get_settings().trace_path,
            timestamp_col=timestamp_col,
            count_col=count_col,
            step_seconds=config.step_seconds,
        )
    return series.scaled_to(config.mean_arrival_rate), config


def traffic_options(command):
    command = click.option("--count-col", default="requests", show_default=True,
                           help="column of request counts in the CSV")(command)
    command = click.option("--timestamp-col", default="timestamp", show_default=True,
                           help="column of timestamps in the CSV")(command)
    return click.option("--traffic", "source", default="", help=TRAFFIC_HELP)(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def sim() -> None:
    """The PriorityMax queue simulator: datasets, baseline evaluations, traffic."""


@sim.command("describe")
@traffic_options
def sim_describe(source: str, timestamp_col: str, count_col: str) -> None:
    """Load a traffic source and describe it (rows, segments, gaps, rates)."""
    series, _ = _load_series(source, timestamp_col=timestamp_col, count_col=count_col)
    emit(series.describe())


@sim.command("dataset")
@traffic_options
@click.option("--policy", default="hpa", show_default=True, help="baseline that drives the pool")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV to write (default: <data home>/data/<source>/queue_metrics.csv)")
@click.option("--seed", default=0, show_default=True)
def sim_dataset(source: str, timestamp_col: str, count_col: str, policy: str, out: Path | None,
                seed: int) -> None:
    """Write queue_metrics.csv: per-step simulator metrics and the target queue_next_sec."""
    from ml.sim.dataset import build_queue_metrics, dataset_path, write_queue_metrics
    from ml.sim.policies import make_baseline

    series, config = _load_series(source, timestamp_col=timestamp_col, count_col=count_col)
    frame = build_queue_metrics(series, policy=make_baseline(policy, config), config=config,
                                seed=seed)
    path = write_queue_metrics(
        frame, out or dataset_path(get_settings().data_dir, series.name)
    )
    emit({"path": str(path), "rows": len(frame), "columns": list(frame.columns)})


@sim.command("evaluate")
@traffic_options
@click.option("--policy", "policies", multiple=True, default=["hpa"], show_default=True,
              help="baseline to evaluate (repeat for several)")
@click.option("--episodes", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--split", type=click.Choice(["all", "train", "holdout"]), default="holdout",
              show_default=True, help="which time slice of the traffic to run on")
@click.option("--holdout-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--seed", default=0, show_default=True, help="first episode seed")
def sim_evaluate(source: str, timestamp_col: str, count_col: str, policies: tuple[str, ...],
                 episodes: int, split: str, holdout_fraction: float, seed: int) -> None:
    """Run baseline policies over the same seeded episodes; mean ± 95% CI per metric."""
    from ml.sim.evaluate import evaluate_policy
    from ml.sim.policies import make_baseline

    series, config = _load_series(source, timestamp_col=timestamp_col, count_col=count_col)
    if split != "all":
        series = dict(zip(("train", "holdout"), series.split(holdout_fraction), strict=True))[split]
    seeds = list(range(seed, seed + episodes))
    emit({
        name: evaluate_policy(make_baseline(name, config), series, seeds=seeds,
                              config=config).summary()
        for name in policies
    })


@click.command("demo")
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="trace CSV (default: PRIORITYMAX_TRACE, else the NASA HTTP trace)")
@click.option("--synthetic-days", default=28, show_default=True, type=click.IntRange(min=1))
@click.option("--episodes", default=8, show_default=True, type=click.IntRange(min=1),
              help="holdout episodes per policy")
@click.option("--holdout-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--episode-steps", default=None, type=click.IntRange(min=1),
              help="steps per evaluation episode [default: the simulator's, 720]")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="print the full summary as JSON (every metric with its 95% CI) instead of tables")
def demo(trace: Path | None, synthetic_days: int, episodes: int, holdout_fraction: float,
         episode_steps: int, seed: int, as_json: bool) -> None:
    """The main job: datasets from the trace and the synthetic source, every baseline on the
    holdout; a table per source (progress on stderr), or the JSON summary with --json."""
    from ml.console import terminal_width
    from ml.demo import run_demo, summary_lines
    from ml.sim.config import SimConfig

    settings = get_settings()
    summary = run_demo(
        trace=trace or settings.trace_path,
        data_dir=settings.data_dir,
        config=SimConfig(**({"episode_steps": episode_steps} if episode_steps else {})),
        synthetic_days=synthetic_days,
        episodes=episodes,
        holdout_fraction=holdout_fraction,
        seed=seed,
        **({} if as_json else {"progress": lambda line: click.echo(line, err=True)}),
    )
    if as_json:
        emit(summary)
        return
    for line in summary_lines(summary, home=settings.home, width=terminal_width()):
        click.echo(line)


def _add_trainer_commands() -> None:
    """In the seed's order: RL first, then the predictor."""
    from ml.predictor.cli import COMMANDS as PREDICTOR_COMMANDS
    from ml.rl.cli import COMMANDS as RL_COMMANDS

    for command in (*RL_COMMANDS, *PREDICTOR_COMMANDS):
        trainer.add_command(command)


_add_trainer_commands()


def run(group: click.Group) -> None:
    """Run a click group with logging configured and domain errors shown as one-line messages."""
    from prioritymax.logs import configure_logging

    configure_logging()
    try:
        group.main(standalone_mode=False)
    except click.exceptions.Exit as stop:
        sys.exit(stop.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # DataError, RegistryError, ...
        click.echo(f"Error: {error}", err=True)
        sys.exit(2 if isinstance(error, FileNotFoundError) else 1)
