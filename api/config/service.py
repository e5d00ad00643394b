"""The config control plane's logic, apart from HTTP: versioned writes, tenant resolution, flags,
secrets, rotation, verification, cleanup, backups.

Every change is one transaction that writes the new version, updates the current item and
appends an event whose autoincrement ``revision`` orders it among all changes of all replicas;
an audit line follows the commit (and is rebuilt from those rows if the process died before
writing it: ``api.config.audit``). Readers use :attr:`ConfigService.snapshot`, the public view of
every current item, which :meth:`ConfigService.catch_up` advances from the event log in revision
order (after each local write, on a poke from another replica, or on a timer), so a replica only
ever moves forward through the same sequence of states. Secret values never leave this module
in plaintext: the snapshot, events, audit lines and backups carry :data:`MASK` or ciphertext.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from api.config import audit as audit_log
from api.config.keyring import Keyring
from client import flags
from prioritymax.db import GLOBAL, config_events, config_items, config_versions
from prioritymax.files import AppendLog

MASK = "********"
MAX_VALUE_BYTES = 64 * 1024
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
TENANT_PATTERN = re.compile(r"^org:[A-Za-z0-9_\-]{1,64}$")
#: Names the router uses below /config/ for its own routes; not usable as keys.
RESERVED = {"secrets", "features", "ws", "reload", "metrics", "health", "status",
            "rotate_fernet_key", "cleanup", "verify", "backup", "snapshot", "resolve", "events", "batch"}
CONFIG, FLAG = "config", "flag"
log = logging.getLogger("api.config")


class ConfigError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ConfigError):
    status = 404


class Conflict(ConfigError):
    status = 409


class Invalid(ConfigError):
    status = 422


class TooLarge(ConfigError):
    status = 413


@dataclass(frozen=True)
class Refusal:
    """One item of a batch that was not written, and why (its ConfigError's status and message)."""

    index: int
    key: str
    tenant: str | None
    status: int
    detail: str  # the error's message; named as the response's field


class BatchRefused(ConfigError):
    """An atomic batch with refused items: nothing of it was written. The status is the items'
    common one (409, 413, 422, 404), or 422 when they differ."""

    def __init__(self, refused: list[Refusal], total: int) -> None:
        statuses = {refusal.status for refusal in refused}
        self.status = statuses.pop() if len(statuses) == 1 else 422
        super().__init__(f"{len(refused)} of the batch's {total} items refused; nothing was written")
        self.refused = refused


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key) or ".." in key:
        raise Invalid(f"invalid key {key!r}: 1-200 characters of letters, digits, '_', '-', '.', "
                      "starting with a letter, digit or '_', without '..'")
    if key in RESERVED:
        raise Invalid(f"key {key!r} is reserved for a route of /config")
    return key


def check_tenant(tenant: str | None) -> str:
    """The stored form of a tenant: ``org:<id>``, or "" for the global layer."""
    if tenant in (None, "", "global"):
        return GLOBAL
    if not TENANT_PATTERN.match(tenant):
        raise Invalid(f"invalid tenant {tenant!r}: expected org:<id> (letters, digits, '_', '-')")
    return tenant


def namespace_of(key: str, namespace: str | None) -> str:
    if namespace is not None:
        if not KEY_PATTERN.match(namespace) or ".." in namespace:
            raise Invalid(f"invalid namespace {namespace!r}")
        return namespace
    return key.split(".", 1)[0] if "." in key else "default"


def public(row: Any) -> dict[str, Any]:
    """An item as every reader sees it: a secret's value is masked."""
    return {
        "kind": row.kind, "key": row.key, "tenant": row.tenant or None, "namespace": row.namespace,
        "value": MASK if row.is_secret else row.value, "is_secret": bool(row.is_secret),
        "version": row.version, "updated_at": row.updated_at, "updated_by": row.updated_by,
        "comment": row.comment,
    }


@dataclass(frozen=True)
class Change:
    """One committed change, as broadcast: ``{type, key, tenant, version, revision, value}``."""

    revision: int
    type: str
    kind: str
    key: str
    tenant: str | None
    version: int | None
    item: dict[str, Any] | None  # the public item after the change; None when deleted
    at: float

    def message(self) -> dict[str, Any]:
        return {"type": self.type, "kind": self.kind, "key": self.key, "tenant": self.tenant,
                "version": self.version, "revision": self.revision,
                "value": self.item["value"] if self.item else None, "item": self.item, "at": self.at}


