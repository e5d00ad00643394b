"""The model versions an autoscaler worker serves, loaded from the MLflow registry; promotion
(``ml.registry.promote``) loads a version the same way before it moves the alias, so a version
no worker could serve never becomes the champion.

A loaded version is immutable: the worker swaps a whole :class:`ModelSet` (one attribute
assignment, atomic under the GIL), so a decision reads one consistent pair of versions however a
swap interleaves with it, and never waits for a load. Loading (download the version's
``checkpoint`` artifact, read it, act once on a neutral observation) happens before the swap, on
the worker's loader thread; a version that fails any of it is never served.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml import registry
from ml.sim.config import SimConfig

POLICY, PREDICTOR = "rl_agent", "predictor"
CHECKPOINT_PATTERNS = registry.CHECKPOINT_PATTERNS  # {POLICY: "*.pt", PREDICTOR: "*.pkl"}


class ModelLoadError(RuntimeError):
    """A version that cannot be served: not registered, no checkpoint, unreadable, or broken."""


@dataclass(frozen=True)
class ServedPolicy:
    """One rl_agent version: its PPO policy and the simulator configuration it was trained on
    (the classes, units and bounds that turn a reading into its observation)."""

    version: str
    config: SimConfig
    policy: Any  # ml.rl.policy.PPOPolicy (torch is imported only when a policy loads)
    loaded_at: float
    source: str

    def act(self, observation: np.ndarray, rng: np.random.Generator) -> tuple[int, float]:
        """The action sampled as in training and evaluation (a greedy pick is another, worse
        policy: see ``ml/rl/policy.py``), with its probability."""
        normalized = self.policy.obs_rms.normalize(observation[None, :])
        actions, log_probs, _ = self.policy.rollout.act(normalized, rng)
        return int(actions[0]), float(np.exp(log_probs[0]))


@dataclass(frozen=True)
class ServedPredictor:
    version: str
    model: Any  # ml.predictor.model.PredictorModel
    loaded_at: float
    source: str


@dataclass(frozen=True)
class ModelSet:
    """What the worker serves now; replaced whole, never changed in place."""

    policy: ServedPolicy | None = None
    predictor: ServedPredictor | None = None
    #: The registry's rl_agent challenger, loaded beside the champion: it decides in the shadow of
    #: every reading and is swapped in by a pointer flip if it is promoted.
    challenger: ServedPolicy | None = None

    def version(self, name: str) -> str | None:
        served = self.policy if name == POLICY else self.predictor
        return None if served is None else served.version

    def with_model(self, served: ServedPolicy | ServedPredictor) -> ModelSet:
        field = "policy" if isinstance(served, ServedPolicy) else "predictor"
        return dataclasses.replace(self, **{field: served})


    def with_challenger(self, served: ServedPolicy | None) -> ModelSet:
        return dataclasses.replace(self, challenger=served)

    def promoting_challenger(self, source: str) -> ModelSet:
        """The challenger as the policy in use (nothing loads: the promotion is this pointer)."""
        assert self.challenger is not None
        return dataclasses.replace(self, policy=dataclasses.replace(self.challenger, source=source),
                                   challenger=None)


def champion(name: str) -> str | None:
    """The registry's champion version of ``name``; None without a registry or a champion."""
    found = registry.champion_version(name)
    return None if found is None else str(found.version)


def challenger(name: str) -> str | None:
    """The registry's challenger version of ``name``; None without a registry or a challenger."""
    found = registry.challenger_version(name)
    return None if found is None else str(found.version)


def load(name: str, version: str, source: str) -> ServedPolicy | ServedPredictor:
    """Download and load one version, checked by use; a :class:`ModelLoadError` says why not."""
    with tempfile.TemporaryDirectory(prefix=f"pmx-{name}-v{version}-") as folder:
        try:
            path = registry.version_checkpoint(name, version, CHECKPOINT_PATTERNS[name], Path(folder))
        except registry.RegistryError as error:
            raise ModelLoadError(str(error)) from None
        except Exception as error:  # the tracking server down, an artifact store error
            raise ModelLoadError(f"{name} version {version}: cannot download its checkpoint "
                                 f"({type(error).__name__}: {error})") from None
        if name == POLICY:
            return _load_policy(path, version, source)
        return _load_predictor(path, version, source)


def _load_policy(path: Path, version: str, source: str) -> ServedPolicy:
    from ml.rl.policy import PPOPolicy
    from ml.rl.ppo import CheckpointError, load_checkpoint
    from ml.sim.core import observation_fields

    try:
        payload = load_checkpoint(path)
        config = SimConfig.from_dict(payload["sim_config"])
        policy = PPOPolicy.from_payload(payload)
        served = ServedPolicy(version, config, policy, time.time(), source)
        if policy.control is None:
            probe = np.zeros(len(observation_fields(config)), dtype=np.float32)
            action, _ = served.act(probe, np.random.default_rng(0))
        else:  # a residual policy acts on a reading: a quiet pool of one worker
            from ml.rl.residual import reading_info

            queue = np.zeros(config.num_classes)
            action = policy.decide_residual(reading_info(queue, 0.5, 0.5, 1.0, 0.0, 0.5))[0]
    except CheckpointError as error:
        raise ModelLoadError(f"{POLICY} version {version}: {error}") from None
    except Exception as error:  # a payload of the right kind with wrong contents
        raise ModelLoadError(f"{POLICY} version {version}: not a usable policy "
                             f"({type(error).__name__}: {error})") from None
    if not 0 <= action < len(config.scale_deltas):
        raise ModelLoadError(f"{POLICY} version {version}: its actions do not match its scale_deltas")
    return served


def _load_predictor(path: Path, version: str, source: str) -> ServedPredictor:
    from ml.predictor.model import CheckpointError, PredictorModel

    try:
        model = PredictorModel.load(path)
    except CheckpointError as error:
        raise ModelLoadError(f"{PREDICTOR} version {version}: {error}") from None
    return ServedPredictor(version, model, time.time(), source)
