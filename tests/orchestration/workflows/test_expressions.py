"""The switch-condition evaluator: what it computes, and everything it refuses."""

from __future__ import annotations

import time

import pytest

from orchestration.workflows.expressions import (
    MAX_EXPRESSION_CHARS,
    ExpressionError,
    check,
    evaluate,
    switch_names,
)

ITEMS = [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]
NAMES = switch_names(
    {"order_id": 123, "amount": 250.0, "country": "DE", "items": ITEMS},
    {"verify": {"verified": True, "score": 0.75}, "fetch": {"rows": [1, 2, 3], "status": "ok"}},
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("results.verify.verified", True),
        ("results.verify.verified and input.amount > 100", True),
        ("not results.verify.verified or input['country'] == 'FR'", False),
        ('results["verify"]["score"] >= 0.5', True),
        ("vars.order_id == input.order_id", True),
        ("input.items[0].sku", "a"),
        ("input.items[-1]['qty'] + 1", 2),
        ("len(results.fetch.rows) == 3", True),
        ("results.fetch.rows[1:]", [2, 3]),
        ("'DE' in ['DE', 'AT', 'CH']", True),
        ("input.country not in ('FR', 'IT')", True),
        ("results.fetch.status is not None", True),
        ("1 < input.amount / 100 < 3", True),
        ("input.amount // 100 % 2", 0.0),
        ("-input.order_id + +1", -122),
        ("2 ** 10", 1024),
        ("'high' if input.amount > 200 else 'low'", "high"),
        ("{'a': 1, 'b': [1, 2]}['b']", [1, 2]),
        ("max(input.amount, 300) - min([4, 2, 9])", 298.0),
        ("abs(-3) + int('4') + round(2.567, 2)", 9.57),
        ("float('1.5') + bool(0)", 1.5),
        ("str(input.order_id) + '-x'", "123-x"),
        ("'ab' * 3", "ababab"),
        ("[0] * 3 + [1]", [0, 0, 0, 1]),
        (" + ".join(["1"] * 90), 90),
        ("True and 'x'", "x"),
        ("0 or '' or None", None),
    ],
)
def test_evaluates(expression, expected):
    assert check(expression) is None
    result = evaluate(expression, NAMES)
    if isinstance(expected, float):
        assert result == pytest.approx(expected)
    else:
        assert result == expected


def test_switch_names_alias_input_as_vars():
    names = switch_names({"a": 1}, {"n": {"ok": True}})
    assert set(names) == {"input", "vars", "results"}
    assert names["vars"] is names["input"]


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("().__class__", "__class__"),
        ("input.__class__", "__class__"),
        ("__import__('os')", "__import__"),
        ("__builtins__", "__builtins__"),
        ("eval('1')", "calling 'eval' is not allowed"),
        ("exec('1')", "calling 'exec' is not allowed"),
        ("open('/etc/passwd')", "calling 'open'"),
        ("getattr(input, 'x')", "calling 'getattr'"),
        ("input.keys()", "calling 'input.keys'"),
        ("'a'.upper()", "calling"),
        ("(lambda: 1)()", "calling"),
        ("lambda: 1", "lambdas are not allowed"),
        ("[x for x in input]", "comprehensions are not allowed"),
        ("{x: 1 for x in input}", "comprehensions are not allowed"),
        ("{x for x in input}", "comprehensions are not allowed"),
        ("any(x for x in input)", "calling 'any'"),
        ("sum(x for x in [1])", "calling 'sum'"),
        ("len(x for x in [1])", "generator expressions are not allowed"),
        ("f'{input}'", "f-strings are not allowed"),
        ("{1, 2}", "set literals are not allowed"),
        ("[*input]", "unpacking is not allowed"),
        ("{**input}", "unpacking is not allowed"),
        ("len(*[1])", "unpacking is not allowed"),
        ("round(1.5, ndigits=1)", "keyword arguments"),
        ("(y := 1)", "assignment expressions"),
        ("b'x'", "constants of type bytes"),
        ("1j", "constants of type complex"),
        ("...", "constants of type ellipsis"),
        ("1 @ 2", "MatMult"),
        ("1 << 2", "LShift"),
        ("~1", "Invert"),
        ("x = 1", "invalid syntax"),
        ("import os", "invalid syntax"),
        ("", "empty"),
        ("   ", "empty"),
        ("1 +", "invalid syntax"),
        ("a" * (MAX_EXPRESSION_CHARS + 1), "the limit is 2000"),
        ("-" * 500 + "1", "nests deeper"),
        ("(" * 300 + "1" + ")" * 300, "invalid"),
    ],
)
def test_refuses(expression, fragment):
    problem = check(expression)
    assert problem is not None and fragment in problem
    with pytest.raises(ExpressionError, match="."):
        evaluate(expression, NAMES)


