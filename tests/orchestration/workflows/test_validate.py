"""Spec parsing and validation: every problem reported at once, each with its node id."""

from __future__ import annotations

import copy
import json
import sys

import pytest

from orchestration.workflows.executors import host_matches, module_allowed
from orchestration.workflows.spec import MAX_SPEC_BYTES, NODE_ID_PATTERN, Node, TaskTemplate, WorkflowSpec
from orchestration.workflows.validate import (
    Problem,
    node_graph,
    parse_spec,
    resolve_template,
    topological_order,
    validate_spec,
)
from prioritymax.settings import REPO_ROOT

ALLOWED_MODULES = ["workflows"]
URL_HOSTS = ["payment.example.com", "*.slack.com"]
#: How the executors' messages name the URL hosts allowed (the URL_HOSTS above).
ALLOWLIST = "PRIORITYMAX_WORKFLOW_URL_ALLOWLIST=payment.example.com,*.slack.com"


def order_spec() -> dict:
    """The seed's example spec, as the repository ships it."""
    return json.loads((REPO_ROOT / "examples" / "order_workflow.json").read_text())


def spec_of(raw: dict) -> WorkflowSpec:
    spec, problems = parse_spec(raw)
    assert problems == [] and spec is not None
    return spec


def problems_of(raw: dict | WorkflowSpec, **kwargs) -> list[Problem]:
    spec = raw if isinstance(raw, WorkflowSpec) else spec_of(raw)
    options = {
        "templates": {},
        "resolve_workflow": lambda workflow_id, version: None,
        "allowed_modules": ALLOWED_MODULES,
        "url_hosts": URL_HOSTS,
    }
    options.update(kwargs)
    return validate_spec(spec, **options)


def messages(problems: list[Problem], node_id: str | None) -> list[str]:
    return [p.message for p in problems if p.node_id == node_id]


def task(node_id: str, callable_: str = "workflows.tasks:verify_order") -> dict:
    return {
        "node_id": node_id,
        "type": "task",
        "template": {"executor": "python", "config": {"callable": callable_}},
    }


def flow(nodes: list[dict], edges: list[tuple], name: str = "wf") -> dict:
    """A spec from nodes and (source, target[, extra edge fields]) tuples."""
    return {
        "name": name,
        "nodes": nodes,
        "edges": [{"source": e[0], "target": e[1], **(e[2] if len(e) > 2 else {})} for e in edges],
    }


START = {"node_id": "start", "type": "start"}
END = {"node_id": "end", "type": "end"}


# ------------------------------------------------------------------------------------------- parse
@pytest.mark.parametrize("encode", [json.dumps, lambda d: json.dumps(d).encode(), copy.deepcopy])
def test_the_seed_example_is_valid(encode):
    spec, problems = parse_spec(encode(order_spec()))
    assert problems == []
    assert spec.name == "Order Processing" and [n.node_id for n in spec.nodes] == [
        "start",
        "verify",
        "payment",
        "end",
    ]
    assert problems_of(spec) == []
    assert problems_of(spec, workflow_id="wf_order", default_executor="http") == []


def test_oversized_spec_is_one_problem():
    raw = order_spec()
    raw["variables"] = {"blob": "x" * MAX_SPEC_BYTES}
    text = json.dumps(raw)
    spec, problems = parse_spec(text)
    assert spec is None
    assert problems == [Problem(None, f"spec is {len(text.encode())} bytes; the limit is {MAX_SPEC_BYTES}")]
    spec, problems = parse_spec(order_spec(), max_bytes=100)
    assert spec is None and len(problems) == 1
    assert problems[0].message.startswith("spec is ") and problems[0].message.endswith("the limit is 100")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "spec is not"),
        ("[1, 2]", "must be a JSON object, not list"),
        ('"text"', "must be a JSON object, not str"),
        ({"name": "x", "nodes": [], "blob": object()}, "not JSON-serializable"),
    ],
)
def test_unparseable_specs(raw, fragment):
    spec, problems = parse_spec(raw)
    assert spec is None and len(problems) == 1 and problems[0].node_id is None
    assert fragment in problems[0].message


