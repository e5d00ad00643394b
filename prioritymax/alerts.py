"""Slack alerts, in one place for every face: the config plane, the workflows plane and Dagster's
run-failure sensor all post through :func:`post_slack`.

Posting is best effort. With SLACK_WEBHOOK_URL unset nothing is sent; a post that fails is logged
and never raised, so an alert about a problem cannot become a second problem.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from prioritymax.settings import Settings, get_settings

log = logging.getLogger(__name__)


def post_slack(text: str, *, source: str, settings: Settings | None = None, timeout: float = 5.0) -> bool:
    """Post ``[prioritymax <source>] <text>`` to the webhook; True when Slack took it."""
    settings = settings or get_settings()
    if not settings.slack_webhook_url:
        return False
    try:
        response = httpx.post(settings.slack_webhook_url.get_secret_value(),
                              json={"text": f"[prioritymax {source}] {text}"}, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as error:
        log.warning("slack alert failed: %s", error)
        return False
    return True


async def post_slack_async(text: str, *, source: str, settings: Settings | None = None) -> bool:
    """:func:`post_slack` from a coroutine (the API's loops and routes), off the event loop."""
    settings = settings or get_settings()
    if not settings.slack_webhook_url:
        return False
    return await asyncio.to_thread(post_slack, text, source=source, settings=settings)
