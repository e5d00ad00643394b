"""Reinforcement learning for the autoscaler: PPO on the vectorized simulator, its evaluation."""