def test_pydantic_errors_carry_node_ids_and_edge_names():
    raw = order_spec()
    del raw["nodes"][1]["type"]
    raw["nodes"][2]["template"]["retry_policy"] = {"max_retries": 99}
    raw["nodes"][3]["colour"] = "red"
    raw["nodes"].append({"type": "task"})
    raw["edges"][1]["weight"] = 3
    raw["edges"].append({"source": "payment"})
    spec, problems = parse_spec(raw)
    assert spec is None
    by_node = {(p.node_id, p.message) for p in problems}
    assert ("verify", "nodes[1].type: Field required") in by_node
    assert any(
        n == "payment" and m.startswith("nodes[2].template.retry_policy.max_retries: ") for n, m in by_node
    )
    assert ("end", "nodes[3].colour: Extra inputs are not permitted") in by_node
    assert (None, "nodes[4].node_id: Field required") in by_node
    assert (None, "edges[1] (verify -> payment).weight: Extra inputs are not permitted") in by_node
    assert (None, "edges[3] (payment -> ?).target: Field required") in by_node
    assert all(p.as_dict() == {"node_id": p.node_id, "message": p.message} for p in problems)


def test_workflow_level_pydantic_errors():
    _, problems = parse_spec({"nodes": []})
    assert {p.message for p in problems} == {
        "name: Field required",
        "nodes: List should have at least 1 item after validation, not 0",
    }


# ------------------------------------------------------------------------------- many at once
def test_every_problem_is_reported_with_its_node_id(tmp_path, monkeypatch):
    # A module outside the allowlist that would leave a trace if it were ever imported.
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_wf_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\ndef run(payload, meta):\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = flow(
        [
            START,
            task("a"),
            task("b"),
            {"node_id": "c", "type": "task", "template": {"executor": "python", "config": {}}},
            {"node_id": "d", "type": "task", "template": {"executor": "ftp", "config": {}}},
            task("e", "evil_wf_module:run"),
            {"node_id": "f", "type": "wormhole"},
            END,
        ],
        [
            ("start", "a"),
            ("a", "b"),
            ("b", "a"),  # a <-> b is a cycle
            ("b", "ghost"),  # dangling
            ("start", "c"),
            ("c", "d"),
            ("d", "e"),
            ("e", "f"),
            ("f", "end"),
        ],
    )
    problems = problems_of(raw)
    assert messages(problems, "a") == ["cycle: a -> b -> a"]
    assert messages(problems, "b") == ["edge 3 (b -> ghost) points at unknown node 'ghost'"]
    assert messages(problems, "c") == ["python executor: config.callable is required ('module:function')"]
    assert messages(problems, "d") == [
        "unknown executor 'ftp'; known executors: python, http, container, external"
    ]
    assert messages(problems, "e") == [
        "python executor: module 'evil_wf_module' is not allowed "
        "(PRIORITYMAX_WORKFLOW_PYTHON_MODULES allows workflows)"
    ]
    assert messages(problems, "f") == [
        "unknown node type 'wormhole'; known types: "
        "start, end, task, parallel, join, switch, timer, subworkflow"
    ]
    assert messages(problems, None) == []
    assert len(problems) == 6
    assert not marker.exists() and "evil_wf_module" not in sys.modules


