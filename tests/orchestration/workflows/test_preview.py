"""The layered layout the UI draws."""

from __future__ import annotations

import itertools
import time

import pytest

from orchestration.workflows.preview import LAYER_GAP, ROW_GAP, _crossings, preview
from orchestration.workflows.spec import WorkflowSpec


def spec(nodes: list[tuple[str, str]], edges: list[tuple], name: str = "wf") -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "name": name,
            "nodes": [{"node_id": n, "type": t, "name": n.title()} for n, t in nodes],
            "edges": [{"source": e[0], "target": e[1], **(e[2] if len(e) > 2 else {})} for e in edges],
        }
    )


def by_id(layout: dict) -> dict[str, dict]:
    return {n["node_id"]: n for n in layout["nodes"]}


def assert_no_overlaps(layout: dict) -> None:
    points = [(n["x"], n["y"]) for n in layout["nodes"]]
    assert len(set(points)) == len(points)
    for node in layout["nodes"]:
        assert node["x"] == node["layer"] * LAYER_GAP
        assert 0 <= node["x"] <= layout["width"] and 0 <= node["y"] <= layout["height"]
    for layer in range(layout["layers"]):
        rows = sorted(n["order"] for n in layout["nodes"] if n["layer"] == layer)
        assert rows == list(range(len(rows)))


def test_the_order_example_is_a_row():
    layout = preview(
        spec(
            [("start", "start"), ("verify", "task"), ("payment", "task"), ("end", "end")],
            [("start", "verify"), ("verify", "payment"), ("payment", "end")],
        )
    )
    assert [(n["node_id"], n["layer"], n["x"], n["y"]) for n in layout["nodes"]] == [
        ("start", 0, 0.0, 0.0),
        ("verify", 1, 220.0, 0.0),
        ("payment", 2, 440.0, 0.0),
        ("end", 3, 660.0, 0.0),
    ]
    assert layout["layers"] == 4 and layout["width"] == 660.0 and layout["height"] == 0.0
    assert layout["nodes"][1] == {
        "node_id": "verify",
        "type": "task",
        "name": "Verify",
        "layer": 1,
        "order": 0,
        "x": 220.0,
        "y": 0.0,
    }
    assert layout["edges"][0] == {"source": "start", "target": "verify", "condition": None, "default": False}


def test_diamond():
    layout = preview(
        spec(
            [
                ("start", "start"),
                ("fan", "parallel"),
                ("a", "task"),
                ("b", "task"),
                ("merge", "join"),
                ("end", "end"),
            ],
            [("start", "fan"), ("fan", "a"), ("fan", "b"), ("a", "merge"), ("b", "merge"), ("merge", "end")],
        )
    )
    nodes = by_id(layout)
    assert {k: v["layer"] for k, v in nodes.items()} == {
        "start": 0,
        "fan": 1,
        "a": 2,
        "b": 2,
        "merge": 3,
        "end": 4,
    }
    assert layout["layers"] == 5 and layout["height"] == ROW_GAP
    # The branches stack; the single nodes sit centered between them.
    assert sorted((nodes["a"]["y"], nodes["b"]["y"])) == [0.0, ROW_GAP]
    assert nodes["start"]["y"] == nodes["fan"]["y"] == nodes["merge"]["y"] == nodes["end"]["y"] == ROW_GAP / 2
    assert_no_overlaps(layout)


def test_a_100_wide_fan_out():
    workers = [f"w{i}" for i in range(100)]
    layout = preview(
        spec(
            [
                ("start", "start"),
                ("fan", "parallel"),
                *((w, "task") for w in workers),
                ("merge", "join"),
                ("end", "end"),
            ],
            [
                ("start", "fan"),
                *(("fan", w) for w in workers),
                *((w, "merge") for w in workers),
                ("merge", "end"),
            ],
        )
    )
    nodes = by_id(layout)
    assert layout["layers"] == 5
    assert {nodes[w]["layer"] for w in workers} == {2}
    assert [nodes[w]["order"] for w in workers] == list(range(100))  # no reason to reorder them
    assert layout["height"] == 99 * ROW_GAP and layout["width"] == 4 * LAYER_GAP
    assert nodes["fan"]["y"] == nodes["merge"]["y"] == 99 * ROW_GAP / 2
    assert_no_overlaps(layout)
    assert len(layout["edges"]) == 202


