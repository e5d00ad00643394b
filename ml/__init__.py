"""The ML core: queue simulator, PPO, predictor, Ray RLlib/Tune, Optuna, registry."""
