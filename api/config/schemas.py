"""Request and response shapes of /config (Create/Update/Public, as the template splits them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JSONValue = Any


class ConfigWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=200, examples=["autoscaler.max_workers"])
    value: JSONValue = Field(examples=[25])
    is_secret: bool = False
    comment: str | None = Field(None, max_length=1000)
    tenant: str | None = Field(None, max_length=80, examples=["org:acme"])
    namespace: str | None = Field(None, max_length=200)
    expected_version: int | None = Field(None, ge=0, description="409 unless the item is at it")


class SecretWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret_value: str = Field(min_length=1, max_length=16_384)
    comment: str | None = Field(None, max_length=1000)
    tenant: str | None = Field(None, max_length=80)
    expected_version: int | None = Field(None, ge=0)


class FlagWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, description="must equal the path's name if given")
    enabled: bool
    description: str = Field("", max_length=1000)
    rollout_percent: float | None = Field(None, ge=0, le=100)
    context_key: str | None = Field(None, max_length=100, description="context attribute hashed "
                                    "for a rollout (default targetingKey)")
    tenant: str | None = Field(None, max_length=80)
    expected_version: int | None = Field(None, ge=0)


class ItemPublic(BaseModel):
    kind: str
    key: str
    tenant: str | None
    namespace: str | None = None
    value: JSONValue = None
    is_secret: bool = False
    version: int
    updated_at: float | None = None
    updated_by: str | None = None
    comment: str | None = None
    deleted: bool = False


class VersionPublic(BaseModel):
    version: int
    value: JSONValue
    is_secret: bool
    deleted: bool
    actor: str
    at: float
    comment: str | None
    previous_version: int | None
    operation: str


class Resolved(BaseModel):
    key: str
    tenant: str | None
    value: JSONValue
    layer: str
    version: int
    is_secret: bool
    chain: list[str]


class FlagEvaluation(BaseModel):
    name: str
    enabled: bool
    reason: str
    layer: str | None
    tenant: str | None
    version: int | None
    chain: list[str]
    error: str | None


class Status(BaseModel):
    ok: bool
    uptime_seconds: int
    config_items_cached: int
    ws_connections: int


class Snapshot(BaseModel):
    revision: int
    items: list[ItemPublic]
