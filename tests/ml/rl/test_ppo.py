import dataclasses

import pytest
import torch

from ml.rl.policy import PPOPolicy
from ml.rl.ppo import Args, CheckpointError, RolloutPolicy, load_checkpoint, train
from ml.rl.train import traffic_for
from ml.sim import SimConfig
from ml.sim.evaluate import evaluate_policy
from ml.sim.policies import HPAPolicy

SMALL = Args(epochs=4, steps=256, num_envs=4, minibatch_size=64, update_epochs=2,
             eval_every=0, checkpoint_every=1)
TRAFFIC = traffic_for(None, SimConfig())


def run(checkpoint, args=SMALL, **kw):
    return train(args, traffic=TRAFFIC.train, traffic_name=TRAFFIC.name, checkpoint=checkpoint,
                 progress=False, **kw)


def weights(state):
    return {k: v.clone() for k, v in state.agent.state_dict().items()}


def test_resuming_gives_the_same_weights_as_a_straight_run(tmp_path):
    straight = weights(run(tmp_path / "straight.pt"))
    first = run(tmp_path / "resumed.pt", stop_after=2)
    assert first.epoch == 2
    resumed = run(tmp_path / "resumed.pt")
    assert resumed.epoch == 4
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed.agent.state_dict()[name]), name
    again = run(tmp_path / "resumed.pt")  # already done: nothing more to train
    assert again.epoch == 4 and again.global_step == resumed.global_step


def test_metrics_use_cleanrl_names(tmp_path):
    state = run(tmp_path / "m.pt", dataclasses.replace(SMALL, epochs=2, eval_every=1),
                evaluate=lambda s: -1.0)
    names = set(state.history[-1])
    assert {"charts/SPS", "charts/learning_rate", "charts/eval_reward", "losses/value_loss",
            "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
            "losses/explained_variance"} <= names
    assert state.global_step == 2 * 256


def test_corrupt_and_incompatible_checkpoints_are_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PPO checkpoint"):
        run(corrupt)
    good = tmp_path / "good.pt"
    run(good, dataclasses.replace(SMALL, epochs=1))
    other = dataclasses.replace(SMALL, num_envs=8)
    with pytest.raises(CheckpointError, match="num_envs: checkpoint 4, now 8.*--fresh"):
        run(good, other)
    assert run(good, other, fresh=True).epoch == SMALL.epochs  # --fresh starts over
    assert load_checkpoint(good)["args"]["num_envs"] == 8


def test_rollout_policy_matches_the_torch_agent(tmp_path):
    state = run(tmp_path / "p.pt", dataclasses.replace(SMALL, epochs=1))
    obs = torch.randn(32, 13)
    rollout = RolloutPolicy(state.agent)
    with torch.no_grad():
        values = state.agent.value(obs).numpy()
        logits = state.agent.actor(obs).numpy()
    assert rollout.value(obs.numpy()) == pytest.approx(values, abs=1e-5)
    assert rollout._forward(rollout.actor, obs.numpy()) == pytest.approx(logits, abs=1e-5)


@pytest.mark.slow
def test_ppo_learns_to_beat_the_hpa_rule_on_the_nasa_trace(tmp_path, nasa_trace):
    traffic = traffic_for(nasa_trace, SimConfig())
    args = Args(eval_every=0)  # the defaults: 150 epochs of 4096 steps, ~1 minute
    state = train(args, traffic=traffic.train, traffic_name=traffic.name,
                  checkpoint=tmp_path / "nasa.pt", progress=False)
    seeds = list(range(100, 108))
    ppo = evaluate_policy(PPOPolicy.from_state(state), traffic.evaluation, seeds=seeds)
    hpa = evaluate_policy(HPAPolicy(SimConfig()), traffic.evaluation, seeds=seeds)
    assert ppo.reward.mean() > hpa.reward.mean()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_trains_on_cuda(tmp_path):
    state = run(tmp_path / "cuda.pt", dataclasses.replace(SMALL, epochs=1, device="cuda"))
    assert next(state.agent.parameters()).device.type == "cuda"
    assert PPOPolicy.from_checkpoint(tmp_path / "cuda.pt").act(
        torch.zeros(2, 13).numpy(), {}).shape == (2,)
