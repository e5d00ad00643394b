"""A layered (Sugiyama-style) layout of a workflow spec, for drawing it in a UI.

:func:`preview` returns::

    {"nodes": [{"node_id", "type", "name", "layer", "order", "x", "y"}, ...],   # in spec order
     "edges": [{"source", "target", "condition", "default"}, ...],
     "layers": int, "width": float, "height": float}

- ``layer``: the longest path from a source (a node without in-edges) to the node, so every edge
  points to a later layer. Nodes unreachable from ``start`` are laid out the same way.
- ``order``: the node's row within its layer, chosen by a few barycenter sweeps (down, then up) that
  reduce edge crossings; the ordering with the fewest crossings between adjacent layers is kept.
- ``x = layer * LAYER_GAP``; ``y = order * ROW_GAP``, each layer centered on the tallest one, so
  coordinates run from 0 to ``width`` / ``height`` (the extent of the node positions; a UI adds
  its node size and margins).

Edges that point at unknown nodes are left out (they can't be drawn). A cyclic spec raises
ValueError naming the cycle (the API answers 422), as does a spec with a duplicate node id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestration.workflows.spec import WorkflowSpec
from orchestration.workflows.validate import node_graph, topological_order

__all__ = ["LAYER_GAP", "ROW_GAP", "SWEEPS", "preview"]

#: Horizontal distance between layers.
LAYER_GAP = 220.0
#: Vertical distance between rows of a layer.
ROW_GAP = 120.0
#: Barycenter sweeps (each one down and one up).
SWEEPS = 4


def preview(spec: WorkflowSpec) -> dict[str, Any]:
    """The layered layout of ``spec`` (see the module docstring). ValueError on a cycle."""
    _, successors, predecessors = node_graph(spec, unique_ids=True)  # ValueError on a duplicate id
    order = topological_order(spec)  # ValueError("cycle: a -> b -> a") on a cycle
    edges = [e for e in spec.edges if e.source in successors and e.target in successors]

    layer_of: dict[str, int] = {}
    for node_id in order:
        layer_of[node_id] = max((layer_of[p] + 1 for p in predecessors[node_id]), default=0)
    count = max(layer_of.values()) + 1
    layers: list[list[str]] = [[] for _ in range(count)]
    for node in spec.nodes:  # the initial order within a layer: spec order
        layers[layer_of[node.node_id]].append(node.node_id)

    layers = _reduce_crossings(layers, layer_of, predecessors, successors)

    tallest = max(len(layer) for layer in layers)
    position: dict[str, tuple[int, float, float]] = {}
    for index, layer in enumerate(layers):
        offset = (tallest - len(layer)) / 2
        for row, node_id in enumerate(layer):
            position[node_id] = (row, index * LAYER_GAP, (row + offset) * ROW_GAP)
    nodes = []
    for node in spec.nodes:
        row, x, y = position[node.node_id]
        nodes.append(
            {
                "node_id": node.node_id,
                "type": node.type,
                "name": node.name,
                "layer": layer_of[node.node_id],
                "order": row,
                "x": x,
                "y": y,
            }
        )
    return {
        "nodes": nodes,
        "edges": [
            {"source": e.source, "target": e.target, "condition": e.condition, "default": e.default}
            for e in edges
        ],
        "layers": count,
        "width": (count - 1) * LAYER_GAP,
        "height": (tallest - 1) * ROW_GAP,
    }


def _centered(layers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Each node's row, measured from its layer's middle (layers are drawn centered)."""
    return {node_id: row - (len(layer) - 1) / 2 for layer in layers for row, node_id in enumerate(layer)}


def _sweep(layers: list[list[str]], indices: Sequence[int], neighbours: Mapping[str, Sequence[str]]) -> None:
    """Reorder each layer in ``indices`` (in that order) by the mean position of its neighbours."""
    position = _centered(layers)
    for index in indices:
        current = layers[index]

        def barycenter(item: tuple[int, str]) -> tuple[float, int]:
            row, node_id = item
            around = neighbours[node_id]
            if not around:
                return (position[node_id], row)
            return (sum(position[n] for n in around) / len(around), row)

        layers[index] = [node_id for _, node_id in sorted(enumerate(current), key=barycenter)]
        position.update(_centered([layers[index]]))


def _crossings(
    layers: Sequence[Sequence[str]], layer_of: Mapping[str, int], successors: Mapping[str, Sequence[str]]
) -> int:
    """Crossings between edges that join adjacent layers (inversions, counted with a Fenwick tree)."""
    row = {node_id: r for layer in layers for r, node_id in enumerate(layer)}
    total = 0
    for index in range(len(layers) - 1):
        pairs = sorted(
            (row[source], row[target])
            for source in layers[index]
            for target in successors[source]
            if layer_of[target] == index + 1
        )
        size = len(layers[index + 1])
        tree = [0] * (size + 1)
        for seen, (_, target_row) in enumerate(pairs):
            # Earlier edges (from rows above, or the same row) that end strictly below target_row.
            i, not_below = target_row + 1, 0
            while i > 0:
                not_below += tree[i]
                i -= i & -i
            total += seen - not_below
            i = target_row + 1
            while i <= size:
                tree[i] += 1
                i += i & -i
    return total


def _reduce_crossings(
    layers: list[list[str]],
    layer_of: Mapping[str, int],
    predecessors: Mapping[str, Sequence[str]],
    successors: Mapping[str, Sequence[str]],
) -> list[list[str]]:
    best = [list(layer) for layer in layers]
    best_crossings = _crossings(best, layer_of, successors)
    current = [list(layer) for layer in layers]
    for _ in range(SWEEPS):
        if best_crossings == 0:
            break
        _sweep(current, range(1, len(current)), predecessors)
        _sweep(current, range(len(current) - 2, -1, -1), successors)
        crossings = _crossings(current, layer_of, successors)
        if crossings < best_crossings:
            best, best_crossings = [list(layer) for layer in current], crossings
    return best
