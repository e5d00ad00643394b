"""rllib_train as a user runs it: RLlib PPO on the simulator, its checkpoint converted into a
.pt that eval_rl reads, resumed from save_dir; and RAY_ADDRESS errors that come fast."""

import pickle
import socket

import numpy as np
import pytest
import torch

from tests.ml.predictor.test_commands import ok, trainer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ("--cpus", "2", "--num-envs", "4", "--steps", "256", "--eval-episodes", "2",
        "--checkpoint-every", "1")


def test_rllib_train_exports_a_policy_eval_rl_reads_and_resumes(tmp_path):
    from ray.rllib.core.rl_module.rl_module import RLModule

    from ml.rl.policy import ExportedPolicy, PPOPolicy
    from ml.rl.rllib import _FILTER_STATE, _running_stat

    home = tmp_path / "home"
    first = ok(trainer(home, "rllib_train", "--epochs", "1", *TINY))
    save_dir = home / "models" / "rllib_checkpoints"
    exported = save_dir / "rllib_agent.pt"
    assert first["checkpoint"] == str(exported) and exported.is_file()
    assert first["epochs"] == 1 and first["env_runners"] == 1 and first["global_step"] >= 256
    assert {"eval_reward", "hpa_reward", "sps"} <= set(first)

    # The .pt computes exactly what the RLlib module computes on RLlib-normalized observations.
    checkpoint = save_dir / "checkpoint_000001"
    module = RLModule.from_checkpoint(checkpoint / "learner_group/learner/rl_module/default_policy")
    stat = _running_stat(pickle.loads((checkpoint / _FILTER_STATE).read_bytes()))
    policy = PPOPolicy.from_checkpoint(exported)
    obs = (np.asarray(stat.mean) + np.random.default_rng(0).normal(size=(32, 13))
           * (np.asarray(stat.std) + 1.0)).astype(np.float32)
    normalized = np.clip((obs - stat.mean) / (stat.std + 1e-8), -10, 10).astype(np.float32)
    with torch.no_grad():
        theirs = module.forward_inference({"obs": torch.from_numpy(normalized)})["action_dist_inputs"]
        ours = ExportedPolicy(policy.agent, policy.obs_rms)(torch.from_numpy(obs))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)

    evaluated = ok(trainer(home, "eval_rl", "--checkpoint", exported, "--episodes", "2",
                           "--rule", "erlang_c"))
    assert set(evaluated["policies"]) == {"ppo", "hpa", "erlang_c"}  # HPA always
    assert evaluated["avg_reward"] == pytest.approx(evaluated["policies"]["ppo"]["reward"]["mean"])

    # A policy-only checkpoint is not something train_rl can resume.
    refused = trainer(home, "train_rl", "--checkpoint", exported, "--epochs", "1")
    assert refused.returncode == 1 and "written by rllib" in refused.stderr

    resumed = trainer(home, "rllib_train", "--epochs", "2", *TINY)
    assert ok(resumed)["epochs"] == 2
    assert "resuming" in resumed.stderr and "iter 2/2" in resumed.stderr
    assert sorted(p.name for p in save_dir.glob("checkpoint_*")) == ["checkpoint_000001",
                                                                     "checkpoint_000002"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", [("rllib_train", "--epochs", "1"), ("tune", "--samples", "1")])
def test_ray_address_that_nothing_answers_is_a_quick_clear_error(tmp_path, command):
    address = f"127.0.0.1:{_closed_port()}"
    # A deadline, not a timing: ray.init alone retries for minutes, and a hang raises
    # subprocess.TimeoutExpired here.
    result = trainer(tmp_path / "home", *command, env={"RAY_ADDRESS": address}, timeout=120)
    assert result.returncode == 1
    assert f"no Ray cluster answers at {address}" in result.stderr
    assert "Traceback" not in result.stderr


def test_probe_rejects_malformed_addresses():
    from ml.rl.ray_runtime import RayConnectionError, probe

    with pytest.raises(RayConnectionError, match="not host:port"):
        probe("just-a-host")
    probe("auto")  # left to ray.init, which finds a running cluster or says so
