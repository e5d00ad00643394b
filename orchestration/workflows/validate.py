"""What makes a workflow spec runnable, checked all at once.

:func:`parse_spec` turns raw bytes / text / a dict into a :class:`~orchestration.workflows.spec.WorkflowSpec`
(or a list of :class:`Problem`); :func:`validate_spec` then reports *every* problem of a shape-correct
spec, each with the id of the node it concerns (None for workflow-level problems), so the API can
answer one 422 listing them all. :func:`resolve_template` and :func:`topological_order` are shared with
the compiler, :func:`node_graph` with the preview.

A task's executor config is checked by the executor's own checks
(:func:`orchestration.workflows.executors.config_problems`), so a spec that validates is not refused
by its executor later for something validation could have seen.

Security: a ``python`` task's module is imported here (to check that its callable exists) only when
the module is inside ``allowed_modules``; nothing outside the allowlist is ever imported.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from orchestration.workflows import expressions
from orchestration.workflows.executors import config_problems
from orchestration.workflows.spec import (
    EXECUTORS,
    MAX_SPEC_BYTES,
    NODE_ID_PATTERN,
    NODE_TYPES,
    Edge,
    Node,
    TaskTemplate,
    WorkflowSpec,
)

__all__ = [
    "MAX_SUBWORKFLOW_DEPTH",
    "Problem",
    "node_graph",
    "parse_spec",
    "resolve_template",
    "topological_order",
    "validate_spec",
]

#: How deep subworkflows may nest (a chain longer than this is reported, not walked further).
MAX_SUBWORKFLOW_DEPTH = 32
MAX_TIMER_SECONDS = 86_400

_NODE_ID_RE = re.compile(NODE_ID_PATTERN)

ResolveWorkflow = Callable[[str, int | None], WorkflowSpec | None]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec; ``node_id`` None for workflow-level problems."""

    node_id: str | None
    message: str

    def as_dict(self) -> dict:
        return {"node_id": self.node_id, "message": self.message}


# ------------------------------------------------------------------------------------------ parsing
def parse_spec(
    raw: bytes | str | dict, max_bytes: int = MAX_SPEC_BYTES
) -> tuple[WorkflowSpec | None, list[Problem]]:
    """``(spec, [])`` when ``raw`` is a shape-correct spec, else ``(None, problems)``.

    ``raw`` is JSON bytes / text or an already-decoded dict (measured as compact JSON). A spec over
    ``max_bytes`` is refused before it is parsed. Pydantic errors inside ``nodes[i]`` carry that node's
    ``node_id`` (when the raw node has a string one); errors inside ``edges[i]`` name the edge.
    """
    data: Any
    if isinstance(raw, dict):
        try:
            size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode())
        except (TypeError, ValueError) as exc:
            return None, [Problem(None, f"spec is not JSON-serializable: {exc}")]
        data = raw
    elif isinstance(raw, bytes | bytearray | str):
        size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    else:
        return None, [Problem(None, f"spec must be a JSON object, not {type(raw).__name__}")]
    if size > max_bytes:
        return None, [Problem(None, f"spec is {size} bytes; the limit is {max_bytes}")]
    if not isinstance(raw, dict):
        try:
            data = json.loads(raw)
        except UnicodeDecodeError as exc:
            return None, [Problem(None, f"spec is not UTF-8: {exc}")]
        except json.JSONDecodeError as exc:
            return None, [
                Problem(None, f"spec is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})")
            ]
        except RecursionError:
            return None, [Problem(None, "spec is not valid JSON: nested too deeply")]
    if not isinstance(data, dict):
        return None, [Problem(None, f"spec must be a JSON object, not {type(data).__name__}")]
    try:
        return WorkflowSpec.model_validate(data), []
    except ValidationError as exc:
        return None, _pydantic_problems(exc, data)