def test_layer_is_the_longest_path():
    layout = preview(
        spec(
            [
                ("start", "start"),
                ("a", "task"),
                ("b", "task"),
                ("c", "task"),
                ("end", "end"),
                ("orphan", "task"),
                ("orphan_child", "task"),
            ],
            [
                ("start", "a"),
                ("a", "b"),
                ("b", "c"),
                ("start", "c"),
                ("c", "end"),
                ("start", "end"),
                ("orphan", "orphan_child"),
            ],
        )
    )
    layers = {k: v["layer"] for k, v in by_id(layout).items()}
    assert layers == {"start": 0, "a": 1, "b": 2, "c": 3, "end": 4, "orphan": 0, "orphan_child": 1}
    assert_no_overlaps(layout)


def test_barycenter_sweeps_remove_avoidable_crossings():
    # In spec order, a->y and b->x cross; the sweeps untangle them.
    layout = preview(
        spec(
            [
                ("start", "start"),
                ("a", "task"),
                ("b", "task"),
                ("x", "task"),
                ("y", "task"),
                ("x2", "task"),
                ("y2", "task"),
            ],
            [("start", "a"), ("start", "b"), ("a", "y"), ("b", "x"), ("y", "y2"), ("x", "x2")],
        )
    )
    nodes = by_id(layout)
    assert (nodes["a"]["order"] < nodes["b"]["order"]) == (nodes["y"]["order"] < nodes["x"]["order"])
    assert (nodes["y"]["order"] < nodes["x"]["order"]) == (nodes["y2"]["order"] < nodes["x2"]["order"])
    assert_no_overlaps(layout)


def test_crossings_count():
    layers = [["a", "b", "c"], ["x", "y", "z"]]
    layer_of = {"a": 0, "b": 0, "c": 0, "x": 1, "y": 1, "z": 1}
    # a->z crosses b->x, b->y, c->x, c->y (4); b->x and c->y don't cross; b->y crosses c->x (1).
    succ = {"a": ["z"], "b": ["x", "y"], "c": ["x", "y"], "x": [], "y": [], "z": []}
    assert _crossings(layers, layer_of, succ) == 5
    brute = 0
    edges = [(layers[0].index(s), layers[1].index(t)) for s, ts in succ.items() if s in layers[0] for t in ts]
    for (s1, t1), (s2, t2) in itertools.combinations(edges, 2):
        brute += (s1 - s2) * (t1 - t2) < 0
    assert brute == 5


def test_switch_edges_keep_their_conditions_and_dangling_edges_are_left_out():
    layout = preview(
        spec(
            [("start", "start"), ("route", "switch"), ("big", "task"), ("small", "task"), ("end", "end")],
            [
                ("start", "route"),
                ("route", "big", {"condition": "input.amount > 100"}),
                ("route", "small", {"default": True}),
                ("big", "end"),
                ("small", "end"),
                ("small", "ghost"),
            ],
        )
    )
    assert {
        "source": "route",
        "target": "big",
        "condition": "input.amount > 100",
        "default": False,
    } in layout["edges"]
    assert {"source": "route", "target": "small", "condition": None, "default": True} in layout["edges"]
    assert all(e["target"] != "ghost" for e in layout["edges"])
    assert_no_overlaps(layout)


def test_cycles_and_duplicates_raise_value_error():
    with pytest.raises(ValueError, match=r"cycle: a -> b -> a"):
        preview(
            spec([("start", "start"), ("a", "task"), ("b", "task")], [("start", "a"), ("a", "b"), ("b", "a")])
        )
    with pytest.raises(ValueError, match="cycle"):
        preview(spec([("a", "task")], [("a", "a")]))
    with pytest.raises(ValueError, match="duplicate node id 'a'"):
        preview(spec([("a", "task"), ("a", "end")], []))


def test_large_specs_lay_out_quickly():
    ids = [f"n{i}" for i in range(1000)]
    chain = spec([(i, "task") for i in ids], list(itertools.pairwise(ids)))
    grid_ids = [f"g{layer}_{row}" for layer in range(10) for row in range(100)]
    grid_edges = [
        (f"g{layer}_{row}", f"g{layer + 1}_{(row * 37 + k) % 100}")
        for layer in range(9)
        for row in range(100)
        for k in range(4)
    ]
    grid = spec([(i, "task") for i in grid_ids], grid_edges)
    started = time.perf_counter()
    chain_layout, grid_layout = preview(chain), preview(grid)
    assert time.perf_counter() - started < 20  # about a second on one slow core
    assert chain_layout["layers"] == 1000 and chain_layout["height"] == 0.0
    assert grid_layout["layers"] == 10
    assert_no_overlaps(chain_layout)
    assert_no_overlaps(grid_layout)
