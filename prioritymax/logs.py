"""Logging, configured once per process.

Library code only calls ``logging.getLogger(__name__)``; entry points (the CLI, the API app,
Dagster code locations) call :func:`configure_logging`. Logs go to stderr so that commands which
print JSON keep stdout clean. ``ml.*`` loggers follow PRIORITYMAX_TRAINER_LOG, ``api.*`` loggers
follow PRIORITYMAX_CONFIG_LOG_LEVEL, everything of ours else logs at INFO.
"""

from __future__ import annotations

import logging
import logging.config

from prioritymax.settings import Settings, get_settings

_configured = False


def configure_logging(settings: Settings | None = None, *, force: bool = False) -> None:
    """Install handlers and levels; later calls are no-ops unless ``force``."""
    global _configured
    if _configured and not force:
        return
    settings = settings or get_settings()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": "plain",
                },
            },
            "loggers": {
                "ml": {"level": settings.trainer_log},
                "api": {"level": settings.config_log_level},
                "orchestration": {"level": "INFO"},
                "dashboard": {"level": "INFO"},
                "prioritymax": {"level": "INFO"},
            },
            "root": {"level": "WARNING", "handlers": ["stderr"]},
        }
    )
    _configured = True