def test_graph_shape_problems():
    raw = flow(
        [
            {"node_id": "start", "type": "start"},
            {"node_id": "start2", "type": "start"},
            task("a"),
            task("a"),
            {"node_id": "bad-id", "type": "task"},
            task("lonely"),
            {"node_id": "end", "type": "end"},
        ],
        [
            ("start", "a"),
            ("a", "start"),
            ("a", "a"),
            ("a", "end"),
            ("a", "end"),
            ("end", "a"),
            ("nowhere", "void"),
            ("start2", "end"),
        ],
    )
    problems = problems_of(raw)
    assert "a workflow needs exactly one start node; it has 2: start, start2" in messages(problems, None)
    assert "edge 6 (nowhere -> void) points at unknown nodes 'nowhere' and 'void'" in messages(problems, None)
    assert any(m.startswith("duplicate node id 'a' (nodes[2] and nodes[3])") for m in messages(problems, "a"))
    assert "edge 2 (a -> a) is a self-loop" in messages(problems, "a")
    assert "edge 4 (a -> end) duplicates edge 3" in messages(problems, "a")
    assert "the start node can't have incoming edges (it has some from a)" in messages(problems, "start")
    assert "an end node can't have outgoing edges (it has some to a)" in messages(problems, "end")
    assert "cycle: start -> a -> start" in messages(problems, "start")
    assert "cycle: a -> end -> a" not in messages(problems, "a")  # one problem per cycle (same component)
    bad = messages(problems, "bad-id")
    assert any("must match" in m for m in bad) and "a task node needs a template or a template_ref" in bad
    assert messages(problems, "lonely") == ["node 'lonely' is not reachable from the start node"]


@pytest.mark.parametrize("node_id", ["a__b", "__a", "a_", "_", "1a", "a-b"])
def test_node_ids_that_cant_be_op_names_or_read_back(node_id):
    # Nested op names join ids with "__", which events read back as "." (a__b would be reported as a.b).
    problems = problems_of(flow([START, task(node_id), END], [("start", node_id), (node_id, "end")]))
    assert [m for m in messages(problems, node_id) if "must match" in m] == [
        f"node id {node_id!r} must match {NODE_ID_PATTERN} (a letter or underscore, then letters, digits or "
        "underscores, at most 64 characters; no '__' and no '_' at the end)"
    ]


@pytest.mark.parametrize("node_id", ["a", "_a", "a_b", "A1_b2_c3", "a" * 64])
def test_node_ids_accepted(node_id):
    assert problems_of(flow([START, task(node_id), END], [("start", node_id), (node_id, "end")])) == []


def test_no_start_no_end():
    problems = problems_of(flow([task("a")], []))
    assert messages(problems, None) == [
        "a workflow needs exactly one start node; it has none",
        "a workflow needs at least one end node; it has none",
    ]


# --------------------------------------------------------------------------------------- switch
def switch_flow(edges: list[tuple], switch_type: str = "switch") -> dict:
    return flow(
        [START, {"node_id": "route", "type": switch_type}, task("big"), task("small"), task("other"), END],
        [("start", "route"), *edges, ("big", "end"), ("small", "end"), ("other", "end")],
    )


def test_a_valid_switch():
    raw = switch_flow(
        [
            ("route", "big", {"condition": "input.amount > 100 and results.start is not None"}),
            ("route", "small", {"condition": "input.amount <= 100"}),
            ("route", "other", {"default": True}),
        ]
    )
    assert problems_of(raw) == []


def test_switch_problems():
    raw = switch_flow(
        [
            ("route", "big", {"condition": "__import__('os').system('true')"}),
            ("route", "small", {"default": True}),
            ("route", "other", {"default": True}),
            ("start", "other", {"condition": "True"}),
        ]
    )
    raw["edges"].append({"source": "big", "target": "small", "default": True})
    problems = problems_of(raw)
    route = messages(problems, "route")
    assert "a switch node has at most one default out-edge; it has 2 (edges 2, 3)" in route
    assert any(m.startswith("edge 1 (route -> big) condition") and "__import__" in m for m in route)
    assert messages(problems, "start") == [
        "edge 4 (start -> other) has a condition, "
        "but only a switch node's out-edges may ('start' is a start node)"
    ]
    assert messages(problems, "big") == [
        "edge 8 (big -> small) has default: true, "
        "but only a switch node's out-edges may ('big' is a task node)"
    ]

    unconditioned = problems_of(switch_flow([("route", "big"), ("route", "small", {"condition": "1 +"})]))
    assert (
        messages(unconditioned, "route")[0]
        == "edge 1 (route -> big) out of a switch needs a condition or default: true"
    )
    assert "invalid syntax" in messages(unconditioned, "route")[1]

    both = problems_of(switch_flow([("route", "big", {"condition": "True", "default": True})]))
    assert "is both conditional and the default" in messages(both, "route")[0]

    dead_end = flow([START, {"node_id": "route", "type": "switch"}, END], [("start", "route")])
    assert "a switch node needs at least one out-edge" in messages(problems_of(dead_end), "route")


