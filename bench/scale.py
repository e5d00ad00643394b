"""Scale-out training, side by side in one run: RLlib vs train_rl, ASHA vs FIFO, DDP 1 vs 2 ranks.

1. Throughput: RLlib PPO (new API stack, ``--cpus`` CPUs: cpus-1 env runners) against train_rl
   with the same hyperparameters (train batch 2048, minibatch 512, 4 epochs, 64-64 tanh actor and
   critic); env steps per second of training (sampling + learning), first iteration left out.
   RLlib runs with 8 and with 64 envs per runner; the faster counts.
2. Tune: the same search (random, seed 0, ``--samples`` configurations, ``--tune-epochs`` epochs at
   most) under ASHA and under FIFO; best ``episode_reward_mean`` reached, epochs run by all
   trials together, and ``asha_compute_fraction`` = ASHA's epochs / FIFO's.
3. torch_distributed: world_size 1 and 2 (gloo) on the same total work; ``ddp_scaling`` = steps/s
   with 2 ranks / with 1, at 1024 envs x 32 steps per epoch (minibatch 8192), and
   ``ddp_scaling_64_envs`` at train_rl's default size, where a rollout step is mostly per-call
   overhead that splitting the envs does not shrink. Plain train_rl (no process group) is shown
   for the overhead of DDP itself.

Traffic: the NASA trace (train on its earlier part, evaluate on the held-out latest part).
The last line printed is one JSON object of the figures.

    .venv/bin/python bench/scale.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

from ml.rl.ppo import Args, train
from ml.rl.train import traffic_for
from ml.sim.config import SimConfig
from prioritymax.settings import get_settings

SAME = Args(steps=2048, num_envs=64, minibatch_size=512, update_epochs=4, hidden_dim=64,
            eval_every=0, anneal_lr=False)
#: DDP needs work per step to split: 1024 envs, 32 steps each per epoch.
LARGE = dataclasses.replace(SAME, num_envs=1024, steps=32768, minibatch_size=8192)


def steady_sps(history: list[dict[str, float]]) -> float:
    return statistics.median(m["charts/SPS"] for m in history[1:] or history)


def rllib_sps(iterations: int, cpus: int, envs_per_runner: int, traffic_name: str) -> float:
    from ray.tune.registry import register_env

    from ml.rl.ray_runtime import ray_session
    from ml.rl.rllib import ENV_NAME, build_config, iteration_metrics, make_env

    runners = max(1, cpus - 1)
    args = dataclasses.replace(SAME, num_envs=envs_per_runner * runners)
    with ray_session(num_cpus=cpus):
        register_env(ENV_NAME, make_env)
        algo = build_config(args, cpus=cpus, gpus=0, sim_config=SimConfig(),
                            traffic=traffic_name).build_algo()
        try:
            history = [iteration_metrics(algo.train()) for _ in range(iterations)]
        finally:
            algo.stop()
    return steady_sps(history)


def train_rl_sps(args: Args, traffic) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        state = train(args, traffic=traffic.train,
                      traffic_name=traffic.name, checkpoint=Path(scratch) / "ppo.pt", progress=False)
    return steady_sps(state.history)


def tune_figures(scheduler: str, samples: int, epochs: int, trace: Path) -> dict[str, float]:
    from ml.rl.tune import run_tune

    args = Args(epochs=epochs, eval_episodes=4)
    result = run_tune(args, samples=samples, scheduler=scheduler, name=f"bench-{scheduler}-{time.time():.0f}",
                      preset=None, trace=trace, seed=0, progress=False)
    return {"best": result["best"]["episode_reward_mean"], "epochs": result["total_epochs"],
            "seconds": result["seconds"]}


def ddp_sps(size: Args, world_size: int, epochs: int, traffic_name: str) -> float:
    from ml.rl.distributed import run_distributed

    with tempfile.TemporaryDirectory() as scratch:
        run = run_distributed(dataclasses.replace(size, epochs=epochs), world_size,
                              Path(scratch) / "ddp.pt", traffic_name, progress=False)
    return steady_sps(run["history"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tune-epochs", type=int, default=30)
    options = parser.parse_args()
    quick = options.quick
    trace = get_settings().trace_path
    traffic = traffic_for(trace, SimConfig())
    figures: dict[str, float] = {}

    iterations, epochs = (2, 3) if quick else (6, 20)
    by_envs = {n: rllib_sps(iterations, options.cpus, n, traffic.name) for n in ((8,) if quick else (8, 64))}
    best_envs = max(by_envs, key=by_envs.get)
    ours = train_rl_sps(dataclasses.replace(SAME, epochs=epochs), traffic)
    figures |= {"rllib_steps_per_s": round(by_envs[best_envs]), "rllib_envs_per_runner": best_envs,
                "train_rl_steps_per_s": round(ours),
                "ratio_ours_vs_rllib": round(ours / by_envs[best_envs], 1)}
    for n, sps in by_envs.items():
        print(f"RLlib PPO, {n} envs per runner: {sps:,.0f} steps/s")
    print(f"train_rl, same hyperparameters: {ours:,.0f} steps/s -> {figures['ratio_ours_vs_rllib']}x")

    samples, tune_epochs = (2, 3) if quick else (options.samples, options.tune_epochs)
    asha = tune_figures("asha", samples, tune_epochs, trace)
    fifo = tune_figures("fifo", samples, tune_epochs, trace)
    figures |= {"tune_samples": samples, "tune_max_epochs": tune_epochs,
                "asha_best": round(asha["best"], 2), "fifo_best": round(fifo["best"], 2),
                "asha_epochs": asha["epochs"], "fifo_epochs": fifo["epochs"],
                "asha_seconds": asha["seconds"], "fifo_seconds": fifo["seconds"],
                "asha_compute_fraction": round(asha["epochs"] / fifo["epochs"], 3)}
    print(f"tune {samples} samples x {tune_epochs} epochs: ASHA best {asha['best']:,.1f} in "
          f"{asha['epochs']} epochs ({asha['seconds']} s), FIFO best {fifo['best']:,.1f} in "
          f"{fifo['epochs']} epochs ({fifo['seconds']} s)")

    ddp_epochs = 3 if quick else 8
    # --quick checks the script runs: DDP at the small size only (the large one is most of its time).
    sizes = (("", SAME),) if quick else (("", LARGE), ("_64_envs", SAME))
    for label, size in sizes:
        one, two = (ddp_sps(size, w, ddp_epochs, traffic.name) for w in (1, 2))
        plain = train_rl_sps(dataclasses.replace(size, epochs=ddp_epochs), traffic)
        figures |= {f"ddp_world1_steps_per_s{label}": round(one),
                    f"ddp_world2_steps_per_s{label}": round(two),
                    f"train_rl_no_ddp_steps_per_s{label}": round(plain),
                    f"ddp_scaling{label}": round(two / one, 2)}
        print(f"torch_distributed, {size.num_envs} envs: 1 rank {one:,.0f}, 2 ranks {two:,.0f} "
              f"steps/s -> {two / one:.2f}x (train_rl without a process group: {plain:,.0f})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
