"""``pmx replay``: feed an autoscaler worker readings from the simulator replaying a trace, apply its
decisions to the simulated pool, and write the timeline the dashboard's Autoscaler page plots
(:mod:`ml.sim.replay`). ``pmx up`` runs it beside the worker."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from prioritymax.settings import BUNDLED_TRACE, get_settings


@click.command("replay")
@click.option("--trace", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=BUNDLED_TRACE,
              show_default="the bundled NASA trace", help="CSV of timestamp,count rows (one per minute, say)")
@click.option("--timestamp-col", default="timestamp", show_default=True)
@click.option("--count-col", default="requests", show_default=True)
@click.option("--speed", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="simulated seconds per second (60: an hour of traffic in a minute; 0: as fast as the "
                   "worker answers)")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="stop after this many steps [run on]")
@click.option("--start-fraction", default=0.8, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="where in the trace to start (0.8: its last fifth, which training holds out)")
@click.option("--autoscaler-url", default=None, help="the worker [PRIORITYMAX_AUTOSCALER_URL]")
@click.option("--tenant", default="replay", show_default=True, help="the tenant the readings are sent as")
@click.option("--seed", default=0, show_default=True, help="the arrivals' seed")
@click.option("--quiet", is_flag=True, help="no line per simulated hour")
def replay_command(trace: Path, timestamp_col: str, count_col: str, speed: float, steps: int | None,
                   start_fraction: float, autoscaler_url: str | None, tenant: str, seed: int,
                   quiet: bool) -> None:
    """Replay a trace through the autoscaler worker: the worker's decisions size the simulated pool."""
    from ml.sim.config import SimConfig
    from ml.sim.replay import Timeline, TraceReplay, run, worker_decide
    from ml.sim.traffic import load_trace

    settings = get_settings()
    config = SimConfig()
    try:
        series = load_trace(trace, timestamp_col=timestamp_col, count_col=count_col,
                            step_seconds=config.step_seconds).scaled_to(config.mean_arrival_rate)
    except (ValueError, KeyError) as error:
        raise click.ClickException(f"cannot replay {trace}: {error}") from None
    url = autoscaler_url or settings.autoscaler_url
    token = settings.autoscaler_token.get_secret_value() if settings.autoscaler_token else None
    replay = TraceReplay(series, config, start_row=int(start_fraction * (len(series) - 1)), seed=seed,
                         tenant=tenant)
    timeline = Timeline(settings.replay_timeline_path)
    per_hour = max(1, math.ceil(3600 / config.step_seconds))
    click.echo(f"replaying {trace.name} from row {replay.start_row} of {len(series)} at {speed:g}x "
               f"through {url} (tenant {tenant}); timeline: {timeline.path}", err=True)
    try:
        entries = run(replay, worker_decide(url, token), timeline, speed=speed, steps=steps,
                      say=lambda line: click.echo(line, err=True))
        for done, entry in enumerate(entries, start=1):
            if not quiet and done % per_hour == 0:
                click.echo(f"{entry['trace_time']}  load {entry['arrival_rate']:7.2f}/s  workers "
                           f"{entry['workers']:3d} (HPA {entry['hpa_workers']:3d})  {entry['mode']}",
                           err=True)
    except KeyboardInterrupt:
        sys.exit(0)
    finally:
        replay.close()