# ------------------------------------------------------------------------------ per node type
def test_join_parallel_timer_and_non_task_templates():
    raw = flow(
        [
            START,
            {"node_id": "fan", "type": "parallel"},
            task("a"),
            {"node_id": "merge", "type": "join", "template_ref": "x"},
            {"node_id": "wait", "type": "timer", "config": {"seconds": 90000}},
            {"node_id": "wait2", "type": "timer", "config": {"seconds": "soon"}},
            {"node_id": "wait3", "type": "timer"},
            {"node_id": "ok_wait", "type": "timer", "config": {"seconds": 1.5}},
            {"node_id": "end", "type": "end", "template": {"executor": "python"}},
        ],
        [
            ("start", "fan"),
            ("fan", "a"),
            ("a", "merge"),
            ("merge", "wait"),
            ("wait", "wait2"),
            ("wait2", "wait3"),
            ("wait3", "ok_wait"),
            ("ok_wait", "end"),
        ],
    )
    problems = problems_of(raw)
    assert messages(problems, "fan") == ["a parallel node needs at least 2 out-edges; it has 1"]
    assert messages(problems, "merge") == [
        "a join node can't have a template or template_ref (only task nodes do)",
        "a join node needs at least 2 in-edges; it has 1",
    ]
    assert messages(problems, "wait") == ["config.seconds must be between 0 and 86400; it is 90000"]
    assert messages(problems, "wait2") == ["config.seconds must be a number, not str"]
    assert messages(problems, "wait3") == ["a timer node needs config.seconds"]
    assert messages(problems, "ok_wait") == []
    assert messages(problems, "end") == [
        "an end node can't have a template or template_ref (only task nodes do)"
    ]


def test_parallel_and_join_diamond_is_valid():
    raw = flow(
        [
            START,
            {"node_id": "fan", "type": "parallel"},
            task("a"),
            task("b"),
            {"node_id": "merge", "type": "join"},
            END,
        ],
        [("start", "fan"), ("fan", "a"), ("fan", "b"), ("a", "merge"), ("b", "merge"), ("merge", "end")],
    )
    assert problems_of(raw) == []


def single_task(template: dict | None = None, **fields) -> dict:
    node = {"node_id": "t", "type": "task", **fields}
    if template is not None:
        node["template"] = template
    return flow([START, node, END], [("start", "t"), ("t", "end")])


