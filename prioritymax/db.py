"""The stores' tables, on SQLAlchemy Core (DESIGN.md decision 2).

One SQLite file in the data home by default (WAL, so the API, Dagster processes and the CLI can
share it), PostgreSQL through ``PRIORITYMAX_DB_URL``. The config control plane keeps:

- ``config_items``: the current value of every (kind, key, tenant) - kind ``config``, ``flag``;
  secrets are configs with ``is_secret`` whose value is a Fernet token;
- ``config_versions``: every write ever made, immutable (a delete is a version too);
- ``config_events``: the change log; its autoincrement ``revision`` orders every change across
  all replicas, and WebSocket subscribers resume from it;
- ``api_tokens``: bearer tokens, stored as SHA-256 hashes, with their role.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

metadata = MetaData()

GLOBAL = ""  # the tenant column's value for the global layer
#: The PostgreSQL advisory lock key that serializes schema creation among processes.
SCHEMA_LOCK = 0x706D785F7363  # "pmx_sc"

config_items = Table(
    "config_items", metadata,
    Column("kind", String(16), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("tenant", String(80), primary_key=True, default=GLOBAL),
    Column("namespace", String(200), nullable=False, index=True),
    Column("value", JSON, nullable=True),
    Column("is_secret", Boolean, nullable=False, default=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(120), nullable=False),
    Column("comment", String(1000), nullable=True),
)

config_versions = Table(
    "config_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("key", String(200), nullable=False),
    Column("tenant", String(80), nullable=False),
    Column("version", Integer, nullable=False),
    Column("value", JSON, nullable=True),
    Column("is_secret", Boolean, nullable=False, default=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("actor", String(120), nullable=False),
    Column("at", Float, nullable=False),
    Column("comment", String(1000), nullable=True),
    Column("previous_version", Integer, nullable=True),
    Column("operation", String(16), nullable=False),
    UniqueConstraint("kind", "key", "tenant", "version", name="uq_config_version"),
)

config_events = Table(
    "config_events", metadata,
    Column("revision", Integer, primary_key=True, autoincrement=True),
    Column("type", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("key", String(200), nullable=False),
    Column("tenant", String(80), nullable=False),
    Column("version", Integer, nullable=True),
    Column("payload", JSON, nullable=True),  # the public item after the change (secrets masked)
    Column("at", Float, nullable=False),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)


def _sqlite_pragmas(connection, _record) -> None:
    connection.isolation_level = None  # let the "begin" hook below issue BEGIN itself
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def driver_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` (the usual spellings) mean psycopg 3, the driver we
    install; SQLAlchemy would otherwise look for psycopg2, which we do not."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def engine_for(url: str) -> Engine:
    """One engine per database URL per process, with the tables created."""
    return _engine(driver_url(url))


def reader_for(url: str) -> Engine:
    """An engine for reads that never takes the write lock. On SQLite the writers' engine starts
    every transaction, a read's too, with BEGIN IMMEDIATE; a client polling a read route then
    queues the writers, and a tight poll can starve one past busy_timeout ("database is locked").
    This engine starts its transactions with a plain (deferred) BEGIN: the first SELECT takes a
    WAL snapshot that the transaction's later reads share, and no lock a writer waits on. Nothing
    writes through it. Elsewhere it is the same engine as :func:`engine_for`."""
    return _reader(driver_url(url))


@functools.lru_cache(maxsize=8)
def _reader(url: str) -> Engine:
    engine = _engine(url)  # the tables exist once this returns
    if not url.startswith("sqlite"):
        return engine
    return _sqlite_engine(url, "BEGIN")


def stored_json(text: str) -> Any:
    """A JSON column as read back. The API refuses non-finite numbers on the way in, but a row
    written before it did (or by hand) may hold ``Infinity``, ``NaN`` or ``1e400``; read as such,
    that one value made every list, snapshot and backup that includes it a 500. It is read as
    null instead, and logged, so the rest stays readable and the item can be fixed or deleted."""
    def not_finite(literal: str) -> None:
        log.warning("a stored JSON value holds %s, which JSON cannot carry: read as null", literal)
        return None

    def number(literal: str) -> float | None:
        value = float(literal)
        return value if math.isfinite(value) else not_finite(literal)

    return json.loads(text, parse_constant=not_finite, parse_float=number)


def _sqlite_engine(url: str, begin: str) -> Engine:
    """A SQLite engine in WAL mode whose transactions start with ``begin`` (the driver's own
    implicit BEGIN is off, so SQLAlchemy's "begin" event issues it)."""
    engine = create_engine(url, connect_args={"check_same_thread": False},
                           json_deserializer=stored_json)
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
    return engine


@functools.lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # BEGIN IMMEDIATE: a transaction takes the write lock up front, so writers from several
        # processes queue (busy_timeout) instead of failing on a lock upgrade, and revisions
        # commit in the order they are numbered.
        engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True, json_deserializer=stored_json)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together on an empty database would race to create the same
            # tables (PostgreSQL's DDL is transactional, but the existence check is not): the
            # first takes this lock, the others wait and then find the tables there.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        metadata.create_all(conn)
    return engine
