"""The shape of a workflow spec (the seed's "Example Workflow Spec"), as pydantic models.

The models accept any *shape-correct* spec; what makes a spec runnable (known node types and
executors, an acyclic graph, edges that point at nodes, callables inside the allowlist...) is
checked by :func:`orchestration.workflows.validate.validate_spec`, which reports every problem with
its node id instead of stopping at the first, so the API can answer one 422 listing them all.

Node types: ``start`` / ``end`` (boundaries), ``task`` (an executor call), ``parallel`` (fan-out),
``join`` (fan-in: runs when at least one branch produced output), ``switch`` (routes to the first
out-edge whose ``condition`` holds, else to its ``default`` edge), ``timer`` (waits
``config.seconds``), ``subworkflow`` (runs ``config.workflow_id`` [``config.version``] inline).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NODE_TYPES = ("start", "end", "task", "parallel", "join", "switch", "timer", "subworkflow")
EXECUTORS = ("python", "http", "container", "external")
#: Dagster op names must match ``^[A-Za-z0-9_]+$``; node ids become op names. Inside a subworkflow an
#: op is named ``<subworkflow node id>__<inner id>`` and the compiler maps ``__`` back to ``.`` for the
#: node ids of events (``sub.inner``), so ``__`` is refused in a node id (a top-level ``a__b`` would show
#: up as ``a.b``, and SLA checks would miss it), and so is a trailing ``_`` (``s_`` + ``__`` + ``a`` reads
#: back as ``s._a``).
NODE_ID_PATTERN = r"^(?!.*__)[A-Za-z_][A-Za-z0-9_]{0,63}(?<!_)$"
MAX_SPEC_BYTES = 256 * 1024
MAX_NODES = 1000


class RetryPolicy(BaseModel):
    """Becomes a Dagster ``RetryPolicy(max_retries, delay=backoff_seconds, backoff=...)``."""

    model_config = ConfigDict(extra="forbid")
    max_retries: int = Field(0, ge=0, le=20)
    backoff_seconds: float = Field(0.0, ge=0, le=3600)
    backoff: str = Field("exponential", pattern="^(exponential|linear)$")


class TaskTemplate(BaseModel):
    """What a task node runs. ``executor`` None means WORKFLOW_EXECUTOR_DEFAULT."""

    model_config = ConfigDict(extra="forbid")
    executor: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    retry_policy: RetryPolicy | None = None
    timeout_seconds: float | None = Field(None, gt=0, le=24 * 3600)


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node_id: str = Field(..., min_length=1, max_length=64)
    type: str
    name: str | None = Field(None, max_length=200)
    #: Inline task definition; fields set here override those of ``template_ref``.
    template: TaskTemplate | None = None
    #: The name of a stored template (/workflows/templates).
    template_ref: str | None = Field(None, max_length=200)
    #: Per-type settings: timer ``{"seconds": s}``, subworkflow ``{"workflow_id": id, "version": n}``.
    config: dict[str, Any] = Field(default_factory=dict)
    sla_seconds: float | None = Field(None, gt=0)


class Edge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    target: str
    #: Only on a switch's out-edges: an expression over ``input`` and ``results`` (safe evaluator).
    condition: str | None = Field(None, max_length=2000)
    #: Only on a switch's out-edges: taken when no condition holds.
    default: bool = False


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    #: The seed's example carries one; the store assigns versions, so it is informational.
    version: int | None = None
    nodes: list[Node] = Field(..., min_length=1, max_length=MAX_NODES)
    edges: list[Edge] = Field(default_factory=list, max_length=MAX_NODES * 4)
    #: Defaults for the run's input variables (a run's input_variables override them).
    variables: dict[str, Any] = Field(default_factory=dict)
    sla_seconds: float | None = Field(None, gt=0)
    tags: dict[str, str] = Field(default_factory=dict)