def _format_loc(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _pydantic_problems(exc: ValidationError, data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error.get("loc", ()))
        message = error.get("msg", "invalid")
        node_id: str | None = None
        where = _format_loc(loc) or "spec"
        if len(loc) >= 2 and isinstance(loc[1], int) and loc[0] in ("nodes", "edges"):
            items = data.get(loc[0])
            item = items[loc[1]] if isinstance(items, list) and 0 <= loc[1] < len(items) else None
            if loc[0] == "nodes" and isinstance(item, dict) and isinstance(item.get("node_id"), str):
                node_id = item["node_id"]
            if loc[0] == "edges" and isinstance(item, dict):
                ends = f" ({item.get('source', '?')} -> {item.get('target', '?')})"
                rest = _format_loc(loc[2:])
                where = f"edges[{loc[1]}]{ends}" + (f".{rest}" if rest and not rest.startswith("[") else rest)
        problems.append(Problem(node_id, f"{where}: {message}"))
    return problems


# ---------------------------------------------------------------------------------------- templates
def resolve_template(
    node: Node, templates: Mapping[str, TaskTemplate], default_executor: str
) -> TaskTemplate | None:
    """The template a task node runs: its ``template_ref``'s stored template, overridden field by field
    by the node's inline ``template`` (``config`` dicts merged, inline keys winning; an inline field
    overrides only when it is set and not None). ``executor`` None becomes ``default_executor``.
    None when the node has neither (an unknown ``template_ref`` counts as none)."""
    stored = templates.get(node.template_ref) if node.template_ref else None
    inline = node.template
    if stored is None and inline is None:
        return None
    merged: dict[str, Any] = {}
    for source in (stored, inline):
        if source is None:
            continue
        for name, value in source.model_dump(exclude_unset=True).items():  # model_dump copies
            if name == "config":
                merged["config"] = {**merged.get("config", {}), **value}
            elif value is not None:
                merged[name] = value
    template = TaskTemplate.model_validate(merged)
    if template.executor is None:
        template = template.model_copy(update={"executor": default_executor})
    return template


# -------------------------------------------------------------------------------------------- graph
def node_graph(
    spec: WorkflowSpec, *, unique_ids: bool = False
) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """``(ids, successors, predecessors)``: node ids in spec order (first occurrence of each) and each
    node's successors / predecessors in edge order, over edges between known nodes (an edge repeated
    counts once; a self-loop is kept: it is a cycle). ``unique_ids``: a duplicate node id raises
    ValueError instead of being folded into its first occurrence."""
    ids = list(dict.fromkeys(n.node_id for n in spec.nodes))
    if unique_ids and len(ids) < len(spec.nodes):
        seen: set[str] = set()
        for node in spec.nodes:
            if node.node_id in seen:
                raise ValueError(f"duplicate node id {node.node_id!r}")
            seen.add(node.node_id)
    successors: dict[str, list[str]] = {node_id: [] for node_id in ids}
    predecessors: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for edge in spec.edges:
        known = edge.source in successors and edge.target in successors
        if known and edge.target not in successors[edge.source]:
            successors[edge.source].append(edge.target)
            predecessors[edge.target].append(edge.source)
    return ids, successors, predecessors


def topological_order(spec: WorkflowSpec) -> list[str]:
    """Node ids, every node after all its predecessors; among ready nodes, spec order first (Kahn).

    Edges that point at unknown nodes are ignored. Raises ValueError naming a cycle if there is one.
    """
    ids, successors, _ = node_graph(spec)
    position = {node_id: i for i, node_id in enumerate(ids)}
    indegree = dict.fromkeys(ids, 0)
    for targets in successors.values():
        for target in targets:
            indegree[target] += 1
    ready = [position[node_id] for node_id in ids if indegree[node_id] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node_id = ids[heapq.heappop(ready)]
        order.append(node_id)
        for target in successors[node_id]:
            indegree[target] -= 1
            if indegree[target] == 0:
                heapq.heappush(ready, position[target])
    if len(order) < len(ids):
        cycles = _cycles(ids, successors)
        raise ValueError(f"cycle: {' -> '.join(cycles[0])}" if cycles else "cycle in the graph")
    return order


def _strongly_connected(ids: Sequence[str], successors: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (specs may have 1000 nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in ids:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = successors[node]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _cycles(ids: Sequence[str], successors: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle path ``[a, b, ..., a]`` per cyclic strongly connected component, starting at the
    component's first node in spec order; components in spec order of those nodes."""
    position = {node_id: i for i, node_id in enumerate(ids)}
    cycles = []
    for component in _strongly_connected(ids, successors):
        members = set(component)
        first = min(component, key=position.__getitem__)
        if len(component) == 1 and first not in successors[first]:
            continue
        # Shortest way back to `first` inside the component (BFS).
        parent: dict[str, str] = {}
        queue = deque([first])
        found = False
        while queue and not found:
            node = queue.popleft()
            for target in successors[node]:
                if target == first:
                    parent[first], found = node, True
                    break
                if target in members and target not in parent:
                    parent[target] = node
                    queue.append(target)
        path = [first]
        node = parent[first]
        while node != first:
            path.append(node)
            node = parent[node]
        cycles.append([first, *reversed(path[1:]), first])
    cycles.sort(key=lambda cycle: position[cycle[0]])
    return cycles


# ------------------------------------------------------------------------------------- validation
def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _list(names: Sequence[str], limit: int = 20) -> str:
    names = list(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more or "none"


class _Validator:
    def __init__(
        self,
        spec: WorkflowSpec,
        templates: Mapping[str, TaskTemplate],
        resolve_workflow: ResolveWorkflow,
        allowed_modules: Sequence[str],
        url_hosts: Sequence[str],
        default_executor: str,
        workflow_id: str | None,
    ) -> None:
        self.spec = spec
        self.templates = templates
        self.resolve_workflow = resolve_workflow
        self.allowed_modules = [m.strip() for m in allowed_modules if m and m.strip()]
        self.url_hosts = list(url_hosts)
        self.default_executor = default_executor
        self.workflow_id = workflow_id
        self.problems: list[Problem] = []
        self._seen: set[Problem] = set()
        self.nodes: dict[str, Node] = {}
        for node in spec.nodes:
            self.nodes.setdefault(node.node_id, node)
        self.out_edges: dict[str, list[tuple[int, Edge]]] = defaultdict(list)
        self.in_edges: dict[str, list[tuple[int, Edge]]] = defaultdict(list)

    def add(self, node_id: str | None, message: str) -> None:
        problem = Problem(node_id, message)
        if problem not in self._seen:
            self._seen.add(problem)
            self.problems.append(problem)

    def run(self) -> list[Problem]:
        self.check_nodes()
        self.check_edges()
        self.check_boundaries()
        self.check_graph()
        self.check_switches()
        for node in self.spec.nodes:
            if node is not self.nodes.get(node.node_id):
                continue  # a duplicate id: reported already; its config would be ambiguous
            self.check_node(node)
        return self.problems

    # -- ids, types, start/end --------------------------------------------------------------------
    def check_nodes(self) -> None:
        first_index: dict[str, int] = {}
        for i, node in enumerate(self.spec.nodes):
            if not _NODE_ID_RE.fullmatch(node.node_id):
                self.add(
                    node.node_id,
                    f"node id {node.node_id!r} must match {NODE_ID_PATTERN} (a letter or underscore, then "
                    "letters, digits or underscores, at most 64 characters; no '__' and no '_' at the end)",
                )
            if node.node_id in first_index:
                self.add(
                    node.node_id,
                    f"duplicate node id {node.node_id!r} (nodes[{first_index[node.node_id]}] and nodes[{i}])",
                )
            else:
                first_index[node.node_id] = i
            if node.type not in NODE_TYPES:
                self.add(
                    node.node_id, f"unknown node type {node.type!r}; known types: {', '.join(NODE_TYPES)}"
                )

    def check_boundaries(self) -> None:
        starts = [n.node_id for n in self.spec.nodes if n.type == "start"]
        ends = [n.node_id for n in self.spec.nodes if n.type == "end"]
        if not starts:
            self.add(None, "a workflow needs exactly one start node; it has none")
        elif len(starts) > 1:
            self.add(None, f"a workflow needs exactly one start node; it has {len(starts)}: {_list(starts)}")
        if not ends:
            self.add(None, "a workflow needs at least one end node; it has none")
        for node_id in dict.fromkeys(starts):
            if self.in_edges[node_id]:
                sources = [e.source for _, e in self.in_edges[node_id]]
                self.add(
                    node_id, f"the start node can't have incoming edges (it has some from {_list(sources)})"
                )
        for node_id in dict.fromkeys(ends):
            if self.out_edges[node_id]:
                targets = [e.target for _, e in self.out_edges[node_id]]
                self.add(node_id, f"an end node can't have outgoing edges (it has some to {_list(targets)})")

    # -- edges and the graph ----------------------------------------------------------------------
    def check_edges(self) -> None:
        seen: dict[tuple[str, str], int] = {}
        for i, edge in enumerate(self.spec.edges):
            label = f"edge {i} ({edge.source} -> {edge.target})"
            missing = [end for end in (edge.source, edge.target) if end not in self.nodes]
            if missing:
                existing = next((end for end in (edge.source, edge.target) if end in self.nodes), None)
                what = " and ".join(repr(m) for m in dict.fromkeys(missing))
                self.add(
                    existing, f"{label} points at unknown node{'s' if len(set(missing)) > 1 else ''} {what}"
                )
                continue
            if edge.source == edge.target:
                self.add(edge.source, f"{label} is a self-loop")
                continue
            key = (edge.source, edge.target)
            if key in seen:
                self.add(edge.source, f"{label} duplicates edge {seen[key]}")
                continue
            seen[key] = i
            self.out_edges[edge.source].append((i, edge))
            self.in_edges[edge.target].append((i, edge))

    def check_graph(self) -> None:
        ids = list(self.nodes)
        successors = {node_id: [e.target for _, e in self.out_edges[node_id]] for node_id in ids}
        for cycle in _cycles(ids, successors):
            self.add(cycle[0], f"cycle: {' -> '.join(cycle)}")
        starts = [n.node_id for n in self.spec.nodes if n.type == "start"]
        if not starts:
            return
        reached = set(starts)
        queue = deque(starts)
        while queue:
            for target in successors[queue.popleft()]:
                if target not in reached:
                    reached.add(target)
                    queue.append(target)
        for node_id in ids:
            if node_id not in reached:
                self.add(node_id, f"node {node_id!r} is not reachable from the start node")

    def check_switches(self) -> None:
        for node_id, edges in self.out_edges.items():
            node = self.nodes[node_id]
            for i, edge in edges:
                if node.type != "switch" and (edge.condition is not None or edge.default):
                    what = "a condition" if edge.condition is not None else "default: true"
                    self.add(
                        node_id,
                        f"edge {i} ({edge.source} -> {edge.target}) has {what}, but only a switch node's "
                        f"out-edges may ({node_id!r} is {_a(node.type)} node)",
                    )
        for node_id, node in self.nodes.items():
            if node.type != "switch":
                continue
            edges = self.out_edges[node_id]
            if not edges:
                self.add(node_id, "a switch node needs at least one out-edge")
                continue
            defaults = [i for i, e in edges if e.default]
            if len(defaults) > 1:
                self.add(
                    node_id,
                    f"a switch node has at most one default out-edge; it has {len(defaults)} "
                    f"(edges {', '.join(map(str, defaults))})",
                )
            for i, edge in edges:
                label = f"edge {i} ({edge.source} -> {edge.target})"
                if edge.condition is None:
                    if not edge.default:
                        self.add(node_id, f"{label} out of a switch needs a condition or default: true")
                    continue
                if edge.default:
                    self.add(
                        node_id, f"{label} is both conditional and the default; it must be one or the other"
                    )
                problem = expressions.check(edge.condition)
                if problem is not None:
                    self.add(node_id, f"{label} condition {edge.condition!r}: {problem}")

    # -- per node ---------------------------------------------------------------------------------
    def check_node(self, node: Node) -> None:
        if node.type not in NODE_TYPES:
            return
        if node.type == "task":
            self.check_task(node)
            return
        if node.template is not None or node.template_ref is not None:
            self.add(
                node.node_id,
                f"{_a(node.type)} node can't have a template or template_ref (only task nodes do)",
            )
        if node.type == "timer":
            self.check_timer(node)
        elif node.type == "subworkflow":
            self.check_subworkflow(node)
        elif node.type == "join":
            sources = {e.source for _, e in self.in_edges[node.node_id]}
            if len(sources) < 2:
                self.add(node.node_id, f"a join node needs at least 2 in-edges; it has {len(sources)}")
        elif node.type == "parallel":
            targets = {e.target for _, e in self.out_edges[node.node_id]}
            if len(targets) < 2:
                self.add(node.node_id, f"a parallel node needs at least 2 out-edges; it has {len(targets)}")

    def check_timer(self, node: Node) -> None:
        seconds = node.config.get("seconds")
        if "seconds" not in node.config:
            self.add(node.node_id, "a timer node needs config.seconds")
        elif isinstance(seconds, bool) or not isinstance(seconds, int | float):
            self.add(node.node_id, f"config.seconds must be a number, not {type(seconds).__name__}")
        elif not 0 <= seconds <= MAX_TIMER_SECONDS:
            self.add(
                node.node_id, f"config.seconds must be between 0 and {MAX_TIMER_SECONDS}; it is {seconds}"
            )

    def check_task(self, node: Node) -> None:
        if node.template is None and node.template_ref is None:
            self.add(node.node_id, "a task node needs a template or a template_ref")
            return
        if node.template_ref is not None and node.template_ref not in self.templates:
            self.add(
                node.node_id,
                f"unknown template_ref {node.template_ref!r}; "
                f"stored templates: {_list(sorted(self.templates))}",
            )
        template = resolve_template(node, self.templates, self.default_executor)
        if template is None:
            return
        executor = template.executor
        if executor not in EXECUTORS:
            self.add(node.node_id, f"unknown executor {executor!r}; known executors: {', '.join(EXECUTORS)}")
            return
        # The executor's own checks, so what validates here passes them again at run time.
        for message in config_problems(
            executor, template.config, module_prefixes=self.allowed_modules, url_hosts=self.url_hosts
        ):
            self.add(node.node_id, message)

    # -- subworkflows -----------------------------------------------------------------------------
    def check_subworkflow(self, node: Node) -> None:
        target = node.config.get("workflow_id")
        version = node.config.get("version")
        if not isinstance(target, str) or not target:
            self.add(node.node_id, "a subworkflow node needs config.workflow_id (a string)")
            return
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            self.add(node.node_id, f"config.version must be an integer, not {version!r}")
            return
        root = self.workflow_id or self.spec.name
        if self.workflow_id is not None and target == self.workflow_id:
            self.add(node.node_id, f"subworkflow cycle: {root} -> {target}")
            return
        child = self._resolve(target, version)
        if isinstance(child, str):
            self.add(node.node_id, child)
            return
        chain = self._find_cycle(child, [root, target] if self.workflow_id else [target], set())
        if chain is not None:
            self.add(node.node_id, chain)

    def _resolve(self, workflow_id: str, version: int | None) -> WorkflowSpec | str:
        label = f"{workflow_id!r}" + (f" version {version}" if version is not None else "")
        try:
            spec = self.resolve_workflow(workflow_id, version)
        except Exception as exc:  # a store error reads as a problem, not a 500
            return f"can't resolve workflow {label}: {type(exc).__name__}: {exc}"
        return spec if spec is not None else f"unknown workflow {label}"

    def _find_cycle(self, spec: WorkflowSpec, path: list[str], visited: set[tuple[str, Any]]) -> str | None:
        """A message naming the first chain that comes back to a workflow on ``path``, or None."""
        if len(path) > MAX_SUBWORKFLOW_DEPTH:
            return f"subworkflows nest deeper than {MAX_SUBWORKFLOW_DEPTH} levels: {' -> '.join(path)}"
        for node in spec.nodes:
            if node.type != "subworkflow":
                continue
            target, version = node.config.get("workflow_id"), node.config.get("version")
            if not isinstance(target, str):
                continue
            if target in path:
                return f"subworkflow cycle: {' -> '.join([*path, target])}"
            key = (target, version if isinstance(version, int) else None)
            if key in visited:
                continue
            visited.add(key)
            child = self._resolve(target, key[1])
            if isinstance(child, str):
                continue  # that workflow's own validation reports it
            found = self._find_cycle(child, [*path, target], visited)
            if found is not None:
                return found
        return None


def validate_spec(
    spec: WorkflowSpec,
    *,
    templates: Mapping[str, TaskTemplate],
    resolve_workflow: Callable[[str, int | None], WorkflowSpec | None],
    allowed_modules: Sequence[str],
    url_hosts: Sequence[str],
    default_executor: str = "python",
    workflow_id: str | None = None,
) -> list[Problem]:
    """Every problem that keeps ``spec`` from running (an empty list: it is valid).

    ``templates``: the stored task templates by name; ``resolve_workflow(workflow_id, version)``: a stored
    spec or None (version None: the latest); ``allowed_modules``: module prefixes python tasks may import;
    ``url_hosts``: hosts http/external tasks may call (``*``, ``*.domain`` or exact names);
    ``workflow_id``: the id this spec is (or will be) stored under, so a subworkflow chain that comes back
    to it is reported as a cycle.
    """
    return _Validator(
        spec, templates, resolve_workflow, allowed_modules, url_hosts, default_executor, workflow_id
    ).run()