class ConfigService:
    def __init__(self, engine: Engine, keyring: Keyring, audit_path: Path,
                 reader: Engine | None = None) -> None:
        #: Every write's transaction (on SQLite, BEGIN IMMEDIATE: the write lock up front).
        self.engine = engine
        #: Every read of the store: :func:`prioritymax.db.reader_for` (on SQLite, a deferred BEGIN, so a
        #: read never waits for nor holds up a writer); the writers' engine when not given.
        self.reader = reader or engine
        self.keyring = keyring
        self.audit_path = Path(audit_path)
        self._audit = AppendLog(self.audit_path)
        #: The writes waiting for the next group commit, and the event loop they wait on.
        self._group: tuple[asyncio.AbstractEventLoop, list] | None = None
        self.snapshot: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.revision = 0
        self._lock = threading.Lock()
        #: Called with each batch of changes catch_up applies, in revision order (the hub).
        self.listeners: list[Callable[[list[Change]], None]] = []
        #: Called with the revision of each change this process commits, before it catches up
        #: (the Redis fan-out pokes the other replicas); a failing hook never fails the write.
        self.on_commit: list[Callable[[int], None]] = []
        self.load()

    # ------------------------------------------------------------------ the readers' snapshot
    def load(self) -> int:
        """(Re)build the snapshot from the items table; returns the number of items."""
        with self.reader.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for both reads; under READ COMMITTED a commit between them would
                # leave an item missing a change whose revision we then count as applied.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            rows = conn.execute(select(config_items)).all()
            revision = conn.execute(select(func.max(config_events.c.revision))).scalar() or 0
        with self._lock:
            self.snapshot = {(r.kind, r.key, r.tenant): public(r) for r in rows}
            self.revision = revision
        return len(rows)

    def catch_up(self) -> list[Change]:
        """Apply the changes committed since :attr:`revision`, in order; return them."""
        return self._advance()

    def _advance(self, known: Change | None = None) -> list[Change]:
        """Apply ``known`` (a change this process just committed) when it is the next revision,
        else read every change after :attr:`revision` from the log; then tell the listeners."""
        with self._lock:
            if known is not None and known.revision == self.revision + 1:
                changes = [known]
            else:
                changes = self.changes_since(self.revision)
            for change in changes:
                slot = (change.kind, change.key, change.tenant or GLOBAL)
                if change.item is None:
                    self.snapshot.pop(slot, None)
                elif change.kind in (CONFIG, FLAG):
                    self.snapshot[slot] = change.item
                self.revision = change.revision
        if changes:
            for listener in self.listeners:
                listener(changes)
        return changes

    def changes_since(self, revision: int, limit: int = 10_000) -> list[Change]:
        with self.reader.connect() as conn:
            rows = conn.execute(select(config_events).where(config_events.c.revision > revision)
                                .order_by(config_events.c.revision).limit(limit)).all()
        return [_change(r) for r in rows]

    def get(self, kind: str, key: str, tenant: str | None) -> dict[str, Any]:
        item = self.snapshot.get((kind, key, check_tenant(tenant)))
        if item is None:
            where = f" for tenant {tenant}" if check_tenant(tenant) else ""
            raise NotFound(f"no {kind} {key!r}{where}")
        return item

    def list(self, kind: str, prefix: str | None = None, namespace: str | None = None,
             tenant: str | None = None, secrets: bool | None = None) -> list[dict[str, Any]]:
        wanted = None if tenant is None else check_tenant(tenant)
        items = [item for (k, key, t), item in self.snapshot.items()
                 if k == kind and (prefix is None or key.startswith(prefix))
                 and (namespace is None or item["namespace"] == namespace)
                 and (wanted is None or t == wanted)
                 and (secrets is None or item["is_secret"] == secrets)]
        return sorted(items, key=lambda i: (i["key"], i["tenant"] or ""))

    def resolve(self, kind: str, key: str, tenant: str | None) -> dict[str, Any]:
        """The value a tenant sees: its own override, else the global one."""
        stored = check_tenant(tenant)
        chain = [stored, GLOBAL] if stored else [GLOBAL]
        for layer_tenant in chain:
            item = self.snapshot.get((kind, key, layer_tenant))
            if item is not None:
                return {"key": key, "tenant": stored or None, "value": item["value"],
                        "layer": "tenant" if layer_tenant else "global", "version": item["version"],
                        "is_secret": item["is_secret"],
                        "chain": [f"tenant:{t}" if t else "global" for t in chain]}
        raise NotFound(f"no {kind} {key!r} for {'tenant ' + stored if stored else 'the global layer'}")

    def evaluate_flag(self, name: str, tenant: str | None,
                      context: dict[str, Any] | None = None) -> flags.FlagResult:
        stored = check_tenant(tenant)
        return flags.evaluate(name, self.snapshot.get((FLAG, name, stored)) if stored else None,
                              self.snapshot.get((FLAG, name, GLOBAL)), stored or None, context)

    def versions(self, kind: str, key: str, tenant: str | None) -> list[dict[str, Any]]:
        stored = check_tenant(tenant)
        with self.reader.connect() as conn:
            rows = conn.execute(select(config_versions).where(
                config_versions.c.kind == kind, config_versions.c.key == key,
                config_versions.c.tenant == stored).order_by(config_versions.c.version)).all()
        if not rows:
            raise NotFound(f"no versions of {kind} {key!r}")
        return [{"version": r.version, "value": MASK if r.is_secret else r.value,
                 "is_secret": r.is_secret, "deleted": r.deleted, "actor": r.actor, "at": r.at,
                 "comment": r.comment, "previous_version": r.previous_version,
                 "operation": r.operation} for r in rows]

    # ------------------------------------------------------------------------------ writes
    def set(self, kind: str, key: str, value: Any, *, tenant: str | None = None, actor: str,
            comment: str | None = None, is_secret: bool = False, namespace: str | None = None,
            expected_version: int | None = None, operation: str = "set") -> dict[str, Any]:
        kind, key, stored, options = self._prepare_set(
            kind, key, value, tenant=tenant, actor=actor, comment=comment, is_secret=is_secret,
            namespace=namespace, expected_version=expected_version, operation=operation)
        return self._commit(kind, key, stored, **options)

    async def set_grouped(self, kind: str, key: str, value: Any, **options: Any) -> dict[str, Any]:
        """:meth:`set` (the same keywords) with group commit (SQLite): the writes that arrive while
        the event loop is busy are committed by one transaction, in arrival order, each still its
        own version, event (revision) and audit line, each checked (If-Match, secret-ness) against
        the state the writes before it left. One BEGIN IMMEDIATE/COMMIT, one pooled connection for
        all of them."""
        write = self._prepare_set(kind, key, value, **options)
        loop = asyncio.get_running_loop()
        group = self._group
        if self.engine.dialect.name != "sqlite" or (group is not None and group[0] is not loop):
            kind, key, stored, prepared = write
            return self._commit(kind, key, stored, **prepared)
        if group is None:
            group = self._group = (loop, [])
            loop.call_soon(self._flush_group)
        future = loop.create_future()
        group[1].append((write, future))
        return await future

    def set_many(self, kind: str, items: list[dict[str, Any]], *, actor: str,
                 atomic: bool = True) -> tuple[list[dict[str, Any]], list[Refusal]]:
        """Several plain (non-secret) writes in one transaction, in order: each item (``key``,
        ``value`` and optionally ``tenant``, ``namespace``, ``comment``, ``expected_version``) its
        own version, event (consecutive revisions) and audit line, checked against the state the
        items before it left, exactly as :meth:`set` would write it. Atomic: any refused item
        raises :class:`BatchRefused` listing every refused one, and nothing is written. Otherwise
        the refused items are skipped. Returns the written items (public shape plus ``index``
        and ``revision``) and the refusals."""
        refused: list[Refusal] = []
        prepared = []
        for index, item in enumerate(items):
            try:
                prepared.append((index, self._prepare_set(
                    kind, item["key"], item["value"], tenant=item.get("tenant"), actor=actor,
                    comment=item.get("comment"), namespace=item.get("namespace"),
                    expected_version=item.get("expected_version"))))
            except ConfigError as error:
                refused.append(_refusal(index, item, error))
        applied: list[tuple[int, _Applied]] = []
        if prepared:
            with self._writes() as store:
                for index, (kind_, key, tenant, options) in prepared:
                    try:
                        applied.append((index, self._apply(store, kind_, key, tenant, **options)))
                    except ConfigError as error:  # raised before any statement of this item
                        refused.append(_refusal(index, items[index], error))
                if atomic and refused:  # every item checked, so that all refusals are listed
                    raise BatchRefused(sorted(refused, key=lambda r: r.index), len(items))  # rolls back
        elif atomic and refused:
            raise BatchRefused(refused, len(items))
        written, failure = [], None
        for index, done in applied:
            try:
                item = self._publish(done)
            except Exception as error:  # committed already: publish the others, then tell
                failure = failure or error
                continue
            written.append({**item, "index": index, "revision": done.change.revision})
        if failure is not None:
            raise failure
        return written, sorted(refused, key=lambda r: r.index)

    def _prepare_set(self, kind: str, key: str, value: Any, *, tenant: str | None = None, actor: str,
                     comment: str | None = None, is_secret: bool = False, namespace: str | None = None,
                     expected_version: int | None = None,
                     operation: str = "set") -> tuple[str, str, str, dict[str, Any]]:
        """The checks of :meth:`set` that need no store, and the write's ``_commit``/``_apply``
        arguments: ``(kind, key, stored tenant, options)``."""
        check_key(key)
        stored_tenant = check_tenant(tenant)
        if is_secret:
            if not isinstance(value, str):
                raise Invalid("a secret's value must be a string")
            value = self.keyring.encrypt(value)
        text = json.dumps(value)  # as the store encodes it: the SQLite write path reuses it
        if len(text) > MAX_VALUE_BYTES:
            raise TooLarge(f"value of {len(text)} bytes; the limit is {MAX_VALUE_BYTES}")
        namespace = namespace_of(key, namespace)
        return kind, key, stored_tenant, {
            "value": value, "value_text": text, "deleted": False, "actor": actor, "comment": comment,
            "is_secret": is_secret, "namespace": namespace, "expected_version": expected_version,
            "operation": operation}

    def _flush_group(self) -> None:
        assert self._group is not None
        _, writes = self._group
        self._group = None
        outcomes: list[tuple[_Applied | ConfigError, asyncio.Future]] = []
        try:
            with self._writes() as store:
                for (kind, key, tenant, options), future in writes:
                    try:
                        outcomes.append((self._apply(store, kind, key, tenant, **options), future))
                    except ConfigError as refused:  # raised before any statement of this write
                        outcomes.append((refused, future))
        except Exception:
            # The transaction failed for another reason and nothing of it was committed: commit
            # each write on its own, so that each gets its own outcome.
            for (kind, key, tenant, options), future in writes:
                _settle(future, self._commit, kind, key, tenant, **options)
            return
        for outcome, future in outcomes:
            if isinstance(outcome, ConfigError):
                if not future.done():
                    future.set_exception(outcome)
            else:
                _settle(future, self._publish, outcome)

    def delete(self, kind: str, key: str, *, tenant: str | None = None, actor: str,
               expected_version: int | None = None, comment: str | None = None) -> dict[str, Any]:
        return self._commit(kind, key, check_tenant(tenant), value=None, deleted=True, actor=actor,
                            comment=comment, is_secret=False, namespace=None,
                            expected_version=expected_version, operation="delete")

    def rollback(self, kind: str, key: str, version: int, *, tenant: str | None = None,
                 actor: str, expected_version: int | None = None) -> dict[str, Any]:
        """Write the value of an earlier version as a new version."""
        stored = check_tenant(tenant)
        with self.reader.connect() as conn:
            old = conn.execute(select(config_versions).where(
                config_versions.c.kind == kind, config_versions.c.key == key,
                config_versions.c.tenant == stored, config_versions.c.version == version)).first()
        if old is None:
            raise NotFound(f"{kind} {key!r} has no version {version}")
        if old.deleted:
            raise Invalid(f"version {version} of {key!r} is a deletion; nothing to roll back to")
        if old.is_secret and not self.keyring.can_decrypt(old.value):
            raise Conflict(f"version {version} of {key!r} was encrypted with a retired key")
        return self._commit(kind, key, stored, value=old.value, deleted=False, actor=actor,
                            comment=f"rollback to version {version}", is_secret=old.is_secret,
                            namespace=None, expected_version=expected_version, operation="rollback")

    def _commit(self, kind: str, key: str, tenant: str, **options: Any) -> dict[str, Any]:
        """One write in a transaction of its own: checks, version, item, event; then the audit
        line, the on_commit hooks, the snapshot and the subscribers. ``options`` are
        :meth:`_apply`'s keywords."""
        with self._writes() as store:
            applied = self._apply(store, kind, key, tenant, **options)
        return self._publish(applied)

    def _apply(self, store: _CoreWrites | _SqliteWrites, kind: str, key: str, tenant: str, *, value: Any,
               deleted: bool, actor: str, comment: str | None, is_secret: bool, namespace: str | None,
               expected_version: int | None, operation: str, value_text: str | None = None) -> _Applied:
        """The statements of one write inside the caller's transaction. Every check that can
        refuse it (a ConfigError) comes before its first statement. ``value_text``: the value's
        JSON when the caller has it already."""
        _check_comment(comment)
        now = time.time()
        current = store.current(kind, key, tenant)  # (namespace, is_secret, version) or None
        if current is None and deleted:
            raise NotFound(f"no {kind} {key!r}" + (f" for tenant {tenant}" if tenant else ""))
        current_version = current[2] if current is not None else 0
        if expected_version is not None and expected_version != current_version:
            raise Conflict(f"{key!r} is at version {current_version}, not the expected "
                           f"{expected_version}")
        version = store.last_version(kind, key, tenant) + 1
        if current is not None and not deleted and bool(current[1]) != is_secret:
            raise Conflict(f"{key!r} is {'a secret' if current[1] else 'not a secret'}; "
                           "delete it first to change that")
        namespace = namespace or (current[0] if current is not None else namespace_of(key, None))
        previous = current[2] if current is not None else None
        store.insert_version({
            "kind": kind, "key": key, "tenant": tenant, "version": version, "value": value,
            "is_secret": is_secret, "deleted": deleted, "actor": actor, "at": now,
            "comment": comment, "previous_version": previous, "operation": operation}, value_text)
        row = {"kind": kind, "key": key, "tenant": tenant, "namespace": namespace, "value": value,
               "is_secret": is_secret, "version": version, "updated_at": now,
               "updated_by": actor, "comment": comment}
        if deleted:
            store.delete_item(kind, key, tenant)
            item = None
        else:
            store.upsert_item(row, current is not None, value_text)
            item = public(_Row(row))
        change_type = f"{kind}.{operation}"
        revision = store.insert_event({
            "type": change_type, "kind": kind, "key": key, "tenant": tenant, "version": version,
            "payload": item, "at": now})
        audit = {"kind": kind, "key": key, "tenant": tenant or None, "version": version,
                 "previous_version": previous, "comment": comment, "is_secret": is_secret,
                 "revision": revision, "value": None if is_secret or deleted else value}
        return _Applied(operation, actor, audit,
                        Change(revision, change_type, kind, key, tenant or None, version, item, now))

    def _publish(self, applied: _Applied) -> dict[str, Any]:
        """After the commit: the audit line, the on_commit hooks, the snapshot and subscribers."""
        change = applied.change
        self.audit(applied.operation, applied.actor, **applied.audit)
        self._committed(change.revision)
        self._advance(change)
        return change.item or {"kind": change.kind, "key": change.key, "tenant": change.tenant,
                               "deleted": True, "version": change.version}

    def record_event(self, type_: str, actor: str, **details: Any) -> int:
        """A change that is not a write of one item (reload, key rotation): logged and broadcast."""
        with self.engine.begin() as conn:
            _serialize_writers(conn)
            revision = conn.execute(insert(config_events).values(
                type=type_, kind="system", key="*", tenant=GLOBAL, version=None,
                payload={"details": details, "actor": actor}, at=time.time())).inserted_primary_key[0]
        self.audit(type_, actor, revision=revision, **details)
        self._committed(revision)
        self.catch_up()
        return revision

    def _committed(self, revision: int) -> None:
        """Run the on_commit hooks. Their errors are logged, not raised: the change is already
        committed, so failing the request would only make the client retry a done write."""
        for hook in self.on_commit:
            try:
                hook(revision)
            except Exception:  # the change is committed; telling others is best effort
                log.exception("on_commit hook %r failed for revision %d", hook, revision)

    def audit(self, operation: str, actor: str, **details: Any) -> None:
        self._audit.append({"at": time.time(), "operation": operation, "actor": actor, **details})

    def repair_audit(self) -> int:
        """Append the audit line of any settled committed change the audit log lacks (its process
        was killed between the commit and the line: ``api.config.audit``); how many."""
        with self.reader.connect() as conn:  # the common case: nothing missing, no write lock taken
            if not audit_log.missing_lines(conn, audit_log.audited_revisions(self.audit_path),
                                           time.time() - audit_log.SETTLE_S):
                return 0
        with self.engine.begin() as conn:
            _serialize_writers(conn)  # one repairer at a time, among all replicas: look again under it
            return audit_log.repair(conn, self.audit_path, self._audit.append)

    def close(self) -> None:
        """Close the audit log's file; a later line reopens it."""
        self._audit.close()

    @contextlib.contextmanager
    def _writes(self) -> Iterator[_CoreWrites | _SqliteWrites]:
        """One write transaction, writers serialized (revisions commit in the order they are
        numbered). On SQLite, straight on the DBAPI connection: SQLAlchemy's per-statement
        execution machinery was about 60% of a write's CPU. Elsewhere, SQLAlchemy Core."""
        if self.engine.dialect.name != "sqlite":
            with self.engine.begin() as conn:
                _serialize_writers(conn)
                yield _CoreWrites(conn)
            return
        raw = self.engine.raw_connection()  # pooled; the connect hook set WAL and autocommit mode
        try:
            cursor = raw.driver_connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")  # as prioritymax.db's "begin" hook: the write lock up front
            try:
                yield _SqliteWrites(cursor)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
        finally:
            raw.close()  # back to the pool

    # ------------------------------------------------------------------------ maintenance
    def rotate_key(self, actor: str) -> dict[str, Any]:
        """New key first, every secret (current and past versions) re-encrypted, old key retired.

        Refused (409, nothing changed) while any secret does not decrypt: re-encrypting it would
        fail half-way through, and dropping it would lose the value silently."""
        before = self.keyring.fingerprint
        self._check_secrets_decrypt()
        self.keyring.begin_rotation()
        with self.engine.begin() as conn:
            _serialize_writers(conn)
            items = conn.execute(select(config_items).where(config_items.c.is_secret)).all()
            for row in items:
                conn.execute(update(config_items).where(
                    config_items.c.kind == row.kind, config_items.c.key == row.key,
                    config_items.c.tenant == row.tenant).values(value=self.keyring.reencrypt(row.value)))
            olds = conn.execute(select(config_versions.c.id, config_versions.c.value).where(
                config_versions.c.is_secret, config_versions.c.deleted.is_(False))).all()
            for row in olds:
                conn.execute(update(config_versions).where(config_versions.c.id == row.id)
                             .values(value=self.keyring.reencrypt(row.value)))
        self.keyring.finish_rotation()
        result = {"rotated": True, "secrets": len(items), "secret_versions": len(olds),
                  "previous_key": before, "key": self.keyring.fingerprint}
        self.record_event("system.rotate_fernet_key", actor, **result)
        return result

    def _check_secrets_decrypt(self) -> None:
        with self.reader.connect() as conn:
            bad = self._undecryptable(conn)
        if bad:
            raise Conflict(f"cannot rotate the Fernet key: {', '.join(bad[:5])} "
                           f"{'does' if len(bad) == 1 else 'do'} not decrypt with the current keys; "
                           "delete or rewrite them first (POST /config/verify lists the problems)")

    def _undecryptable(self, conn: Connection) -> list[str]:
        """Secrets - current ones and past versions a rollback could bring back - that no key
        of the keyring opens."""
        items = conn.execute(select(config_items.c.key, config_items.c.tenant, config_items.c.value)
                             .where(config_items.c.is_secret)).all()
        olds = conn.execute(select(config_versions.c.key, config_versions.c.tenant,
                                   config_versions.c.version, config_versions.c.value).where(
            config_versions.c.is_secret, config_versions.c.deleted.is_(False))).all()
        bad = [f"secret {r.key!r} ({r.tenant or 'global'})" for r in items
               if not self.keyring.can_decrypt(r.value)]
        return bad + [f"version {r.version} of secret {r.key!r} ({r.tenant or 'global'})"
                      for r in olds if not self.keyring.can_decrypt(r.value)]

    def verify(self) -> dict[str, Any]:
        """Every secret (and past secret version) decrypts; every item's version is in its history."""
        current = config_items.join(config_versions, (config_versions.c.kind == config_items.c.kind)
                                    & (config_versions.c.key == config_items.c.key)
                                    & (config_versions.c.tenant == config_items.c.tenant)
                                    & (config_versions.c.version == config_items.c.version),
                                    isouter=True)
        with self.reader.connect() as conn:
            problems = [f"{p} does not decrypt" for p in self._undecryptable(conn)]
            orphans = conn.execute(select(config_items.c.kind, config_items.c.key,
                                          config_items.c.version).select_from(current)
                                   .where(config_versions.c.id.is_(None))).all()
        problems += [f"{r.kind} {r.key!r} is at version {r.version}, which its history lacks"
                     for r in orphans]
        return {"ok": not problems, "problems": problems, "checked_at": time.time()}

    def cleanup(self, actor: str, keep_versions: int = 50, event_days: float = 30.0) -> dict[str, Any]:
        """Drop versions beyond the newest ``keep_versions`` of each key (never a current one)
        and events older than ``event_days``."""
        removed_versions = 0
        with self.engine.begin() as conn:
            _serialize_writers(conn)
            groups = conn.execute(select(config_versions.c.kind, config_versions.c.key,
                                         config_versions.c.tenant, func.max(config_versions.c.version))
                                  .group_by(config_versions.c.kind, config_versions.c.key,
                                            config_versions.c.tenant)).all()
            for kind, key, tenant, newest in groups:
                removed_versions += conn.execute(delete(config_versions).where(
                    config_versions.c.kind == kind, config_versions.c.key == key,
                    config_versions.c.tenant == tenant,
                    config_versions.c.version <= newest - keep_versions)).rowcount
            cutoff = time.time() - event_days * 86400
            newest_event = conn.execute(select(func.max(config_events.c.revision))).scalar() or 0
            removed_events = conn.execute(delete(config_events).where(
                config_events.c.at < cutoff, config_events.c.revision < newest_event)).rowcount
        result = {"removed_versions": removed_versions, "removed_events": removed_events,
                  "keep_versions": keep_versions, "event_days": event_days}
        self.audit("cleanup", actor, **result)
        return result

    # ----------------------------------------------------------------------------- backups
    def export(self) -> dict[str, Any]:
        """Every current item; secrets as their ciphertext (with the key's fingerprint)."""
        with self.reader.connect() as conn:
            rows = conn.execute(select(config_items)).all()
        return {"format": 1, "exported_at": time.time(), "revision": self.revision,
                "key_fingerprint": self.keyring.fingerprint,
                "items": [{"kind": r.kind, "key": r.key, "tenant": r.tenant or None,
                           "namespace": r.namespace, "value": r.value, "is_secret": r.is_secret,
                           "version": r.version, "comment": r.comment} for r in rows]}

    def restore(self, document: dict[str, Any], actor: str) -> dict[str, Any]:
        """Write every item of a backup as a new version (history is kept). Checked first: a
        backup with a secret the current keys cannot open is refused whole."""
        items = document.get("items")
        if document.get("format") != 1 or not isinstance(items, list):
            raise Invalid("not a config backup (format 1 with items)")
        for item in items:
            if item.get("kind") not in (CONFIG, FLAG):
                raise Invalid(f"backup item of unknown kind {item.get('kind')!r}")
            check_key(str(item.get("key")))
            check_tenant(item.get("tenant"))
            # Namespaces as set() checks them: PostgreSQL would refuse an over-long one only
            # when its turn comes, with the items before it already restored.
            if item.get("namespace") is not None:
                namespace_of(str(item.get("key")), str(item["namespace"]))
            if item.get("is_secret") and not self.keyring.can_decrypt(str(item.get("value"))):
                raise Invalid(f"secret {item['key']!r} in the backup does not decrypt with the "
                              "current keys")
        for item in items:
            self._commit(item["kind"], item["key"], check_tenant(item.get("tenant")),
                         value=item["value"], deleted=False, actor=actor,
                         comment=f"restored from backup (was version {item.get('version')})",
                         is_secret=bool(item.get("is_secret")), namespace=item.get("namespace"),
                         expected_version=None, operation="restore")
        return {"restored": len(items)}


