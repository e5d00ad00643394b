"""Example task callables for workflow ``python`` nodes (``"workflows.tasks:<name>"``).

Every callable is ``fn(payload, meta) -> JSON-serializable``, run by
:func:`orchestration.workflows.executors.execute`:

* ``payload`` (dict): the run's variables, plus ``upstream``: node_id -> result of each upstream node.
* ``meta`` (dict): ``workflow_id``, ``version``, ``run_id``, ``node_id``, ``attempt`` (1-based),
  ``variables`` (the run's variables) and ``results`` (node_id -> upstream result).

Raising any exception fails the node (and triggers its retry policy, if any).
"""

from __future__ import annotations

import time
from typing import Any


def verify_order(payload: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The seed's example: prints the payload and marks the order verified.

    Raises ValueError when the payload has no ``order_id``.
    """
    print("Verifying order:", payload)  # noqa: T201 - the seed's example prints
    order_id = payload.get("order_id")
    if order_id is None:
        raise ValueError("verify_order: the payload has no order_id")
    return {"verified": True, "order_id": order_id}


def noop(payload: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Do nothing and return ``{}`` (for measuring per-node overhead)."""
    return {}


def fail(payload: dict[str, Any], meta: dict[str, Any]) -> None:
    """Always fail with RuntimeError (for tests); the message names ``payload["message"]`` if given."""
    raise RuntimeError(payload.get("message", f"node {meta.get('node_id', '?')} failed on purpose"))


def flaky(payload: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Fail while ``meta["attempt"] <= payload.get("fail_times", 1)``, then succeed (retry tests)."""
    attempt = int(meta.get("attempt", 1))
    fail_times = int(payload.get("fail_times", 1))
    if attempt <= fail_times:
        raise RuntimeError(f"flaky: attempt {attempt} of {fail_times} planned failures")
    return {"attempt": attempt}


def sleep(payload: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``payload.get("seconds", 1)`` seconds (timeout and cancel tests)."""
    seconds = float(payload.get("seconds", 1))
    time.sleep(seconds)
    return {"slept": seconds}


def echo(payload: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Return what the node received: ``{"payload": payload, "node_id": meta["node_id"]}``."""
    return {"payload": payload, "node_id": meta["node_id"]}