def not_allowed(executor: str, url: str, host: str) -> str:
    return f"{executor} executor: host {host!r} of {url} is not allowed ({ALLOWLIST})"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ({"executor": "http", "config": {"url": "https://payment.example.com/x"}}, []),
        ({"executor": "http", "config": {"url": "http://PAYMENT.example.com:8080/x", "method": "get"}}, []),
        # OPTIONS is one of the executor's methods; header values are sent as their text.
        (
            {
                "executor": "http",
                "config": {"url": "https://payment.example.com/", "method": "options", "headers": {"X-N": 1}},
            },
            [],
        ),
        ({"executor": "http", "config": {}}, ["http executor: config.url is required (a string)"]),
        ({"executor": "http", "config": {"url": 5}}, ["http executor: config.url is required (a string)"]),
        (
            {"executor": "http", "config": {"url": "ftp://payment.example.com/"}},
            ["http executor: URL 'ftp://payment.example.com/' must use http or https"],
        ),
        (
            {"executor": "http", "config": {"url": "https:///path"}},
            ["http executor: URL 'https:///path' has no host"],
        ),
        (
            {"executor": "http", "config": {"url": "https://payment.example.com:99999/"}},
            ["http executor: URL 'https://payment.example.com:99999/' has a port out of range (1-65535)"],
        ),
        (
            {"executor": "http", "config": {"url": "https://evil.com/x"}},
            [not_allowed("http", "https://evil.com/x", "evil.com")],
        ),
        (
            {"executor": "http", "config": {"url": "https://payment.example.com.evil.com/"}},
            [not_allowed("http", "https://payment.example.com.evil.com/", "payment.example.com.evil.com")],
        ),
        # The host httpx connects to is the one after the user info.
        (
            {"executor": "http", "config": {"url": "http://payment.example.com@evil.host/"}},
            [not_allowed("http", "http://payment.example.com@evil.host/", "evil.host")],
        ),
        (
            {
                "executor": "http",
                "config": {"url": "https://payment.example.com/", "method": "BREW", "headers": ["X-N"]},
            },
            [
                "http executor: unsupported method 'BREW' "
                "(one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS)",
                "http executor: config.headers must be an object",
            ],
        ),
        ({"executor": "container", "config": {"image": "ubuntu:latest", "command": ["echo", "hi"]}}, []),
        ({"executor": "container", "config": {"image": "ubuntu:latest", "command": "echo hi"}}, []),
        ({"executor": "container", "config": {"image": "ubuntu:latest"}}, []),  # the image's own command
        (
            {"executor": "container", "config": {"command": ["echo", 1]}},
            ["container executor: config.image is required (a non-empty string)"],
        ),
        (
            {
                "executor": "container",
                "config": {"image": " ", "command": 5, "env": "A=1", "log_tail": "lots"},
            },
            [
                "container executor: config.image is required (a non-empty string)",
                "container executor: config.command must be a string or a list",
                "container executor: config.env must be an object",
                "container executor: config.log_tail must be a number of lines, not 'lots'",
            ],
        ),
        (
            {"executor": "container", "config": {"image": "x", "command": "echo 'unclosed"}},
            ['container executor: config.command "echo \'unclosed": No closing quotation'],
        ),
        (
            {
                "executor": "external",
                "config": {
                    "url": "https://hooks.slack.com/services/T0",
                    "payload_template": {"text": "done"},
                },
            },
            [],
        ),
        (
            {
                "executor": "external",
                "config": {"url": "https://hooks.slack.com/services/T0", "payload_template": ["{run_id}"]},
            },
            [],
        ),
        (
            {"executor": "external", "config": {"url": "https://slack.com/", "payload_template": 3}},
            [
                not_allowed("external", "https://slack.com/", "slack.com"),
                "external executor: config.payload_template must be an object, a list or a string, not int",
            ],
        ),
        (
            {"executor": "python", "config": {"callable": "workflows.tasks.verify_order"}},
            [
                "python executor: config.callable must be 'module:function', "
                "got 'workflows.tasks.verify_order'"
            ],
        ),
        (
            {"executor": "python", "config": {"callable": "workflows.tasks:a:b"}},
            ["python executor: config.callable must be 'module:function', got 'workflows.tasks:a:b'"],
        ),
        (
            {"executor": "python", "config": {"callable": "../x:y"}},
            ["python executor: '../x' is not a module name"],
        ),
        (
            {"executor": "python", "config": {"callable": "workflows.tasks:__dict__"}},
            ["python executor: '__dict__' is not a public function name (one identifier, no leading _)"],
        ),
        # A dotted name reaches what an allowed module imported (here: the time module's sleep).
        (
            {"executor": "python", "config": {"callable": "workflows.tasks:time.sleep"}},
            ["python executor: 'time.sleep' is not a public function name (one identifier, no leading _)"],
        ),
        # Imported into an allowed module, defined outside it.
        (
            {"executor": "python", "config": {"callable": "workflows.tasks:Any"}},
            ["python executor: workflows.tasks:Any is defined in 'typing', outside the allowed modules"],
        ),
        (
            {"executor": "python", "config": {"callable": "workflows_evil:run"}},
            [
                "python executor: module 'workflows_evil' is not allowed "
                "(PRIORITYMAX_WORKFLOW_PYTHON_MODULES allows workflows)"
            ],
        ),
        (
            {"executor": "python", "config": {"callable": "workflows.tasks:no_such_function"}},
            ["python executor: module 'workflows.tasks' has no attribute 'no_such_function'"],
        ),
        (
            {"executor": "python", "config": {"callable": "workflows.no_such_module:f"}},
            [
                "python executor: cannot import module 'workflows.no_such_module': "
                "No module named 'workflows.no_such_module'"
            ],
        ),
        ({"config": {"callable": "workflows.tasks:verify_order"}}, []),  # the default executor: python
    ],
)
def test_executor_configs(template, expected):
    assert messages(problems_of(single_task(template)), "t") == expected