def _slot_of(table):
    return (table.c.kind == bindparam("b_kind"), table.c.key == bindparam("b_key"),
            table.c.tenant == bindparam("b_tenant"))


# The write path's statements, built once: constructing Core statements per call (coercion,
# cache keys) was most of a write's time.
_CURRENT = select(config_items).where(*_slot_of(config_items))
_LAST_VERSION = select(func.max(config_versions.c.version)).where(*_slot_of(config_versions))
_INSERT_VERSION = insert(config_versions)
_INSERT_ITEM = insert(config_items)
_UPDATE_ITEM = update(config_items).where(*_slot_of(config_items))
_DELETE_ITEM = delete(config_items).where(*_slot_of(config_items))
_INSERT_EVENT = insert(config_events)


@dataclass(frozen=True)
class _Applied:
    """A write done inside a transaction, waiting for its commit to be published."""

    operation: str
    actor: str
    audit: dict[str, Any]
    change: Change


def _refusal(index: int, item: dict[str, Any], error: ConfigError) -> Refusal:
    return Refusal(index, item["key"], item.get("tenant"), error.status, error.message)


def _check_comment(comment: str | None) -> None:
    if comment is not None and "\x00" in comment:
        # PostgreSQL's text columns cannot hold NUL (SQLite's can): refuse it on both stores.
        raise Invalid("a comment cannot contain NUL characters")


