"""Request and response shapes of /config (Create/Update/Public, as the template splits them).

Booleans and numbers of a request are JSON booleans and numbers (pydantic's strict types): lax
coercion took ``"is_secret": "yes"`` as a secret and ``"enabled": "yes"`` as on, which a client
that meant something else never hears about."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

#: How deeply a value's lists and objects may nest. Far more than any real configuration needs,
#: far less than where responses fail: pydantic refuses to serialize past ~250 levels, so a value
#: nested 500 deep was stored and then made every read that includes it (the snapshot too) a 500.
MAX_VALUE_DEPTH = 64


def shallow(value: Any) -> Any:
    """``value``, refused (ValueError) when its lists and objects nest past MAX_VALUE_DEPTH."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_VALUE_DEPTH:
                    raise ValueError(f"nested more than {MAX_VALUE_DEPTH} levels deep")
                stack.append((child, depth + 1))
    return value


JSONValue = Any
#: A value as written: any JSON, at most :data:`MAX_VALUE_DEPTH` levels deep.
WrittenValue = Annotated[Any, AfterValidator(shallow)]


class ConfigWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=200, examples=["autoscaler.max_workers"])
    value: WrittenValue = Field(examples=[25])
    is_secret: StrictBool = False
    comment: str | None = Field(None, max_length=1000)
    tenant: str | None = Field(None, max_length=80, examples=["org:acme"])
    namespace: str | None = Field(None, max_length=200)
    expected_version: StrictInt | None = Field(None, ge=0, description="409 unless the item is at it")


#: The most items one POST /config/batch may carry.
MAX_BATCH_ITEMS = 500


class ConfigBatchItem(ConfigWrite):
    """One item of a batch: :class:`ConfigWrite` without secrets (they have their own admin route)."""

    is_secret: Literal[False] = Field(False, description="always false: secrets go to /config/secrets")
    expected_version: int | None = Field(None, ge=0, description="refused (409) unless the item is at "
                                         "it, counting the batch's earlier items")


class ConfigBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ConfigBatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    atomic: bool = Field(True, description="all or nothing (default); false: each item on its own")


class SecretWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret_value: str = Field(min_length=1, max_length=16_384)
    comment: str | None = Field(None, max_length=1000)
    tenant: str | None = Field(None, max_length=80)
    expected_version: StrictInt | None = Field(None, ge=0)


class FlagWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, description="must equal the path's name if given")
    enabled: StrictBool
    description: str = Field("", max_length=1000)
    rollout_percent: StrictFloat | None = Field(None, ge=0, le=100)
    context_key: str | None = Field(None, max_length=100, description="context attribute hashed "
                                    "for a rollout (default targetingKey)")
    tenant: str | None = Field(None, max_length=80)
    expected_version: StrictInt | None = Field(None, ge=0)


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


class BatchWritten(ItemPublic):
    index: int = Field(description="the item's position in the request")
    revision: int


class BatchRefusal(BaseModel):
    index: int
    key: str
    tenant: str | None
    status: int = Field(description="what POST /config would have answered: 404, 409, 413 or 422")
    detail: str


class BatchResult(BaseModel):
    written: list[BatchWritten]
    refused: list[BatchRefusal] = Field(description="empty unless atomic is false")


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


class Verification(BaseModel):
    ok: bool
    problems: list[str]
    checked_at: float


class BackupUploaded(BaseModel):
    bucket: str
    key: str
    items: int


class BackupItem(BaseModel):
    """One item of a backup, as :meth:`ConfigService.export` writes it. Typed so that a malformed
    document is a 422 naming the field, never a 500 half-way through a restore (a missing key was
    a KeyError; a namespace that is not a string got stored and broke every later snapshot)."""

    kind: Literal["config", "flag"]
    key: str = Field(min_length=1, max_length=200)
    tenant: str | None = Field(None, max_length=80)
    namespace: str | None = Field(None, min_length=1, max_length=200)
    value: WrittenValue = Field(description="as exported: a secret's is its Fernet token")
    is_secret: StrictBool = False
    version: StrictInt | None = None
    comment: str | None = Field(None, max_length=1000)


class BackupDocument(BaseModel):
    """``GET /config/backup``'s document; other top-level fields (exported_at, revision,
    key_fingerprint) are kept but not needed."""

    model_config = ConfigDict(extra="allow")

    format: Literal[1]
    items: list[BackupItem]
