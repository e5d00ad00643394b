"""Simulator throughput: env steps per second, side by side in one run.

Measures the scalar ``PriorityMaxSimEnv``, the vectorized ``PriorityMaxVecEnv`` at several sizes
and gymnasium's ``SyncVectorEnv`` over 64 scalar envs, all on the same traffic (the NASA trace by
default), with the same random actions. Every measurement runs at least one whole episode past
its first reset, so autoresets - and their Poisson draws - are inside the timing. Each figure is
the median of ``--repeats`` runs. The last line printed is one JSON object of the figures.

    .venv/bin/python bench/sim_throughput.py [--trace CSV] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
from gymnasium.vector import SyncVectorEnv

from ml.sim import PriorityMaxSimEnv, PriorityMaxVecEnv, SimConfig, load_trace
from prioritymax.settings import get_settings


def steps_per_second(make: Callable[[], object], num_envs: int, steps: int, repeats: int) -> float:
    """Median env-steps/s of ``steps`` steps of ``num_envs`` envs after a seeded reset.

    ``num_envs == 0`` means a scalar env: one env, scalar actions, reset by hand at episode end.
    """
    scalar = num_envs == 0
    rng = np.random.default_rng(0)
    if scalar:
        actions = [int(a) for a in rng.integers(0, 5, 32)]
    else:
        actions = [rng.integers(0, 5, num_envs) for _ in range(32)]
    rates = []
    for _ in range(repeats):
        env = make()
        env.reset(seed=0)
        started = time.perf_counter()
        for step in range(steps):
            truncated = env.step(actions[step % 32])[3]
            if scalar and truncated:
                env.reset()
        rates.append(max(num_envs, 1) * steps / (time.perf_counter() - started))
        env.close()
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default=None, help="traffic CSV (default: the NASA trace)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    args = parser.parse_args()

    config = SimConfig(episode_steps=40) if args.quick else SimConfig()
    traffic = load_trace(args.trace or get_settings().trace_path).scaled_to(
        config.mean_arrival_rate
    )
    sizes = (1, 8, 64) if args.quick else (1, 64, 1024, 4096)
    sync_envs = 8 if args.quick else 64
    # One whole episode past the first reset for the slower envs; two episodes for the vector
    # env, so that a full batch of simultaneous autoresets falls inside every measurement.
    one_episode = config.episode_steps + 1
    repeats = 1 if args.quick else args.repeats

    figures: dict[str, float | int | str] = {}
    figures["scalar_steps_per_s"] = steps_per_second(
        lambda: PriorityMaxSimEnv(config, traffic), 0, one_episode, repeats
    )
    print(f"scalar env                     {figures['scalar_steps_per_s']:>14,.0f} steps/s")
    for n in sizes:
        rate = steps_per_second(
            lambda n=n: PriorityMaxVecEnv(n, config, traffic), n, 2 * one_episode, repeats
        )
        figures[f"vec_steps_per_s_{n}"] = rate
        print(f"PriorityMaxVecEnv x {n:<5}      {rate:>14,.0f} steps/s")
    sync = steps_per_second(
        lambda: SyncVectorEnv([lambda: PriorityMaxSimEnv(config, traffic)] * sync_envs),
        sync_envs, one_episode, repeats,
    )
    figures[f"sync_steps_per_s_{sync_envs}"] = sync
    print(f"SyncVectorEnv x {sync_envs:<5}          {sync:>14,.0f} steps/s")
    ratio = figures[f"vec_steps_per_s_{sync_envs}"] / sync
    figures[f"ratio_vec_vs_sync_{sync_envs}"] = ratio
    print(f"ratio vec/sync at {sync_envs} envs        {ratio:>14.1f}x")
    figures.update(
        episode_steps=config.episode_steps,
        repeats=repeats,
        traffic=traffic.name,
        cpus=os.cpu_count() or 0,
        machine=platform.machine(),
    )
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
