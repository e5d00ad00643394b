"""A workflow spec version -> a Dagster job (DESIGN.md decision 4).

Each node becomes an op named by its path (``verify``, or ``sub__inner`` inside subworkflow ``sub``)
and every op passes one *state* downstream: ``{"variables": {...}, "results": {node: result}}``.

- Every node with predecessors has one input, ``upstream``, wired to all of them as a fan-in
  (``MultiDependencyDefinition``), so a node waits for every branch that runs and still runs when a
  switch skipped some: a plain multi-input op would be skipped. ``join`` is such a node.
- ``switch`` has one optional output per out-edge (``to_<target>``) and yields only the first whose
  condition holds (else the ``default`` edge): Dagster skips the branches not taken.
- ``task`` calls :func:`orchestration.workflows.executors.execute` with the node's resolved
  template; ``retry_policy`` becomes a Dagster ``RetryPolicy``; ``timeout_seconds`` is enforced by
  the executor (Dagster has no op timeout).
- ``timer`` waits ``config.seconds`` (a cancel ends the wait); ``subworkflow`` is the referenced
  version compiled into a nested graph; ``start``/``end``/``parallel`` pass the state through.
  The top-level ``start`` op takes the run's variables as op config (the Dagster launchpad can set them).

Ops report to the ``workflow`` resource (:class:`orchestration.workflows.runtime.WorkflowRecorder`):
node_start, node_end (status, duration, attempt, result or error), node_retry (error, delay).
A node that a resumed run reuses (:meth:`WorkflowRecorder.reused`) is not executed: its recorded
result and switch branch flow on, and its events carry ``reused_from``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from orchestration.workflows import executors
from orchestration.workflows.expressions import evaluate, switch_names
from orchestration.workflows.spec import TaskTemplate, WorkflowSpec
from orchestration.workflows.validate import resolve_template, topological_order

#: (workflow_id, version) -> that version's spec, for subworkflows.
ResolveWorkflow = Callable[[str, "int | None"], "WorkflowSpec | None"]
UPSTREAM = "upstream"
MAX_RESULT_CHARS = 64 * 1024


def job_name(workflow_id: str, version: int) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{workflow_id}_v{version}")


def merge_states(upstream: Any) -> dict[str, Any]:
    """One state from what the predecessors passed (a state, a fan-in list, or nothing)."""
    if upstream is None:
        return {"variables": {}, "results": {}}
    if isinstance(upstream, dict):
        return {"variables": dict(upstream["variables"]), "results": dict(upstream["results"])}
    merged: dict[str, Any] = {"variables": {}, "results": {}}
    for state in upstream:
        merged["variables"].update(state["variables"])
        merged["results"].update(state["results"])
    return merged


def _bounded(result: Any) -> Any:
    """Results travel in events and the run record; a huge one is cut to a readable summary."""
    text = repr(result) if not isinstance(result, str) else result
    if len(text) <= MAX_RESULT_CHARS:
        return result
    return {"truncated": True, "preview": text[:1024], "chars": len(text)}


class _Compiler:
    def __init__(self, workflow_id: str, version: int, templates: Mapping[str, TaskTemplate],
                 resolve_workflow: ResolveWorkflow, default_executor: str) -> None:
        self.workflow_id = workflow_id
        self.version = version
        self.templates = templates
        self.resolve_workflow = resolve_workflow
        self.default_executor = default_executor
        self.job = job_name(workflow_id, version)

    def graph(self, spec: WorkflowSpec, prefix: str = "", chain: tuple[str, ...] = ()) -> dg.GraphDefinition:
        """The graph of ``spec``; inside a subworkflow, op names and event node ids carry ``prefix``."""
        order = topological_order(spec)
        incoming: dict[str, list] = {node_id: [] for node_id in order}
        out_edges: dict[str, list] = {node_id: [] for node_id in order}
        for edge in spec.edges:
            out_edges[edge.source].append(edge)
        nodes = {n.node_id: n for n in spec.nodes}
        node_defs: list[dg.NodeDefinition] = []
        dependencies: dict[dg.NodeInvocation, dict[str, dg.IDependencyDefinition]] = {}
        for node_id in order:
            node = nodes[node_id]
            path = f"{prefix}{node_id}"
            for edge in out_edges[node_id]:
                output = f"to_{edge.target}" if node.type == "switch" else "result"
                incoming[edge.target].append(dg.DependencyDefinition(node_id, output))
            has_upstream = bool(incoming[node_id]) or (node.type == "start" and bool(prefix))
            if node.type == "subworkflow":
                definition = self.subgraph(node, path, chain)
            else:
                definition = self.op(spec, node, path, out_edges[node_id], has_upstream, top=not prefix)
            node_defs.append(definition)
            invocation = dg.NodeInvocation(definition.name, alias=node_id)
            sources = incoming[node_id]
            # Every node gets an entry, even without inputs: that is what gives it its alias.
            dependencies[invocation] = ({UPSTREAM: sources[0]} if len(sources) == 1 else
                                        {UPSTREAM: dg.MultiDependencyDefinition(sources)} if sources else {})
        name = f"{self.job}__{prefix.rstrip('_')}" if prefix else self.job
        if not prefix:
            return dg.GraphDefinition(name=name, node_defs=node_defs, dependencies=dependencies,
                                      description=spec.description)
        # A nested graph: its start takes the parent's state, a collector gathers its ends.
        ends = [n.node_id for n in spec.nodes if n.type == "end"]
        collector = self.passthrough(f"{prefix}_collect", has_upstream=True)
        node_defs.append(collector)
        sources = [dg.DependencyDefinition(end, "result") for end in ends]
        dependencies[dg.NodeInvocation(collector.name, alias="_collect")] = {
            UPSTREAM: dg.MultiDependencyDefinition(sources)}
        start = next(n.node_id for n in spec.nodes if n.type == "start")
        return dg.GraphDefinition(
            name=name, node_defs=node_defs, dependencies=dependencies,
            input_mappings=[dg.InputMapping(graph_input_name=UPSTREAM, mapped_node_name=start,
                                            mapped_node_input_name=UPSTREAM)],
            output_mappings=[dg.OutputMapping(graph_output_name="result", mapped_node_name="_collect",
                                              mapped_node_output_name="result")])

    def subgraph(self, node, path: str, chain: tuple[str, ...]) -> dg.GraphDefinition:
        target = node.config["workflow_id"]
        if target in chain or target == self.workflow_id:  # validation refuses these; never recurse
            raise ValueError(f"subworkflow cycle: {' -> '.join((*chain, target))}")
        spec = self.resolve_workflow(target, node.config.get("version"))
        if spec is None:
            raise ValueError(f"node {node.node_id}: unknown workflow {target}")
        return self.graph(spec, prefix=f"{path}__", chain=(*chain, target))

    # --------------------------------------------------------------------------------- ops
    def _ins(self, has_upstream: bool) -> dict[str, dg.In]:
        return {UPSTREAM: dg.In(dg.Any)} if has_upstream else {}

    def passthrough(self, name: str, has_upstream: bool) -> dg.OpDefinition:
        def compute(context, inputs):
            yield dg.Output(merge_states(inputs.get(UPSTREAM)), "result")
        return dg.OpDefinition(compute_fn=compute, name=name, ins=self._ins(has_upstream),
                               outs={"result": dg.Out(dg.Any)})

    def op(self, spec: WorkflowSpec, node, path: str, out_edges: list, has_upstream: bool,
           top: bool) -> dg.OpDefinition:
        event_id = path.replace("__", ".")  # node ids have no "__" (spec.NODE_ID_PATTERN)
        base = {"workflow_id": self.workflow_id, "version": self.version, "job_name": self.job,
                "node_id": event_id, "node_type": node.type}
        template = (resolve_template(node, self.templates, self.default_executor)
                    if node.type == "task" else None)
        if node.type == "task" and template is None:  # its stored template was deleted since
            raise ValueError(f"node {event_id}: template {node.template_ref!r} not found")
        retry = template.retry_policy if template else None
        defaults = dict(spec.variables)
        config_schema = None
        if node.type == "start" and top:
            config_schema = {"variables": dg.Field(dg.Permissive(), is_required=False, default_value={})}
        outs = ({f"to_{edge.target}": dg.Out(dg.Any, is_required=False) for edge in out_edges}
                if node.type == "switch" else {"result": dg.Out(dg.Any)})
        run_node = self._behaviour(node, template, out_edges)

        def compute(context, inputs):
            recorder = context.resources.workflow
            run_id = context.run_id
            attempt = context.retry_number + 1
            state = merge_states(inputs.get(UPSTREAM))
            if config_schema is not None:
                state["variables"] = {**defaults, **(context.op_config or {}).get("variables", {})}
            header = {**base, "run_id": run_id}
            reused = recorder.reused(run_id, event_id)
            if reused is not None:
                yield _reuse(recorder, header, state, reused, node.type)
                return
            cancel = recorder.cancel_event(run_id)
            started = time.time()
            recorder.emit({**header, "type": "node_start", "attempt": attempt, "at": started})
            try:
                if cancel.is_set():
                    raise executors.Cancelled(f"run {run_id} was cancelled")
                meta = {**header, "attempt": attempt, "root_run_id": recorder.root_run_id(run_id)}
                result, chosen = run_node(state, meta, cancel, recorder.settings)
            except Exception as error:
                finished = time.time()
                cancelled = isinstance(error, executors.Cancelled)
                recorder.emit({**header, "type": "node_end", "attempt": attempt, "at": finished,
                               "status": "CANCELLED" if cancelled else "FAILED",
                               "duration_ms": round((finished - started) * 1000, 3), "error": str(error)})
                if retry is not None and not cancelled and context.retry_number < retry.max_retries:
                    delay = retry_delay(retry, attempt)
                    recorder.emit({**header, "type": "node_retry", "attempt": attempt, "error": str(error),
                                   "delay_seconds": delay})
                    raise
                raise dg.Failure(description=f"node {event_id}: {error}", allow_retries=False) from error
            finished = time.time()
            result = _bounded(result)
            if result is not None:
                state["results"][event_id] = result
            recorder.emit({**header, "type": "node_end", "attempt": attempt, "at": finished,
                           "status": "COMPLETED", "duration_ms": round((finished - started) * 1000, 3),
                           **({"result": result} if result is not None else {}),
                           **({"chosen": chosen} if node.type == "switch" else {})})
            if node.type == "switch":
                yield dg.Output(state, f"to_{chosen}")
            else:
                yield dg.Output(state, "result")

        policy = (dg.RetryPolicy(max_retries=retry.max_retries, delay=retry.backoff_seconds,
                                 backoff=_backoff(retry.backoff)) if retry and retry.max_retries else None)
        return dg.OpDefinition(compute_fn=compute, name=path, ins=self._ins(has_upstream), outs=outs,
                               config_schema=config_schema, retry_policy=policy,
                               required_resource_keys={"workflow"}, description=node.name,
                               tags={"workflow/node_type": node.type})

    def _behaviour(self, node, template: TaskTemplate | None, out_edges: list):
        """What the node does: (state, meta, cancel, settings) -> (result, chosen switch target).
        ``settings`` are the recorder's: the allowlists and container mode of whoever runs the job."""
        if node.type == "task":
            def task(state, meta, cancel, settings):
                meta = {**meta, "variables": state["variables"], "results": state["results"]}
                payload = {**state["variables"], "upstream": state["results"]}
                return executors.execute(template, payload, meta, settings=settings, cancel=cancel), None
            return task
        if node.type == "timer":
            seconds = float(node.config.get("seconds", 0))

            def timer(state, meta, cancel, settings):
                if cancel.wait(seconds):
                    raise executors.Cancelled("cancelled while waiting")
                return {"waited_seconds": seconds}, None
            return timer
        if node.type == "switch":
            def switch(state, meta, cancel, settings):
                names = switch_names(state["variables"], state["results"])
                for edge in out_edges:
                    if edge.condition is not None and evaluate(edge.condition, names):
                        return {"chosen": edge.target, "condition": edge.condition}, edge.target
                default = next((edge for edge in out_edges if edge.default), None)
                if default is None:
                    raise executors.ExecutorError("no condition held and the switch has no default edge")
                return {"chosen": default.target, "condition": "default"}, default.target
            return switch
        return lambda state, meta, cancel, settings: (None, None)  # start, end, parallel, join


