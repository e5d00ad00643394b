import pytest

from ml.predictor.tune import SEARCH_SPACE, optuna_predictor

pytestmark = pytest.mark.slow


def test_optuna_study_lives_in_the_data_home_and_resumes(queue_metrics, data_home):
    first = optuna_predictor(queue_metrics, "queue_next_sec", 3, progress=False)
    assert first["trials"] == 3 and first["trials_this_call"] == 3
    assert set(first["best_params"]) == set(SEARCH_SPACE)
    assert first["storage"] == str(data_home / "models" / "optuna.db")
    second = optuna_predictor(queue_metrics, "queue_next_sec", 3, progress=False)
    assert second["study"] == first["study"]
    assert second["trials"] == 6 and second["trials_this_call"] == 3
    assert second["best_score"] <= first["best_score"]
    assert second["completed"] + second["pruned"] == 6


def test_wandb_runs_offline_into_the_data_home(queue_metrics, data_home, monkeypatch):
    from ml.predictor.train import train_predictor

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    _, result = train_predictor(queue_metrics, "queue_next_sec", data_home / "models" / "w.pkl",
                                wandb=True, progress=False)
    runs = list((data_home / "wandb").rglob("offline-run-*"))
    assert runs, "no offline run under the data home"
    assert result["wandb_dir"].startswith(str(data_home / "wandb"))
