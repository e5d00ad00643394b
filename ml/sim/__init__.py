"""The PriorityMax queue simulator: traffic sources, the gymnasium env and its vectorized twin,
baseline autoscaling policies, policy evaluation and the queue-metrics dataset builder."""

import gymnasium as gym

from ml.sim.config import SimConfig
from ml.sim.core import OBS_FIELDS
from ml.sim.env import PriorityMaxSimEnv
from ml.sim.traffic import RateSeries, SyntheticProfile, TraceError, load_trace, synthetic_series
from ml.sim.vec_env import PriorityMaxVecEnv

__all__ = [
    "OBS_FIELDS",
    "PriorityMaxSimEnv",
    "PriorityMaxVecEnv",
    "RateSeries",
    "SimConfig",
    "SyntheticProfile",
    "TraceError",
    "load_trace",
    "synthetic_series",
]

if "PriorityMaxSim-v0" not in gym.registry:
    gym.register(
        id="PriorityMaxSim-v0",
        entry_point="ml.sim.env:PriorityMaxSimEnv",
        vector_entry_point="ml.sim.vec_env:PriorityMaxVecEnv",
    )
