"""Queue-length predictor: DuckDB features, LightGBM / RandomForest models, canary gate, tuning."""