def test_python_module_import_errors_and_non_callables(tmp_path, monkeypatch):
    package = tmp_path / "wf_pkg_under_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (package / "values.py").write_text(
        "NOT_A_FUNCTION = 42\ndef run(p, m):\n    return p\n"
        "class Box:\n    @staticmethod\n    def run(p, m):\n        return p\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    allowed = {"allowed_modules": ["wf_pkg_under_test"]}
    try:
        broken = problems_of(single_task({"config": {"callable": "wf_pkg_under_test.broken:f"}}), **allowed)
        assert messages(broken, "t") == [
            "python executor: importing 'wf_pkg_under_test.broken' failed: RuntimeError: boom at import"
        ]
        value = problems_of(
            single_task({"config": {"callable": "wf_pkg_under_test.values:NOT_A_FUNCTION"}}), **allowed
        )
        assert messages(value, "t") == [
            "python executor: wf_pkg_under_test.values:NOT_A_FUNCTION is not callable"
        ]
        function = single_task({"config": {"callable": "wf_pkg_under_test.values:run"}})
        assert problems_of(function, **allowed) == []
        # As at run time, a method is not reachable (one identifier, no dots).
        method = problems_of(
            single_task({"config": {"callable": "wf_pkg_under_test.values:Box.run"}}), **allowed
        )
        assert messages(method, "t") == [
            "python executor: 'Box.run' is not a public function name (one identifier, no leading _)"
        ]
        empty = problems_of(function, allowed_modules=[])
        assert messages(empty, "t") == [
            "python executor: module 'wf_pkg_under_test.values' is not allowed "
            "(PRIORITYMAX_WORKFLOW_PYTHON_MODULES allows nothing)"
        ]
    finally:
        for name in [m for m in sys.modules if m.startswith("wf_pkg_under_test")]:
            del sys.modules[name]


def test_templates_refs():
    stored = {
        "pay": TaskTemplate.model_validate(
            {"executor": "http", "config": {"url": "https://payment.example.com/pay", "method": "PUT"}}
        )
    }
    assert problems_of(single_task(template_ref="pay"), templates=stored) == []
    # The inline template overrides the stored one's config keys (here: a disallowed host).
    overridden = single_task({"config": {"url": "https://evil.com/"}}, template_ref="pay")
    assert messages(problems_of(overridden, templates=stored), "t") == [
        f"http executor: host 'evil.com' of https://evil.com/ is not allowed ({ALLOWLIST})"
    ]
    unknown = problems_of(single_task(template_ref="nope"), templates=stored)
    assert messages(unknown, "t") == ["unknown template_ref 'nope'; stored templates: pay"]
    unknown_with_inline = problems_of(
        single_task({"config": {"callable": "workflows.tasks:verify_order"}}, template_ref="nope"),
        templates=stored,
    )
    assert messages(unknown_with_inline, "t") == ["unknown template_ref 'nope'; stored templates: pay"]
    assert messages(problems_of(single_task()), "t") == ["a task node needs a template or a template_ref"]


