"""train_rl on CPU against CUDA: end-to-end PPO steps/s with the same settings, in one run.

The simulator and the rollout policy stay on the CPU (numpy); ``--device`` moves the update -
the minibatch forward and backward passes - to the GPU. Measured for a small and a large batch.
The last line printed is one JSON object of the figures.

    python bench/ppo_device.py [--epochs 4]      # on a machine with CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch

from ml.rl.ppo import Args, train
from ml.rl.train import traffic_for
from ml.sim.config import SimConfig


def steps_per_second(args: Args, traffic, config) -> float:
    with tempfile.TemporaryDirectory() as folder:
        state = train(args, traffic=traffic.train, traffic_name=traffic.name,
                      checkpoint=Path(folder) / "p.pt", config=config, progress=False)
    return statistics.median(m["charts/SPS"] for m in state.history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--trace", default=None, help="default: the NASA trace")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("no CUDA device")
    from prioritymax.settings import get_settings

    config = SimConfig()
    traffic = traffic_for(args.trace or get_settings().trace_path, config)
    threads = os.cpu_count() or 1
    setups = {
        "defaults": Args(epochs=args.epochs, eval_every=0, checkpoint_every=10**6),
        "large_1024_envs": Args(num_envs=1024, steps=1024 * 64, minibatch_size=8192,
                                epochs=args.epochs, eval_every=0, checkpoint_every=10**6),
    }
    figures: dict[str, object] = {"gpu": torch.cuda.get_device_name(0), "cpu_threads": threads}
    for name, setup in setups.items():
        cpu = steps_per_second(Args(**{**setup.__dict__, "torch_threads": threads}), traffic, config)
        cuda = steps_per_second(Args(**{**setup.__dict__, "device": "cuda",
                                        "torch_threads": threads}), traffic, config)
        print(f"{name}: cpu ({threads} threads) {cpu:,.0f} steps/s, cuda {cuda:,.0f} steps/s, "
              f"ratio {cuda / cpu:.2f}")
        figures |= {f"{name}_cpu_steps_per_s": cpu, f"{name}_cuda_steps_per_s": cuda,
                    f"{name}_cuda_vs_cpu": cuda / cpu}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