def test_check_refuses_non_strings():
    assert "must be a string" in check(None)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError, match="must be a string"):
        evaluate(["x"], NAMES)  # type: ignore[arg-type]


def test_names_shadow_nothing_and_calls_ignore_names():
    # A name bound to a callable is never called: calls resolve against the whitelist only.
    names = {"evil": print, "len": lambda _: 99}
    assert "calling 'evil'" in check("evil()")
    assert evaluate("len([1, 2])", names) == 2


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("unknown_name", "unknown name 'unknown_name'"),
        ("results.verify.missing", "results.verify.missing: results.verify has no key 'missing'"),
        ("results.nope.verified", "results has no key 'nope'"),
        ("results['verify']['nope']", "has no key 'nope'"),
        ("input.items[5]", "out of range"),
        ("input.items['x']", "index must be an integer"),
        ("input.amount.cents", "not a dict"),
        ("input.order_id[0]", "can't index"),
        ("input.order_id[0:1]", "can't slice"),
        ("input['__class__']", "double-underscore"),
        ("1 / 0", "ZeroDivisionError"),
        ("'a' < 1", "TypeError"),
        ("len(5)", "TypeError"),
        ("max([])", "ValueError"),
        ("int('x')", "ValueError"),
        ("'%s' % 1", "%-formatting"),
        ("'%999999999d' % 1", "%-formatting"),
        ("2 ** 65", "exponent"),
        ("9 ** 9 ** 9", "exponent"),
        ("2.0 ** 0.5 ** 100000", "exponent"),
        ("(10 ** 60) ** 60", "over 4096 bits"),
        ("int('9' * 1000) * int('9' * 1000)", "over 4096 bits"),
        ("int('9' * 1300)", "over 4096 bits"),
        (" + ".join(["1"] * 150), "nests deeper"),
        ("input.get", "has no key 'get'"),  # dict methods are not reachable either
        ("round(1.5, 10 ** 9)", "ndigits"),
    ],
)
def test_evaluation_errors(expression, fragment):
    with pytest.raises(ExpressionError) as info:
        evaluate(expression, NAMES)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "expression",
    [
        "'a' * 10 ** 9",
        "10 ** 9 * 'a'",
        "[0] * 10 ** 9",
        "[[0] * 9999] * 9999",
        "str([[0] * 9999] * 99)",
        "'a' * 999999 + 'b' * 999999",
        "str(['x' * 99999] * 11)",
        "int('9' * 5000)",
    ],
)
def test_memory_bombs_fail_fast(expression):
    started = time.perf_counter()
    with pytest.raises(ExpressionError):
        evaluate(expression, NAMES)
    assert time.perf_counter() - started < 5  # generous: it takes milliseconds


def test_big_data_is_readable_but_not_amplified():
    rows = list(range(200_000))
    names = switch_names({}, {"fetch": {"rows": rows}})
    assert evaluate("len(results.fetch.rows) > 100 and results.fetch.rows[-1]", names) == 199_999
    with pytest.raises(ExpressionError, match="limit"):
        evaluate("results.fetch.rows * 10", names)


def test_short_circuit_skips_the_failing_side():
    assert evaluate("False and results.nope.x", NAMES) is False
    assert evaluate("True or results.nope.x", NAMES) is True
    assert evaluate("1 if True else results.nope.x", NAMES) == 1


def test_attribute_access_never_uses_getattr():
    class Thing:
        secret = "s"

    names = {"thing": Thing(), "d": {"secret": "dict value"}}
    assert evaluate("d.secret", names) == "dict value"
    with pytest.raises(ExpressionError, match="not a dict"):
        evaluate("thing.secret", names)