def test_resolve_template_merges_field_by_field():
    stored = TaskTemplate.model_validate(
        {
            "executor": "http",
            "config": {"url": "https://a.example.com", "method": "PUT", "headers": {"A": "1"}},
            "retry_policy": {"max_retries": 3},
            "timeout_seconds": 10,
        }
    )
    node = Node.model_validate(
        {
            "node_id": "t",
            "type": "task",
            "template_ref": "base",
            "template": {"config": {"method": "POST", "headers": {"B": "2"}}, "timeout_seconds": 5},
        }
    )
    resolved = resolve_template(node, {"base": stored}, "python")
    assert resolved.executor == "http"
    assert resolved.config == {"url": "https://a.example.com", "method": "POST", "headers": {"B": "2"}}
    assert resolved.retry_policy.max_retries == 3 and resolved.timeout_seconds == 5
    resolved.config["url"] = "changed"
    assert stored.config["url"] == "https://a.example.com"  # the stored template is never mutated

    inline_only = Node.model_validate({"node_id": "t", "type": "task", "template": {"config": {"x": 1}}})
    assert resolve_template(inline_only, {}, "container").executor == "container"
    ref_only = Node.model_validate({"node_id": "t", "type": "task", "template_ref": "base"})
    assert resolve_template(ref_only, {"base": stored}, "python") == stored
    assert resolve_template(Node(node_id="t", type="task"), {"base": stored}, "python") is None
    assert (
        resolve_template(Node(node_id="t", type="task", template_ref="nope"), {"base": stored}, "python")
        is None
    )


# ---------------------------------------------------------------------------------- subworkflows
def sub_spec(name: str, *targets: str) -> WorkflowSpec:
    subs = [{"node_id": f"call_{t}", "type": "subworkflow", "config": {"workflow_id": t}} for t in targets]
    ids = ["start", *(s["node_id"] for s in subs), "end"]
    return spec_of(flow([START, *subs, END], list(zip(ids, ids[1:], strict=False)), name=name))


def test_subworkflow_cycles_across_workflows():
    store = {"wf_b": sub_spec("b", "wf_c"), "wf_c": sub_spec("c", "wf_a"), "wf_d": sub_spec("d")}
    calls = []

    def resolve(workflow_id, version):
        calls.append((workflow_id, version))
        return store.get(workflow_id)

    root = sub_spec("a", "wf_b", "wf_d")
    problems = problems_of(root, resolve_workflow=resolve, workflow_id="wf_a")
    assert problems == [Problem("call_wf_b", "subworkflow cycle: wf_a -> wf_b -> wf_c -> wf_a")]
    # Without knowing its own id, a new spec can't be part of a cycle yet.
    assert problems_of(root, resolve_workflow=resolve) == []

    # A cycle further down (wf_x -> wf_y -> wf_x) is reported where the root enters it; it terminates.
    store.update({"wf_x": sub_spec("x", "wf_y"), "wf_y": sub_spec("y", "wf_x", "wf_d")})
    calls.clear()
    problems = problems_of(sub_spec("a", "wf_x"), resolve_workflow=resolve, workflow_id="wf_a")
    assert problems == [Problem("call_wf_x", "subworkflow cycle: wf_a -> wf_x -> wf_y -> wf_x")]
    assert len(calls) <= 4


