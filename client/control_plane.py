"""A Python client of the config control plane: a local snapshot kept live over the WebSocket.

Why a local snapshot: a worker asks for config values and flags on hot paths (per task, per
decision), so a read must be a dict lookup, not a request, and must keep answering when the
control plane is down. The client therefore

* bootstraps from ``GET /config/snapshot`` (every current item at one revision),
* follows ``/config/ws/config?since=<revision>`` on a background thread, applying each change in
  revision order - anything at or below the revision it has is a duplicate and ignored, anything
  beyond the next one is a gap (events pruned by cleanup, a truncated replay) and is repaired
  by fetching the snapshot again,
* reconnects with exponential backoff and resumes with ``?since=`` so it gets exactly what it
  missed, and
* while disconnected keeps serving its last snapshot, flagged :attr:`ConfigClient.stale`
  until the replay of what it missed has been applied.

A server whose history is shorter than the client's (its store was replaced or restored) is
taken as the truth: the client adopts its snapshot, with a warning in the log.

Reads take no lock: the background thread is the only writer; a single change is one dict
assignment (atomic under the GIL) and a resync swaps in a whole new dict, so a reader sees each
slot either before or after a change, never half of one. Flag answers that do not depend on
the context are memoised until the next flag change (see :meth:`ConfigClient.flag`). Values
are returned as stored, not copied: treat them as read-only. Secret values are masked
(``"********"``): the control plane never sends plaintext to clients.

Usage from plain synchronous code::

    with ConfigClient("http://127.0.0.1:8000", token) as config:
        config.wait_ready(10)
        limit = config.get("queue.limit", tenant="org:acme", default=100)
        if config.is_enabled("new_policy", tenant="org:acme", context={"worker": worker_id}):
            ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from client.flags import FlagResult, evaluate

log = logging.getLogger("client.control_plane")

CONFIG, FLAG = "config", "flag"
#: The most changes the server replays after ``?since=`` (``ConfigService.changes_since``); a
#: client further behind takes a fresh snapshot instead of a truncated replay.
REPLAY_LIMIT = 10_000
#: At most this many memoised flag answers (distinct flag and tenant pairs asked about).
FLAG_CACHE_LIMIT = 100_000

Item = dict[str, Any]  # a public item: kind, key, tenant, namespace, value, is_secret, version, ...
Slot = tuple[str, str, str | None]  # (kind, key, tenant or None for the global layer)
ChangeCallback = Callable[[dict[str, Any]], None]
StateCallback = Callable[[str], None]

STARTING, READY, STALE, ERROR, CLOSED = "starting", "ready", "stale", "error", "closed"


def _tenant(tenant: str | None) -> str | None:
    """``None``, ``""`` and ``"global"`` all name the global layer, as on the server."""
    return None if not tenant or tenant == "global" else tenant


class ConfigClient:
    """Config values and feature flags of one control plane, served from a live local snapshot.

    ``url`` is the API's base (``http://host:port``); ``token`` any token of the viewer role or
    above. The background thread starts at once (``start=False`` defers it to :meth:`start`);
    :meth:`wait_ready` blocks until the first snapshot is loaded. Callbacks registered with
    :meth:`on_change` and :meth:`on_state` run on that thread, so keep them short.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 5.0,
                 backoff: tuple[float, float] = (0.2, 10.0), ping_interval: float | None = 10.0,
                 start: bool = True) -> None:
        self.url = url.rstrip("/")
        base = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        self.ws_url = f"{base}/config/ws/config"
        self.timeout = timeout
        self.backoff = backoff
        self.ping_interval = ping_interval
        self._headers = {"Authorization": f"Bearer {token}"}
        self._items: dict[Slot, dict[str, Any]] = {}
        self._flag_cache: dict[tuple[str, str | None], FlagResult] = {}
        self._revision = 0
        self._loaded = threading.Event()
        self._connected = False
        self._stale = False
        self._state = STARTING
        self._closing = threading.Event()
        self._write_lock = threading.Lock()  # writers and copiers only; reads never take it
        self._change_callbacks: tuple[ChangeCallback, ...] = ()
        self._state_callbacks: tuple[StateCallback, ...] = ()
        self._ws: ClientConnection | None = None
        self._thread: threading.Thread | None = None
        self._attempt = 0  # failed tries since the last live connection: the backoff's exponent
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)
        self.last_error: str | None = None
        #: Counters for operators and tests: snapshots fetched, connections opened, changes
        #: applied, gaps found (each repaired by a snapshot).
        self.stats = {"snapshots": 0, "connections": 0, "changes": 0, "gaps": 0}
        if start:
            self.start()

    # ------------------------------------------------------------------------------- reads
    def get(self, key: str, tenant: str | None = None, default: Any = None) -> Any:
        """A config value as ``tenant`` sees it: its own override, else the global one."""
        item, _ = self.lookup(CONFIG, key, tenant)
        return default if item is None else item["value"]

    def lookup(self, kind: str, key: str, tenant: str | None = None) -> tuple[Item | None, str | None]:
        """The public item ``tenant`` sees and its layer (``"tenant"``/``"global"``), or (None, None)."""
        items = self._items
        tenant = _tenant(tenant)
        if tenant is not None:
            item = items.get((kind, key, tenant))
            if item is not None:
                return item, "tenant"
        item = items.get((kind, key, None))
        return (item, "global") if item is not None else (None, None)

    def flag(self, name: str, tenant: str | None = None, context: dict[str, Any] | None = None) -> FlagResult:
        """Evaluate a flag exactly as the server does (:func:`client.flags.evaluate`).

        A result that does not depend on the context (anything but a rollout) is memoised per
        (flag, tenant) until the next flag change: building a ``FlagResult`` costs
        more than everything else here. The cache is read before the snapshot and the writer
        replaces it after changing the snapshot, so an answer computed from an older snapshot
        only ever lands in a cache that has already been discarded."""
        if not tenant or tenant == "global":
            tenant = None
        cache = self._flag_cache
        result = cache.get((name, tenant))
        if result is not None:
            return result
        items = self._items
        result = evaluate(name, items.get((FLAG, name, tenant)) if tenant else None,
                          items.get((FLAG, name, None)), tenant, context)
        if result.reason != "SPLIT" and result.error is None and len(cache) < FLAG_CACHE_LIMIT:
            cache[(name, tenant)] = result
        return result

    def is_enabled(self, name: str, tenant: str | None = None, context: dict[str, Any] | None = None,
                   default: bool = False) -> bool:
        """Whether the flag is on; ``default`` when no layer defines it (or nothing is loaded yet)."""
        result = self.flag(name, tenant, context)
        return default if result.layer is None else result.enabled

    def items(self) -> list[dict[str, Any]]:
        """A copy of every current item (for listing; the read methods above do not copy)."""
        with self._write_lock:
            return list(self._items.values())

    # ------------------------------------------------------------------------------- state
    @property
    def revision(self) -> int:
        """The revision of the last change applied (0 before the first snapshot)."""
        return self._revision

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    @property
    def connected(self) -> bool:
        """Subscribed to live changes right now."""
        return self._connected

    @property
    def stale(self) -> bool:
        """Serving the last snapshot while the control plane cannot be reached."""
        return self._stale

    @property
    def state(self) -> str:
        """``starting`` (nothing yet), ``ready``, ``stale``, ``error`` (no snapshot could be had
        yet) or ``closed``."""
        return self._state

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the first snapshot is loaded; False if ``timeout`` passes first."""
        return self._loaded.wait(timeout)

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(message)`` after each change is applied; returns an unsubscribe function.

        ``message`` is the server's change message (``type``, ``kind``, ``key``, ``tenant``,
        ``version``, ``revision``, ``value``, ``item``); a slot that a resync changed comes as
        ``type == "resync"`` with the same fields."""
        return self._subscribe("_change_callbacks", callback)

    def on_state(self, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback(state)`` when :attr:`state` changes; returns an unsubscribe function."""
        return self._subscribe("_state_callbacks", callback)

    def _subscribe(self, attribute: str, callback: Callable) -> Callable[[], None]:
        # Copy-on-write tuples: the background thread iterates them without a lock.
        with self._write_lock:
            setattr(self, attribute, (*getattr(self, attribute), callback))

        def unsubscribe() -> None:
            with self._write_lock:
                setattr(self, attribute, tuple(c for c in getattr(self, attribute) if c is not callback))

        return unsubscribe

    # --------------------------------------------------------------------------- lifecycle
    def start(self) -> ConfigClient:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pmx-config-client", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop following the control plane (idempotent); the snapshot stays readable."""
        self._closing.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.timeout * 2 + 1)
        self._http.close()
        self._connected = False
        self._set_state(CLOSED)

    def __enter__(self) -> ConfigClient:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the background thread
    def _run(self) -> None:
        """Snapshot if needed, then follow the WebSocket; on any failure back off and resume."""
        while not self._closing.is_set():
            try:
                if not self.loaded:
                    self._resync()
                self._follow()
            except Exception as error:  # any failure means: back off, then resume with ?since=
                if self._closing.is_set():
                    break
                self.last_error = f"{type(error).__name__}: {error}"
                log.debug("config client: %s", self.last_error)
            self._attempt += 1  # reset by a connection that got live
            self._connected = False
            self._ws = None
            if self._closing.is_set():
                break
            if self.loaded:
                self._stale = True
                self._set_state(STALE)
            else:
                self._set_state(ERROR)
            low, high = self.backoff
            delay = min(high, low * 2 ** min(self._attempt - 1, 30))
            self._closing.wait(random.uniform(delay / 2, delay))  # jitter: replicas don't stampede

    def _follow(self) -> None:
        """One WebSocket connection: hello, then every change after our revision, in order."""
        with connect(f"{self.ws_url}?since={self._revision}", additional_headers=self._headers,
                     open_timeout=self.timeout, close_timeout=1.0, ping_interval=self.ping_interval,
                     ping_timeout=self.ping_interval) as ws:
            self._ws = ws
            if self._closing.is_set():
                return
            hello = json.loads(ws.recv(timeout=self.timeout))
            if hello.get("type") != "hello":
                raise ConnectionError(f"expected hello, got {hello.get('type')!r}")
            self.stats["connections"] += 1
            server_revision = hello["revision"]
            if server_revision < self._revision:
                # The server's history is shorter than ours: its store was replaced (a restore,
                # a new data home). Its state is the truth now, older or not.
                log.warning("config server is at revision %s, behind ours (%s); resyncing",
                            server_revision, self._revision)
                self._resync(allow_older=True)
            elif server_revision - self._revision > REPLAY_LIMIT:
                self._resync()  # the replay would be truncated; skip it
            # Live once the replay of what we missed is applied; until then a reader still
            # gets the stale snapshot, and a replay that never comes is replaced by a snapshot.
            while True:
                if not self._connected and self._revision >= server_revision:
                    self._mark_connected()
                try:
                    raw = ws.recv(timeout=None if self._connected else self.timeout)
                except TimeoutError:
                    self._resync()
                    continue
                self._apply(json.loads(raw))

    def _mark_connected(self) -> None:
        self._connected = True
        self._stale = False
        self._attempt = 0
        self.last_error = None
        self._set_state(READY)

    def _apply(self, message: dict[str, Any]) -> None:
        revision = message["revision"]
        if revision <= self._revision:
            return  # a duplicate: a replay overlapping a snapshot, or an older replica
        if revision != self._revision + 1:
            self.stats["gaps"] += 1
            log.info("config client: gap from revision %s to %s; resyncing", self._revision, revision)
            self._resync()  # the snapshot includes this message, so it is not applied again
            return
        if message["kind"] in (CONFIG, FLAG):
            slot = (message["kind"], message["key"], message["tenant"])
            with self._write_lock:
                if message["item"] is None:
                    self._items.pop(slot, None)
                else:
                    self._items[slot] = message["item"]
                self._revision = revision
            if message["kind"] == FLAG:
                self._flag_cache = {}  # after the snapshot changed: see flag()
        else:
            self._revision = revision
        self.stats["changes"] += 1
        self._notify(message)
        if message["type"] == "system.reload":
            self._resync()  # the server re-read its store: whatever changed there bypassed the log

    def _resync(self, allow_older: bool = False) -> None:
        """Replace the snapshot with the server's; tell the change callbacks what differed."""
        response = self._http.get("/config/snapshot")
        response.raise_for_status()
        body = response.json()
        revision = body["revision"]
        if revision < self._revision and not allow_older:
            return  # a lagging replica answered; ours is newer
        fresh = {(i["kind"], i["key"], i["tenant"]): i for i in body["items"]}
        with self._write_lock:
            previous, self._items, self._revision = self._items, fresh, revision
            self._flag_cache = {}
        self.stats["snapshots"] += 1
        first = not self._loaded.is_set()
        self._loaded.set()
        if first:
            self._set_state(READY)
            return
        for slot in previous.keys() | fresh.keys():
            before, after = previous.get(slot), fresh.get(slot)
            if before != after:
                self._notify({"type": "resync", "kind": slot[0], "key": slot[1], "tenant": slot[2],
                              "version": (after or {}).get("version"), "revision": revision,
                              "value": (after or {}).get("value"), "item": after, "at": None})

    def _notify(self, message: dict[str, Any]) -> None:
        for callback in self._change_callbacks:
            try:
                callback(message)
            except Exception:
                log.exception("config client: on_change callback failed")

    def _set_state(self, state: str) -> None:
        if state == self._state or self._state == CLOSED:
            return
        self._state = state
        for callback in self._state_callbacks:
            try:
                callback(state)
            except Exception:
                log.exception("config client: on_state callback failed")