def _reuse(recorder, header: dict, state: dict, reused: dict, node_type: str) -> dg.Output:
    """A node a resumed run completed before: its recorded result goes into the state and its
    recorded switch branch is taken, without executing it again (no side effect repeats). Its
    node_start/node_end pair says ``reused_from``, the run that executed it."""
    at = time.time()
    mark = {**header, "attempt": 1, "reused_from": reused["reused_from"]}
    recorder.emit({**mark, "type": "node_start", "at": at})
    if "result" in reused:
        state["results"][header["node_id"]] = reused["result"]
    recorder.emit({**mark, "type": "node_end", "at": at, "status": "COMPLETED", "duration_ms": 0.0,
                   **{k: reused[k] for k in ("result", "chosen") if k in reused}})
    return dg.Output(state, f"to_{reused['chosen']}" if node_type == "switch" else "result")


def _backoff(name: str) -> dg.Backoff:
    return dg.Backoff.LINEAR if name == "linear" else dg.Backoff.EXPONENTIAL


def retry_delay(retry, attempt: int) -> float:
    """The wait before retrying after ``attempt`` failed, as Dagster's RetryPolicy computes it
    (no jitter): ``base * attempt`` linear, ``base * (2**attempt - 1)`` exponential."""
    if retry.backoff == "linear":
        return retry.backoff_seconds * attempt
    return retry.backoff_seconds * (2**attempt - 1)


def compile_workflow(spec: WorkflowSpec, *, workflow_id: str, version: int,
                     templates: Mapping[str, TaskTemplate] | None = None,
                     resolve_workflow: ResolveWorkflow | None = None,
                     default_executor: str = "python") -> dg.JobDefinition:
    """The Dagster job of one spec version (validate the spec first: this assumes it is valid).
    Its ops need a ``workflow`` resource (a WorkflowRecorder): given at execution, or bound with
    ``with_top_level_resources`` (the code location)."""
    compiler = _Compiler(workflow_id, version, templates or {}, resolve_workflow or (lambda *_: None),
                         default_executor)
    return compiler.graph(spec).to_job(
        name=compiler.job, executor_def=dg.in_process_executor,
        tags={"workflow/id": workflow_id, "workflow/version": str(version)},
        description=f"{spec.name} (workflow {workflow_id} v{version})")
