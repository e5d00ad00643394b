"""Request and response shapes of the workflows API (specs themselves: orchestration.workflows.spec)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestration.workflows.spec import TaskTemplate

TEMPLATE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$"


class RunStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow_id: str = Field(..., min_length=1, max_length=64)
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="default: the latest version")
    input_variables: dict[str, Any] = Field(default_factory=dict)


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=TEMPLATE_NAME)
    template: TaskTemplate
    description: str | None = Field(None, max_length=2000)


class OtelInit(BaseModel):
    """The seed's body; ``endpoint`` (an OTLP/HTTP traces URL) is ours and wins when given."""

    model_config = ConfigDict(extra="forbid")
    service_name: str = Field("prioritymax-workflows", min_length=1, max_length=200)
    jaeger_host: str | None = Field(None, max_length=255)
    jaeger_port: int | None = Field(None, ge=1, le=65535)
    endpoint: str | None = Field(None, max_length=2000, pattern=r"^https?://")


class Problems(BaseModel):
    valid: bool
    problems: list[dict[str, Any]]
