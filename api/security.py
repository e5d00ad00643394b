"""Bearer tokens and roles (DESIGN.md decision 7): viewer < operator < admin.

Tokens are random strings shown once; the store keeps only their SHA-256. On first start an admin
token is created: ``PRIORITYMAX_ADMIN_TOKEN`` when set, else a generated one written to
``<home>/secrets/admin.token`` (mode 0600) for the operator to pick up. ``pmx tokens create
--role …`` makes more.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from prioritymax.db import api_tokens
from prioritymax.files import atomic_path
from prioritymax.roles import Role


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: The length of ``api_tokens.name`` (and of the actor columns it is written to).
NAME_LIMIT = 120


def create_token(engine: Engine, role: Role, name: str, token: str | None = None) -> str:
    # Checked here because PostgreSQL enforces VARCHAR lengths (SQLite does not): a longer name
    # would be stored on one store and fail with a database error on the other.
    if not name or len(name) > NAME_LIMIT:
        raise ValueError(f"a token name is 1 to {NAME_LIMIT} characters")
    token = token or f"pmx_{secrets.token_urlsafe(32)}"
    with engine.begin() as conn:
        conn.execute(insert(api_tokens).values(token_hash=token_hash(token), name=name,
                                               role=role.name, created_at=time.time(),
                                               revoked=False))
    return token


def revoke_token(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        return conn.execute(update(api_tokens).where(api_tokens.c.name == name)
                            .values(revoked=True)).rowcount


def role_of(engine: Engine, token: str) -> tuple[Role, str] | None:
    """The role and name of a valid token, or None. One read: pass :func:`prioritymax.db.reader_for`'s
    engine, which on SQLite takes no write lock (the writers' engine would: BEGIN IMMEDIATE)."""
    with engine.connect() as conn:
        row = conn.execute(select(api_tokens.c.role, api_tokens.c.name, api_tokens.c.revoked)
                           .where(api_tokens.c.token_hash == token_hash(token))).first()
    if row is None or row.revoked:
        return None
    return Role[row.role], row.name


def ensure_admin_token(engine: Engine, secrets_dir: Path, configured: str | None) -> str | None:
    """Create the first admin token if the store has none; returns a newly created token."""
    with engine.connect() as conn:
        if configured and conn.execute(select(api_tokens.c.name).where(
                api_tokens.c.token_hash == token_hash(configured))).first():
            return None
        if not configured and conn.execute(select(api_tokens.c.name).where(
                api_tokens.c.role == Role.admin.name, api_tokens.c.revoked.is_(False))).first():
            return None
    try:
        token = create_token(engine, Role.admin, "admin (PRIORITYMAX_ADMIN_TOKEN)" if configured
                             else "admin (first start)", configured)
    except IntegrityError:
        # Another replica on the same store inserted the same configured token first.
        if configured:
            return None
        raise
    if not configured:
        with atomic_path(secrets_dir / "admin.token") as temporary:
            temporary.write_text(token + "\n")
            os.chmod(temporary, 0o600)
    return token