def test_subworkflow_config_problems():
    store = {"wf_b": sub_spec("b")}
    nodes = [
        START,
        {"node_id": "self_call", "type": "subworkflow", "config": {"workflow_id": "wf_a"}},
        {"node_id": "missing", "type": "subworkflow", "config": {"workflow_id": "wf_zzz", "version": 3}},
        {"node_id": "no_id", "type": "subworkflow"},
        {"node_id": "bad_version", "type": "subworkflow", "config": {"workflow_id": "wf_b", "version": "2"}},
        {"node_id": "ok", "type": "subworkflow", "config": {"workflow_id": "wf_b", "version": 1}},
        END,
    ]
    ids = [n["node_id"] for n in nodes]
    raw = flow(nodes, list(zip(ids, ids[1:], strict=False)))
    seen_versions = []

    def resolve(workflow_id, version):
        seen_versions.append((workflow_id, version))
        return store.get(workflow_id)

    problems = problems_of(raw, resolve_workflow=resolve, workflow_id="wf_a")
    assert problems == [
        Problem("self_call", "subworkflow cycle: wf_a -> wf_a"),
        Problem("missing", "unknown workflow 'wf_zzz' version 3"),
        Problem("no_id", "a subworkflow node needs config.workflow_id (a string)"),
        Problem("bad_version", "config.version must be an integer, not '2'"),
    ]
    assert ("wf_b", 1) in seen_versions

    def failing(workflow_id, version):
        raise ConnectionError("store down")

    problems = problems_of(raw, resolve_workflow=failing)
    assert Problem("ok", "can't resolve workflow 'wf_b' version 1: ConnectionError: store down") in problems


# ----------------------------------------------------------------------------------------- helpers
def test_topological_order_is_stable_and_refuses_cycles():
    raw = flow(
        [task("d"), START, task("b"), task("a"), END],
        [("start", "b"), ("start", "a"), ("a", "d"), ("b", "d"), ("d", "end"), ("d", "ghost")],
    )
    assert topological_order(spec_of(raw)) == ["start", "b", "a", "d", "end"]
    raw["edges"].append({"source": "end", "target": "a"})
    with pytest.raises(ValueError, match="cycle: d -> end -> a -> d"):
        topological_order(spec_of(raw))
    with pytest.raises(ValueError, match="cycle: start -> start"):
        topological_order(spec_of(flow([START], [("start", "start")])))


def test_node_graph():
    raw = flow(
        [START, task("a"), task("b"), task("a"), END],
        [("start", "a"), ("start", "b"), ("start", "a"), ("a", "end"), ("b", "end"), ("b", "ghost")],
    )
    ids, successors, predecessors = node_graph(spec_of(raw))
    assert ids == ["start", "a", "b", "end"]
    assert successors == {"start": ["a", "b"], "a": ["end"], "b": ["end"], "end": []}
    assert predecessors == {"start": [], "a": ["start"], "b": ["start"], "end": ["a", "b"]}
    with pytest.raises(ValueError, match="duplicate node id 'a'"):
        node_graph(spec_of(raw), unique_ids=True)


def test_topological_order_of_a_long_chain():
    ids = [f"n{i}" for i in range(1000)]
    raw = flow([task(i) for i in reversed(ids)], list(zip(ids, ids[1:], strict=False)))
    assert topological_order(spec_of(raw)) == ids
    raw["edges"].append({"source": "n999", "target": "n0"})
    problems = problems_of(raw)
    cycle = [p for p in problems if p.message.startswith("cycle:")]
    assert len(cycle) == 1 and cycle[0].node_id == "n999" and cycle[0].message.count("->") == 1000


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        ("api.example.com", ["api.example.com"], True),
        ("API.Example.com.", ["api.example.com"], True),
        ("api.example.com", ["example.com"], False),
        ("api.example.com", ["*.example.com"], True),
        ("a.b.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("badexample.com", ["*.example.com"], False),
        ("anything.org", ["*"], True),
        ("anything.org", [], False),
    ],
)
def test_host_matches(host, patterns, allowed):
    assert host_matches(host, patterns) is allowed


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("workflows", True),
        ("workflows.tasks", True),
        ("workflows_evil", False),
        ("os", False),
        ("work", False),
    ],
)
def test_module_allowed(module, allowed):
    assert module_allowed(module, ["workflows", ""]) is allowed
