"""PPO for the PriorityMax autoscaler, in one readable file (after CleanRL's ``ppo.py``).

Rollouts come from :class:`~ml.sim.vec_env.PriorityMaxVecEnv`: one numpy call steps every env,
one batched forward pass of the policy (in numpy, :class:`RolloutPolicy`) acts for all of them.
The update, in torch on ``device``, is the usual PPO:
clipped surrogate objective, GAE, advantage normalization, entropy bonus, clipped value loss,
gradient clipping, learning-rate annealing over minibatch epochs. Observations are normalized
with running statistics, rewards scaled by the running std of the discounted return.
Episodes end by truncation only (a day of traffic does not "terminate"), so the value of the
final observation is bootstrapped into the last reward instead of treating the end as terminal.

Metrics follow CleanRL's names: ``charts/episodic_return``, ``charts/SPS``,
``charts/learning_rate``, ``charts/eval_reward``, ``losses/value_loss``, ``losses/policy_loss``,
``losses/entropy``, ``losses/approx_kl``, ``losses/clipfrac``, ``losses/explained_variance``.

A checkpoint holds everything a run needs to continue exactly as if it had not stopped -
weights, optimizer, normalization statistics, RNG states, the simulator's own state - and is
written atomically every ``checkpoint_every`` epochs and at the end. ``train`` resumes from it.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.rl.residual import ResidualControl, ResidualVecEnv, tune_base_rule, validate_adjustments
from ml.sim.config import SimConfig
from ml.sim.shifts import randomized_mix
from ml.sim.traffic import RateSeries
from ml.sim.vec_env import PriorityMaxVecEnv
from prioritymax.files import atomic_write_bytes, unreadable

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class Args:
    """Hyperparameters and run options; the CLI's flags map onto these fields."""

    epochs: int = 150  # PPO iterations: rollout + update
    steps: int = 2048  # env steps collected per epoch, all envs together
    num_envs: int = 64  # the CLI takes PRIORITYMAX_RL_ENVS
    lr: float = 1e-3
    device: str = "cpu"
    seed: int = 0
    gamma: float = 0.99
    gae_lambda: float = 0.95
    minibatch_size: int = 512
    update_epochs: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden_dim: int = 64
    hold_prior: float = 2.0  # initial logit bonus of the "no change" action
    anneal_lr: bool = True
    norm_adv: bool = True
    clip_vloss: bool = True
    torch_threads: int = 1
    checkpoint_every: int = 5
    eval_every: int = 5  # epochs; 0 turns evaluation off
    eval_episodes: int = 8
    # The robust policy (ml/rl/residual.py): "residual" adjusts a tuned queueing rule from inputs
    # relative to capacity; "direct" picks raw scale deltas from the simulator's observation.
    control: str = "residual"
    # The residual policy's initial logit bonus for "follow the rule". It acts greedily, so an
    # adjustment replaces the rule only where training raised it this far; and at the end of
    # training its adjustments are kept only if they beat the rule on the training traffic's
    # shifted variants (ml.rl.residual.validate_adjustments).
    rule_prior: float = 2.0
    randomize: bool = True  # domain randomization: train on the traffic at several loads, with flash crowds

    @property
    def rollout_steps(self) -> int:
        return max(1, self.steps // self.num_envs)


def layer(inputs: int, outputs: int, gain: float = math.sqrt(2)) -> nn.Linear:
    linear = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.constant_(linear.bias, 0.0)
    return linear


class Agent(nn.Module):
    """Separate actor and critic MLPs (tanh), orthogonally initialized as in CleanRL."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int = 64,
                 hold_action: int | None = None, hold_prior: float = 0.0) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer(obs_dim, hidden), nn.Tanh(), layer(hidden, hidden), nn.Tanh(), layer(hidden, 1, 1.0)
        )
        self.actor = nn.Sequential(
            layer(obs_dim, hidden), nn.Tanh(), layer(hidden, hidden), nn.Tanh(),
            layer(hidden, num_actions, 0.01),
        )
        if hold_action is not None and hold_prior:
            # Start out mostly holding the pool: random ±2 walks of the pool make the first
            # rollouts mostly empty or saturated pools, which teach little.
            with torch.no_grad():
                self.actor[-1].bias[hold_action] = hold_prior

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor):
        """Log-probs of given actions, entropy and values: what the update needs."""
        log_probs = torch.log_softmax(self.actor(obs), dim=-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return log_probs.gather(-1, action[:, None]).squeeze(-1), entropy, self.value(obs)

    forward = evaluate  # what the update calls, so DistributedDataParallel can wrap the agent


class RolloutPolicy:
    """The agent's actor and critic as numpy arrays, for collecting rollouts.

    A rollout makes one forward pass per step on a small batch, where torch's per-call overhead
    (~20 µs an op here) dwarfs the arithmetic; the same layers in numpy cost ~1 µs an op. The
    weights are copied from the torch agent after every update, so both compute the same policy
    (to float32 rounding: the update's first probability ratios are 1 within ~1e-6)."""

    def __init__(self, agent: Agent) -> None:
        def layers(net: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
            return [(m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
                    for m in net if isinstance(m, nn.Linear)]

        self.actor, self.critic = layers(agent.actor), layers(agent.critic)

    @staticmethod
    def _forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
        for i, (weight, bias) in enumerate(layers):
            x = x @ weight + bias
            if i < len(layers) - 1:
                np.tanh(x, out=x)
        return x

    def value(self, obs: np.ndarray) -> np.ndarray:
        return self._forward(self.critic, obs)[:, 0]

    def logits(self, obs: np.ndarray) -> np.ndarray:
        return self._forward(self.actor, obs)

    def act(self, obs: np.ndarray, rng: np.random.Generator):
        """Actions sampled with the Gumbel-max trick, their log-probabilities, and values."""
        logits = self._forward(self.actor, obs)
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        gumbel = -np.log(-np.log(rng.random(log_probs.shape, dtype=np.float32) + 1e-20) + 1e-20)
        action = np.argmax(log_probs + gumbel, axis=1)
        return action, log_probs[np.arange(len(action)), action], self.value(obs)


@dataclass
class RunningMeanStd:
    """Running mean and variance (parallel-algorithm update), as in gymnasium's wrappers."""

    mean: np.ndarray
    var: np.ndarray
    count: float = 1e-4

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> RunningMeanStd:
        return cls(np.zeros(shape), np.ones(shape))

    def update(self, batch: np.ndarray) -> None:
        self.update_from_moments(batch.mean(axis=0), batch.var(axis=0), batch.shape[0])

    def update_from_moments(self, batch_mean: np.ndarray, batch_var: np.ndarray, n: float) -> None:
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def normalize(self, x: np.ndarray, clip: float = 10.0) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -clip, clip).astype(np.float32)

    def to_state(self) -> dict[str, Any]:
        return {"mean": torch.from_numpy(np.asarray(self.mean, dtype=np.float64)),
                "var": torch.from_numpy(np.asarray(self.var, dtype=np.float64)),
                "count": float(self.count)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunningMeanStd:
        return cls(state["mean"].numpy().copy(), state["var"].numpy().copy(), state["count"])


@dataclass
class TrainState:
    """What changes during training (and what a checkpoint keeps)."""

    agent: Agent
    optimizer: torch.optim.Optimizer
    obs_rms: RunningMeanStd
    return_rms: RunningMeanStd
    returns: np.ndarray  # discounted return so far, per env (for reward scaling)
    episode_return: np.ndarray  # undiscounted, per env (for charts/episodic_return)
    rng: np.random.Generator  # samples the rollout's actions
    epoch: int = 0
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    control: ResidualControl | None = None
    obs_range: tuple[np.ndarray, np.ndarray] | None = None  # lowest and highest inputs seen
    validation: dict[str, Any] | None = None  # the residual adjustments' verdict (see _validate)

    def widen_range(self, batch: np.ndarray) -> None:
        low, high = batch.min(axis=0), batch.max(axis=0)
        if self.obs_range is not None:
            low, high = np.minimum(low, self.obs_range[0]), np.maximum(high, self.obs_range[1])
        self.obs_range = (low, high)


class SingleProcess:
    """``train``'s view of its peers when it has none. :mod:`ml.rl.distributed` gives a
    data-parallel one: each rank steps its own envs, gradients are all-reduced, normalization
    statistics pooled, and only rank 0 evaluates, logs and checkpoints."""

    rank = 0
    world_size = 1
    resumable = True  # its checkpoints hold the whole training state

    def wrap(self, agent: Agent) -> nn.Module:
        """The module the update runs through."""
        return agent

    def moments(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Mean, variance and size of a batch pooled over every rank."""
        return batch.mean(axis=0), batch.var(axis=0), batch.shape[0]

    def divergence(self, agent: Agent) -> float | None:
        """Largest parameter difference from rank 0 over all ranks (None: nothing to compare)."""
        return None

    def save(self, path: Path, args: Args, config: SimConfig, state: TrainState,
             env: PriorityMaxVecEnv, next_obs: np.ndarray, traffic: str) -> None:
        """Write the checkpoint (only rank 0 is asked to)."""
        save_checkpoint(path, args, config, state, env, next_obs, traffic)


# --------------------------------------------------------------------------------- checkpoints
class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or from incompatible settings."""


def _tensors(value: Any) -> Any:
    """numpy arrays inside a nested structure to tensors, so torch.load(weights_only) reads it."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: _tensors(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_tensors(v) for v in value)
    return value


def _arrays(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_arrays(v) for v in value)
    return value


#: Args that must match to resume (the others - epochs, lr, eval, device... - may change).
_RESUME_KEYS = ("num_envs", "steps", "hidden_dim", "seed", "control", "randomize")


def policy_payload(args: Args, config: SimConfig, traffic: str, agent: Agent,
                   obs_rms: RunningMeanStd, trainer: str = "ppo", *,
                   control: ResidualControl | None = None,
                   obs_range: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """What every checkpoint holds, and all that acting needs (eval_rl, canary_rl, the registry).

    ``trainer`` names what wrote it: only ``ppo`` checkpoints (train_rl) also hold the training
    state a resume needs; ``rllib`` and ``torch_distributed`` ones hold the policy alone.
    ``control`` is the residual policy's rule and inputs (None: a direct policy); ``obs_range``
    the lowest and highest inputs seen in training (the worker's guard against the unseen)."""
    actor_out = [m for m in agent.actor if isinstance(m, nn.Linear)]
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "ppo",
        "trainer": trainer,
        "args": dataclasses.asdict(args),
        "sim_config": config.to_dict(),
        "traffic": traffic,
        "obs_dim": int(actor_out[0].in_features),
        "num_actions": int(actor_out[-1].out_features),
        "agent": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
        "obs_rms": obs_rms.to_state(),
        "control": None if control is None else control.to_dict(),
        "obs_range": None if obs_range is None else [torch.from_numpy(np.asarray(r, dtype=np.float32))
                                                     for r in obs_range],
    }


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(path: Path, args: Args, config: SimConfig, state: TrainState,
                    env: PriorityMaxVecEnv | ResidualVecEnv, next_obs: np.ndarray, traffic: str) -> None:
    write_checkpoint(path, policy_payload(args, config, traffic, state.agent, state.obs_rms,
                                          control=state.control, obs_range=state.obs_range) | {
        "epoch": state.epoch,
        "global_step": state.global_step,
        "optimizer": state.optimizer.state_dict(),
        "return_rms": state.return_rms.to_state(),
        "returns": torch.from_numpy(state.returns.copy()),
        "episode_return": torch.from_numpy(state.episode_return.copy()),
        "torch_rng": torch.get_rng_state(),
        "rollout_rng": state.rng.bit_generator.state,
        "env": _tensors(env.get_state()),
        "next_obs": torch.from_numpy(next_obs.copy()),
        "history": state.history,
        "residual_validation": state.validation,
    })


def obs_range_of(payload: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The lowest and highest policy inputs seen in training, as kept in a checkpoint."""
    found = payload.get("obs_range")
    return None if found is None else (found[0].numpy().copy(), found[1].numpy().copy())


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Read a PPO checkpoint; a clear :class:`CheckpointError` when it is not one."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as error:  # truncated zip, foreign pickle, ...: many exception types
        raise CheckpointError(f"{path}: not a readable PPO checkpoint ({unreadable(path, error)})") from None
    if not isinstance(payload, dict) or payload.get("kind") != "ppo":
        raise CheckpointError(f"{path}: not a PPO checkpoint")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('format')}, this version reads "
            f"{CHECKPOINT_FORMAT}"
        )
    return payload


def _check_resumable(path: Path, payload: dict[str, Any], args: Args, config: SimConfig,
                     traffic: str) -> None:
    if payload.get("trainer", "ppo") != "ppo":
        raise CheckpointError(
            f"{path} was written by {payload['trainer']}: it holds a policy, not a training "
            "state to resume; pass --fresh to overwrite it, or another --checkpoint"
        )
    saved = payload["args"]
    before_residual = {"control": "direct", "randomize": False}  # checkpoints older than them
    different = [f"{k}: checkpoint {saved.get(k, before_residual.get(k))!r}, now {getattr(args, k)!r}"
                 for k in _RESUME_KEYS if saved.get(k, before_residual.get(k)) != getattr(args, k)]
    if payload["sim_config"] != config.to_dict():
        different.append("the simulator configuration")
    if payload["traffic"] != traffic:
        different.append(f"traffic: checkpoint {payload['traffic']!r}, now {traffic!r}")
    if different:
        raise CheckpointError(
            f"{path} was trained with other settings ({'; '.join(different)}); resume with the "
            "same ones, or pass --fresh to start over and overwrite it"
        )


def _validate(state: TrainState, traffic: RateSeries) -> None:
    """At the end of training, keep a residual policy's adjustments only if they beat its rule
    (:func:`ml.rl.residual.validate_adjustments`); the verdict is in the checkpoint."""
    from ml.rl.policy import PPOPolicy

    control = dataclasses.replace(state.control, learned=True)
    policy = PPOPolicy(state.agent, state.obs_rms, control=control)
    state.validation = validate_adjustments(policy, control, traffic)
    state.control = dataclasses.replace(control, learned=state.validation["kept"])
    log.info("residual adjustments %s: change vs the rule %s", "kept" if state.validation["kept"]
             else "dropped", state.validation["change_vs_rule"])


# ----------------------------------------------------------------------------------- training
def make_agent(obs_dim: int, num_actions: int, args: Args,
               hold_action: int | None = None) -> tuple[Agent, torch.optim.Optimizer]:
    agent = Agent(obs_dim, num_actions, args.hidden_dim, hold_action, args.hold_prior)
    agent = agent.to(args.device)
    return agent, torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)


def train(
    args: Args,
    *,
    traffic: RateSeries,
    traffic_name: str,
    checkpoint: Path,
    config: SimConfig | None = None,
    fresh: bool = False,
    stop_after: int | None = None,
    evaluate: Callable[[TrainState], float] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool | None = None,
    replicas: SingleProcess | None = None,
    control: ResidualControl | None = None,
) -> TrainState:
    """Train (or resume) PPO until ``args.epochs`` epochs are done, or ``stop_after`` more.

    With ``replicas`` of world size W (data-parallel), ``args`` describe the whole job: this rank
    steps ``num_envs / W`` of the envs (the ones a single process would seed alike) and updates
    on minibatches of ``minibatch_size / W``, so W ranks together do what one process with the
    combined batch does.

    With ``args.control == "residual"`` the agent adjusts a rule (:mod:`ml.rl.residual`):
    ``control`` gives the rule, or it is tuned on ``traffic`` here (a resume reads it from the
    checkpoint). With ``args.randomize`` episodes are drawn from ``traffic`` at several load
    levels, with and without flash crowds (:func:`~ml.sim.shifts.randomized_mix`)."""
    from tqdm.auto import tqdm

    config = config or SimConfig()
    replicas = replicas or SingleProcess()
    main = replicas.rank == 0
    torch.set_num_threads(args.torch_threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    n = args.num_envs // replicas.world_size
    resume = not fresh and replicas.resumable and checkpoint.exists()
    payload = load_checkpoint(checkpoint) if resume else None
    if payload is not None:
        _check_resumable(checkpoint, payload, args, config, traffic_name)
    if args.control not in ("residual", "direct"):
        raise ValueError(f"control must be 'residual' or 'direct', got {args.control!r}")
    if args.control == "residual" and control is None:
        control = (ResidualControl.from_dict(payload["control"]) if payload is not None
                   else tune_base_rule(config, traffic))
    if args.control == "direct":
        control = None
    as_given = traffic  # what the residual adjustments are validated on, at the end
    if args.randomize:
        traffic = randomized_mix(traffic, args.seed)
    env = (ResidualVecEnv(n, control, traffic) if control is not None
           else PriorityMaxVecEnv(n, config, traffic, autoreset_mode="SameStep"))
    obs_dim, num_actions = env.single_observation_space.shape[0], int(env.single_action_space.n)
    torch.manual_seed(args.seed)  # the initial weights (a resume then loads its own)
    if control is not None:
        residual_args = dataclasses.replace(args, hold_prior=args.rule_prior)
        agent, optimizer = make_agent(obs_dim, num_actions, residual_args, hold_action=control.rule_action)
    else:
        agent, optimizer = make_agent(obs_dim, num_actions, args, hold_action=config.scale_deltas.index(0))

    model = replicas.wrap(agent)
    if payload is not None:
        agent.load_state_dict(payload["agent"])
        optimizer.load_state_dict(payload["optimizer"])
        env.set_state(_arrays(payload["env"]))
        next_obs_raw = payload["next_obs"].numpy().copy()
        torch.set_rng_state(payload["torch_rng"])
        rng = np.random.default_rng()
        rng.bit_generator.state = payload["rollout_rng"]
        state = TrainState(agent, optimizer, RunningMeanStd.from_state(payload["obs_rms"]),
                           RunningMeanStd.from_state(payload["return_rms"]),
                           payload["returns"].numpy().copy(),
                           payload["episode_return"].numpy().copy(), rng,
                           payload["epoch"], payload["global_step"], list(payload["history"]),
                           control, obs_range_of(payload), payload.get("residual_validation"))
        log.info("resuming %s at epoch %d (%d steps)", checkpoint, state.epoch, state.global_step)
    else:
        next_obs_raw, _ = env.reset(seed=args.seed + replicas.rank * n)
        state = TrainState(agent, optimizer, RunningMeanStd.zeros((obs_dim,)),
                           RunningMeanStd.zeros(()), np.zeros(n), np.zeros(n),
                           np.random.default_rng((args.seed, replicas.rank) if replicas.rank else args.seed),
                           control=control)
        state.obs_rms.update_from_moments(*replicas.moments(next_obs_raw))

    steps = args.rollout_steps
    raw_obs_buf = np.zeros((steps, n, obs_dim), dtype=np.float32)
    obs_buf = np.zeros((steps, n, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((steps, n), dtype=np.int64)
    logprobs_buf = np.zeros((steps, n), dtype=np.float32)
    rewards_buf = np.zeros((steps, n), dtype=np.float32)
    dones_buf = np.zeros((steps, n), dtype=np.float32)
    values_buf = np.zeros((steps, n), dtype=np.float32)
    returns_buf = np.zeros((steps, n))

    last_epoch = args.epochs if stop_after is None else min(args.epochs, state.epoch + stop_after)
    bar = tqdm(total=last_epoch, initial=state.epoch, desc="train_rl", unit="epoch",
               disable=not main or (None if progress is None else not progress))
    next_done = np.zeros(n, dtype=np.float32)
    while state.epoch < last_epoch:
        started = time.perf_counter()
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.lr * (1.0 - state.epoch / args.epochs)
        episode_returns: list[float] = []
        # Normalization statistics stay fixed during a rollout and are updated after it, so every
        # observation of a batch is scaled alike.
        policy = RolloutPolicy(agent)
        reward_scale = 1.0 / math.sqrt(float(state.return_rms.var) + 1e-8)

        # ---- rollout: one numpy env step and one batched forward pass per step
        next_obs = state.obs_rms.normalize(next_obs_raw)
        for step in range(steps):
            obs_buf[step], dones_buf[step] = next_obs, next_done
            action, logprob, value = policy.act(next_obs, state.rng)
            actions_buf[step], logprobs_buf[step], values_buf[step] = action, logprob, value
            next_obs_raw, reward, terminated, truncated, info = env.step(action)
            raw_obs_buf[step] = next_obs_raw
            reward = reward.astype(np.float64)
            done = terminated | truncated
            state.episode_return += reward
            state.returns = state.returns * args.gamma + reward
            returns_buf[step] = state.returns
            scaled = reward * reward_scale
            if done.any():
                episode_returns += state.episode_return[done].tolist()
                state.episode_return[done] = 0.0
                state.returns[done] = 0.0
            if truncated.any():  # bootstrap the cut-off episode from its final observation
                final = np.stack([info["final_obs"][i] for i in np.flatnonzero(truncated)])
                scaled[truncated] += args.gamma * policy.value(state.obs_rms.normalize(final))
            rewards_buf[step] = scaled
            next_obs = state.obs_rms.normalize(next_obs_raw)
            next_done = done.astype(np.float32)
        state.global_step += steps * n * replicas.world_size
        state.obs_rms.update_from_moments(*replicas.moments(raw_obs_buf.reshape(-1, obs_dim)))
        state.widen_range(raw_obs_buf.reshape(-1, obs_dim))
        state.return_rms.update_from_moments(*replicas.moments(returns_buf.reshape(-1)))

        # ---- GAE
        next_value = policy.value(next_obs)
        advantages = np.zeros_like(rewards_buf)
        last_gae = np.zeros(n, dtype=np.float32)
        for t in reversed(range(steps)):
            if t == steps - 1:
                not_done, following = 1.0 - next_done, next_value
            else:
                not_done, following = 1.0 - dones_buf[t + 1], values_buf[t + 1]
            delta = rewards_buf[t] + args.gamma * following * not_done - values_buf[t]
            last_gae = delta + args.gamma * args.gae_lambda * not_done * last_gae
            advantages[t] = last_gae
        returns = advantages + values_buf

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array.reshape(steps * n, *array.shape[2:])).to(device)

        metrics = update(model, agent, optimizer, args, tensor(obs_buf), tensor(actions_buf),
                         tensor(logprobs_buf), tensor(advantages), tensor(returns),
                         tensor(values_buf), minibatch=args.minibatch_size // replicas.world_size)
        state.epoch += 1
        divergence = replicas.divergence(agent)
        seconds = time.perf_counter() - started
        metrics |= {
            "epoch": state.epoch,
            "global_step": state.global_step,
            "charts/SPS": steps * n * replicas.world_size / seconds,
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
        }
        if divergence is not None:
            metrics["dist/param_divergence"] = divergence
        if episode_returns:
            metrics["charts/episodic_return"] = float(np.mean(episode_returns))
        if not main:
            continue
        if evaluate is not None and args.eval_every and state.epoch % args.eval_every == 0:
            metrics["charts/eval_reward"] = evaluate(state)
        state.history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        bar.update(1)
        bar.set_postfix(sps=f"{metrics['charts/SPS']:,.0f}",
                        eval=f"{metrics.get('charts/eval_reward', float('nan')):.1f}")
        if state.epoch == args.epochs and state.control is not None:
            _validate(state, as_given)
        if state.epoch % args.checkpoint_every == 0 or state.epoch == last_epoch:
            replicas.save(checkpoint, args, config, state, env, next_obs_raw, traffic_name)
    bar.close()
    env.close()
    return state


def update(model: nn.Module, agent: Agent, optimizer: torch.optim.Optimizer, args: Args, obs,
           actions, logprobs, advantages, returns, values, minibatch: int) -> dict[str, float]:
    """PPO's minibatch epochs over one rollout; returns the ``losses/*`` metrics.

    ``model`` is the agent itself, or its DistributedDataParallel wrapper (which all-reduces the
    gradients during ``backward``)."""
    batch = obs.shape[0]
    minibatch = max(1, min(minibatch, batch))
    clipfracs = []
    for _ in range(args.update_epochs):
        order = torch.randperm(batch, device=obs.device)
        for start in range(0, batch, minibatch):
            index = order[start : start + minibatch]
            new_logprob, entropy, new_value = model(obs[index], actions[index])
            log_ratio = new_logprob - logprobs[index]
            ratio = log_ratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
            advantage = advantages[index]
            if args.norm_adv:
                advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
            policy_loss = torch.max(
                -advantage * ratio,
                -advantage * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef),
            ).mean()
            if args.clip_vloss:
                unclipped = (new_value - returns[index]) ** 2
                clipped_value = values[index] + torch.clamp(
                    new_value - values[index], -args.clip_coef, args.clip_coef
                )
                value_loss = 0.5 * torch.max(unclipped, (clipped_value - returns[index]) ** 2).mean()
            else:
                value_loss = 0.5 * ((new_value - returns[index]) ** 2).mean()
            entropy_loss = entropy.mean()
            loss = policy_loss - args.ent_coef * entropy_loss + args.vf_coef * value_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
    y_pred, y_true = values.cpu().numpy(), returns.cpu().numpy()
    variance = np.var(y_true)
    return {
        "losses/value_loss": value_loss.item(),
        "losses/policy_loss": policy_loss.item(),
        "losses/entropy": entropy_loss.item(),
        "losses/approx_kl": approx_kl.item(),
        "losses/clipfrac": float(np.mean(clipfracs)),
        "losses/explained_variance": float("nan") if variance == 0 else
        float(1 - np.var(y_true - y_pred) / variance),
    }
