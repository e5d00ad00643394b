"""Writing a model's live version to the control plane over HTTP: what makes a promotion live.

A promotion moves the registry's ``champion`` alias; workers follow the control plane, so the new
version must also be written there (``ml.registry.CONFIG_KEYS``). Dagster's promote step
(``orchestration/resources.py``) and ``pmx models promote`` / ``rollback`` write through here; the
admin API, which is the control plane, writes in-process.

No control plane listening is not an error: the registry is the truth, and the publication says the
version was not published. A control plane that answers and refuses (HTTP 4xx/5xx) is an error.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Publication:
    """What became of one config write: ``status`` is the line shown to people."""

    published: bool
    status: str
    url: str
    key: str
    value: Any
    version: int | None = None


class ControlPlaneError(RuntimeError):
    """The control plane answered and refused the write (a bad token, a bad key...)."""


def publish(url: str, token: str | None, key: str, value: Any, *, comment: str,
            timeout_s: float = 5.0) -> Publication:
    """``POST {url}/config {key, value, comment}`` with ``token`` as the bearer."""
    import httpx

    url = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(f"{url}/config", json={"key": key, "value": value, "comment": comment},
                              headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        status = f"not published (the control plane at {url} did not answer in {timeout_s:g} s)"
        log.warning("%s: %s", key, status)
        return Publication(False, status, url, key, value)
    except httpx.TransportError:
        status = f"not published (no control plane at {url})"
        log.warning("%s: %s", key, status)
        return Publication(False, status, url, key, value)
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise ControlPlaneError(f"the control plane at {url} refused {key}={value!r}: HTTP "
                                f"{response.status_code} {detail}")
    version = int(response.json()["version"])
    return Publication(True, f"published {key}={value!r} at {url} (config version {version})", url,
                       key, value, version)