def _settle(future: asyncio.Future, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Resolve a group-committed write's future with ``function(*args, **kwargs)`` or its error."""
    try:
        result = function(*args, **kwargs)
    except Exception as error:
        if not future.done():
            future.set_exception(error)
        return
    if not future.done():
        future.set_result(result)


class _CoreWrites:
    """The write transaction's statements on SQLAlchemy Core (PostgreSQL)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def current(self, kind: str, key: str, tenant: str) -> tuple[str, bool, int] | None:
        row = self.conn.execute(_CURRENT, {"b_kind": kind, "b_key": key, "b_tenant": tenant}).first()
        return None if row is None else (row.namespace, row.is_secret, row.version)

    def last_version(self, kind: str, key: str, tenant: str) -> int:
        return self.conn.execute(_LAST_VERSION, {"b_kind": kind, "b_key": key,
                                                 "b_tenant": tenant}).scalar() or 0

    def insert_version(self, values: dict[str, Any], _text: str | None = None) -> None:
        self.conn.execute(_INSERT_VERSION, values)  # the JSON column encodes the value itself

    def upsert_item(self, row: dict[str, Any], exists: bool, _text: str | None = None) -> None:
        if exists:
            self.conn.execute(_UPDATE_ITEM, {**row, "b_kind": row["kind"], "b_key": row["key"],
                                             "b_tenant": row["tenant"]})
        else:
            self.conn.execute(_INSERT_ITEM, row)

    def delete_item(self, kind: str, key: str, tenant: str) -> None:
        self.conn.execute(_DELETE_ITEM, {"b_kind": kind, "b_key": key, "b_tenant": tenant})

    def insert_event(self, values: dict[str, Any]) -> int:
        return self.conn.execute(_INSERT_EVENT, values).inserted_primary_key[0]


class _SqliteWrites:
    """The same statements as plain SQL on a sqlite3 cursor, stored exactly as SQLAlchemy stores
    them (JSON columns as ``json.dumps`` text, ``None`` as ``null``; booleans as 0/1), so Core
    reads them back unchanged. ``text``: the value's ``json.dumps``, when the caller has it."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def current(self, kind: str, key: str, tenant: str) -> tuple[str, bool, int] | None:
        return self.cursor.execute("SELECT namespace, is_secret, version FROM config_items WHERE kind = ? "
                                   "AND key = ? AND tenant = ?", (kind, key, tenant)).fetchone()

    def last_version(self, kind: str, key: str, tenant: str) -> int:
        return self.cursor.execute("SELECT max(version) FROM config_versions WHERE kind = ? AND key = ? "
                                   "AND tenant = ?", (kind, key, tenant)).fetchone()[0] or 0

    def insert_version(self, v: dict[str, Any], text: str | None = None) -> None:
        self.cursor.execute(
            "INSERT INTO config_versions (kind, key, tenant, version, value, is_secret, deleted, actor, "
            "at, comment, previous_version, operation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (v["kind"], v["key"], v["tenant"], v["version"], _json(v["value"], text), v["is_secret"],
             v["deleted"], v["actor"], v["at"], v["comment"], v["previous_version"], v["operation"]))

    def upsert_item(self, r: dict[str, Any], exists: bool, text: str | None = None) -> None:
        value = _json(r["value"], text)
        if exists:
            self.cursor.execute(
                "UPDATE config_items SET namespace = ?, value = ?, is_secret = ?, version = ?, "
                "updated_at = ?, updated_by = ?, comment = ? WHERE kind = ? AND key = ? AND tenant = ?",
                (r["namespace"], value, r["is_secret"], r["version"], r["updated_at"], r["updated_by"],
                 r["comment"], r["kind"], r["key"], r["tenant"]))
        else:
            self.cursor.execute(
                "INSERT INTO config_items (kind, key, tenant, namespace, value, is_secret, version, "
                "updated_at, updated_by, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r["kind"], r["key"], r["tenant"], r["namespace"], value, r["is_secret"], r["version"],
                 r["updated_at"], r["updated_by"], r["comment"]))

    def delete_item(self, kind: str, key: str, tenant: str) -> None:
        self.cursor.execute("DELETE FROM config_items WHERE kind = ? AND key = ? AND tenant = ?",
                            (kind, key, tenant))

    def insert_event(self, v: dict[str, Any]) -> int:
        self.cursor.execute(
            "INSERT INTO config_events (type, kind, key, tenant, version, payload, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (v["type"], v["kind"], v["key"], v["tenant"], v["version"], json.dumps(v["payload"]), v["at"]))
        return self.cursor.lastrowid


def _json(value: Any, text: str | None) -> str:
    return json.dumps(value) if text is None else text


class _Row:
    """A dict with attribute access, so :func:`public` reads inserted rows like fetched ones."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _change(row: Any) -> Change:
    return Change(revision=row.revision, type=row.type, kind=row.kind, key=row.key,
                  tenant=row.tenant or None, version=row.version,
                  item=row.payload if row.kind in (CONFIG, FLAG) else None, at=row.at)


def _serialize_writers(conn: Connection) -> None:
    """Writers take turns so that revisions commit in the order they are numbered: SQLite's
    BEGIN IMMEDIATE does it (prioritymax.db); on PostgreSQL, a table lock on the event log."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE config_events IN SHARE ROW EXCLUSIVE MODE")
