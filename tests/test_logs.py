import logging

from prioritymax.logs import configure_logging
from prioritymax.settings import Settings


def test_levels_follow_the_seed_variables(monkeypatch):
    monkeypatch.setenv("PRIORITYMAX_TRAINER_LOG", "debug")
    monkeypatch.setenv("PRIORITYMAX_CONFIG_LOG_LEVEL", "ERROR")
    configure_logging(Settings(), force=True)
    try:
        assert logging.getLogger("ml.sim.core").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("api.config").getEffectiveLevel() == logging.ERROR
    finally:
        configure_logging(Settings(), force=True)
