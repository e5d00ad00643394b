"""``torch_distributed``: data-parallel PPO with DistributedDataParallel on one machine.

``world_size`` processes (gloo on CPU, nccl with one GPU per rank) run :func:`ml.rl.ppo.train`
together. Each rank steps its own share of the envs, seeded as a single process would seed
them (rank r owns envs ``r*n .. r*n+n-1`` of ``seed``), with its own action noise; DDP all-reduces
(averages) the gradients of every minibatch, so every rank applies the same update; observation
and return normalization statistics are pooled over all ranks' rollouts. Rank 0 evaluates,
logs, reports progress and writes the checkpoint (a policy checkpoint, ``trainer:
torch_distributed``, that eval_rl and canary_rl read; a distributed run always starts fresh).

After every update the ranks compare their parameters with rank 0's; the largest difference is
``dist/param_divergence`` in the history (0.0: identical).

What differs from one process with the combined batch: advantages are normalized per rank's
half-minibatch, and the action noise and minibatch shuffles come from other random streams. The
learning curves agree within the spread of reseeded single-process runs (measured in the tests).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ml.rl.ppo import Agent, Args, SingleProcess, TrainState, policy_payload, train, write_checkpoint
from ml.sim.config import SimConfig


class DataParallel(SingleProcess):
    """This rank's peers in an initialized default process group."""

    resumable = False  # rank 0 holds only its share of the envs: checkpoints hold the policy

    def __init__(self, device: torch.device) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = device

    def save(self, path: Path, args: Args, config: SimConfig, state: TrainState, env, next_obs,
             traffic: str) -> None:
        write_checkpoint(path, policy_payload(args, config, traffic, state.agent, state.obs_rms,
                                              trainer="torch_distributed")
                         | {"epoch": state.epoch, "global_step": state.global_step,
                            "world_size": self.world_size, "history": state.history})

    def wrap(self, agent: Agent) -> nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(agent, device_ids=ids)

    def _all_reduce(self, values: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(self.device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def moments(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Pooled mean and (population) variance from every rank's count, sum and sum of squares."""
        batch = batch.astype(np.float64)
        flat = np.concatenate([[batch.shape[0]], batch.sum(axis=0).ravel(),
                               (batch**2).sum(axis=0).ravel()])
        total = self._all_reduce(flat)
        count, size = total[0], (flat.size - 1) // 2
        mean = total[1 : 1 + size] / count
        var = np.maximum(total[1 + size :] / count - mean**2, 0.0)
        shape = batch.shape[1:]
        return mean.reshape(shape), var.reshape(shape), int(count)

    def divergence(self, agent: Agent) -> float:
        flat = torch.cat([p.detach().reshape(-1) for p in agent.parameters()])
        reference = flat.clone()
        dist.broadcast(reference, src=0)
        gap = (flat - reference).abs().max().reshape(1).double()
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
        return float(gap.item())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_divisible(args: Args, world_size: int) -> None:
    for name in ("num_envs", "minibatch_size"):
        if getattr(args, name) % world_size:
            raise ValueError(f"{name}={getattr(args, name)} does not split evenly over "
                             f"--world_size {world_size}")
    if args.device.startswith("cuda"):
        available = torch.cuda.device_count()
        if available < world_size:
            raise RuntimeError(f"--device cuda with --world_size {world_size} needs one GPU per "
                               f"rank (nccl); torch sees {available}")


def _rank_main(rank: int, world_size: int, port: int, args: Args, checkpoint: str,
               traffic_name: str, sim_config: dict[str, Any], result_path: str,
               progress: bool) -> None:
    """One rank: join the group, train, and (rank 0) leave the result in ``result_path``."""
    from ml.rl.train import evaluator, traffic_named

    cuda = args.device.startswith("cuda")
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world_size)
    try:
        config = SimConfig.from_dict(sim_config)
        traffic = traffic_named(traffic_name, config)
        evaluate = evaluator(traffic.evaluation, config, args.eval_episodes) if rank == 0 else None
        state = train(dataclasses.replace(args, device=str(device)), traffic=traffic.train,
                      traffic_name=traffic.name, checkpoint=Path(checkpoint), config=config,
                      fresh=True, evaluate=evaluate, progress=progress and rank == 0,
                      replicas=DataParallel(device))
        if rank == 0:
            Path(result_path).write_text(json.dumps({"epochs": state.epoch,
                                                     "global_step": state.global_step,
                                                     "history": state.history}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@contextmanager
def _threads_per_rank(world_size: int) -> Iterator[None]:
    """Share the CPUs among the ranks, as torchrun does: numpy's BLAS (the rollout's forward
    passes) otherwise starts a thread per core in every rank, and oversubscribed ranks ran
    slower together than one alone (measured: 0.78x with 2 ranks on 2 cores; 1.6x after).
    Variables the user set are left alone."""
    threads = str(max(1, (os.cpu_count() or 1) // world_size))
    added = [name for name in _THREAD_VARIABLES if name not in os.environ]
    os.environ.update(dict.fromkeys(added, threads))  # inherited by the spawned ranks
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_distributed(args: Args, world_size: int, checkpoint: Path, traffic_name: str,
                    config: SimConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Spawn ``world_size`` ranks on this machine and train; rank 0's epochs, steps and history."""
    import torch.multiprocessing as mp

    check_divisible(args, world_size)
    config = config or SimConfig()
    with tempfile.TemporaryDirectory(prefix="pmx-ddp-") as scratch, _threads_per_rank(world_size):
        result_path = Path(scratch) / "result.json"
        mp.spawn(_rank_main, nprocs=world_size, join=True,
                 args=(world_size, free_port(), args, str(checkpoint), traffic_name,
                       config.to_dict(), str(result_path), progress))
        return json.loads(result_path.read_text())


def torch_distributed(args: Args, world_size: int, checkpoint: Path, *,
                      trace: str | Path | None = None, holdout_fraction: float = 0.2,
                      progress: bool = True) -> dict[str, Any]:
    """The CLI command: train with DDP, then evaluate the result against HPA like train_rl."""
    from ml.rl.tracking import forget_metadata
    from ml.rl.train import final_scores, history_summary, traffic_for

    config = SimConfig()
    traffic = traffic_for(trace, config, holdout_fraction)
    forget_metadata(checkpoint)
    started = time.perf_counter()
    run = run_distributed(args, world_size, checkpoint, traffic.name, config, progress)
    seconds = time.perf_counter() - started
    history = run["history"]
    divergence = [m["dist/param_divergence"] for m in history if "dist/param_divergence" in m]
    return {
        "checkpoint": str(checkpoint),
        "world_size": world_size,
        "backend": "nccl" if args.device.startswith("cuda") else "gloo",
        "epochs": run["epochs"],
        "global_step": run["global_step"],
        "traffic": traffic.name,
        "num_envs": args.num_envs,
        "envs_per_rank": args.num_envs // world_size,
        "device": args.device,
        "seconds": round(seconds, 2),
        "max_param_divergence": max(divergence) if divergence else None,
        **final_scores(checkpoint, args.eval_episodes),
        **history_summary(history),
    }
