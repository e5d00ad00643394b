"""Starting Ray, or joining a cluster, for ``rllib_train`` and ``tune``.

- ``RAY_ADDRESS`` unset: a local Ray instance with the CPUs/GPUs asked for, no dashboard, token
  auth off (``RAY_AUTH_MODE=disabled`` unless set: a private instance on this machine).
- ``RAY_ADDRESS=host:port`` (or ``ray://host:port``, or ``auto``): join that cluster. The address
  is probed first: ``ray.init`` retries an unreachable GCS for minutes, and a typo deserves an
  answer in seconds.
- ``RAY_LOCAL_MODE=true``: Ray 2.60 removed ``ray.init(local_mode=True)`` (it raises). The closest
  supported equivalent is used instead: RLlib samples and learns in the driver process (no env
  runner actors), so a debugger's breakpoints in the simulator or the loss are hit; Tune runs one
  trial at a time.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from prioritymax.settings import get_settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0


class RayConnectionError(RuntimeError):
    """RAY_ADDRESS names a cluster that does not answer."""


def local_mode() -> bool:
    return get_settings().ray_local_mode


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at ``address`` (``host:port`` or ``ray://host:port``)."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise RayConnectionError(f"RAY_ADDRESS={address!r} is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        raise RayConnectionError(
            f"RAY_ADDRESS={address}: no Ray cluster answers at {host}:{port} ({error}); start one "
            "with `ray start --head` or unset RAY_ADDRESS to start Ray on this machine"
        ) from None


@contextmanager
def ray_session(num_cpus: int | None = None, num_gpus: int | None = None) -> Iterator[dict]:
    """Ray started (or joined) for the duration of the block, then shut down (or disconnected).

    Yields what it connected to: ``{"address", "local", "resources"}``."""
    address = get_settings().ray_address
    if address:
        probe(address)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():  # a notebook or a test that started Ray itself: use it, leave it
        yield {"address": "existing", "local": False, "resources": ray.cluster_resources()}
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False)
    try:
        resources = ray.cluster_resources()
        log.info("ray: %s, resources %s", address or "local instance", resources)
        yield {"address": address or "local", "local": not address, "resources": resources}
    finally:
        ray.shutdown()
