"""Request and response shapes of the workflows API (specs themselves: orchestration.workflows.spec)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from api.config.schemas import MAX_VALUE_DEPTH, shallow
from orchestration.workflows.spec import MAX_SPEC_BYTES, TaskTemplate

TEMPLATE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$"


def _bounded(variables: dict[str, Any]) -> dict[str, Any]:
    """Run variables are stored with the run and sent with its events: no larger than a spec may
    be (10 MB were accepted, and copied into every event of the run)."""
    size = len(json.dumps(variables))
    if size > MAX_SPEC_BYTES:
        raise ValueError(f"input_variables are {size} bytes of JSON; at most {MAX_SPEC_BYTES}")
    return variables


class RunStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow_id: str = Field(..., min_length=1, max_length=64)
    version: StrictInt | None = Field(None, ge=1, le=2**31 - 1, description="default: the latest version")
    input_variables: Annotated[dict[str, Any], AfterValidator(shallow), AfterValidator(_bounded)] = Field(
        default_factory=dict, description=f"at most {MAX_SPEC_BYTES // 1024} KiB of JSON, "
                                          f"{MAX_VALUE_DEPTH} levels deep, as a spec")


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
