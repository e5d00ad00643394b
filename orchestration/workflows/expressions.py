"""A small, safe evaluator for switch conditions (no ``eval``, no code objects).

An expression is parsed with ``ast.parse(mode="eval")`` and the tree is walked here, node by node;
only the syntax listed below is accepted, everything else is refused with a clear message.

The names a switch condition sees:

``input``
    The run's input variables (the spec's ``variables`` overridden by the run's ``input_variables``).
``vars``
    The same dict as ``input`` (an alias).
``results``
    A dict ``node_id -> that node's result`` for every node that has finished so far.

Accepted syntax:

- constants: strings, ints, floats, ``True`` / ``False`` / ``None``;
- names (looked up in the names above; an unknown name is an error naming it);
- ``and`` / ``or`` / ``not``; comparisons ``== != < <= > >= in, not in, is, is not`` (chains too);
- arithmetic ``+ - * / // %`` and unary ``-`` / ``+``; ``**`` with an integer exponent of at most
  :data:`MAX_POWER` in absolute value;
- subscripts ``x["k"]``, ``x[0]``, slices ``x[1:3]``;
- attribute access ``results.verify.verified``, which means a *dict key lookup* and works on dicts
  only (never ``getattr``); names and keys that start with a double underscore are always refused;
- list, tuple and dict literals; the conditional expression ``a if c else b``;
- calls of the functions in :data:`FUNCTIONS` only (``len min max abs int float str bool round``),
  positional arguments only.

Not accepted: lambdas, comprehensions, f-strings, sets, ``**``/``*`` unpacking, keyword arguments,
calls of anything else (``eval``, methods, names from the run's data), ``%``-formatting of strings.
Values an expression builds by ``+``, ``*`` and ``str()`` are capped at about
:data:`MAX_RESULT_SIZE` characters' worth and integers at :data:`MAX_INT_BITS` bits, and the check is
made *before* the value is built, so ``"a" * 10**9`` or ``str([[0] * 9999] * 9999)`` fail fast instead
of exhausting memory.

Usage::

    check('results.verify.verified and input["amount"] < 100')     # None: fine
    evaluate('results.verify.verified', {"results": {"verify": {"verified": True}}})  # True
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

__all__ = ["ExpressionError", "FUNCTIONS", "check", "evaluate", "switch_names"]

#: Longest expression accepted (characters).
MAX_EXPRESSION_CHARS = 2000
#: Deepest syntax tree accepted (keeps the recursive walk far from Python's recursion limit).
MAX_DEPTH = 100
#: Largest value an operation may produce, measured roughly as the length of its ``str()``
#: (a string counts its characters, a container its items' sizes plus a little per item).
MAX_RESULT_SIZE = 1_000_000
#: Most size-measuring steps one evaluation may spend (bounds the time a hostile expression takes).
MAX_WORK = 5_000_000
#: Largest integer an operation may produce, in bits.
MAX_INT_BITS = 4096
#: Largest absolute integer exponent accepted by ``**``.
MAX_POWER = 64


class ExpressionError(ValueError):
    """An expression that doesn't parse, uses refused syntax, or fails while being evaluated."""


def _round(number: Any, ndigits: Any = None) -> Any:
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > 100):
        raise ExpressionError("round(): ndigits must be an integer between -100 and 100")
    return round(number, ndigits)


#: The only callables an expression may call.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "round": _round,
}

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARYOPS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_CONSTANT_TYPES = (str, int, float, bool, type(None))
_SEQUENCES = (str, list, tuple)

# What the static check accepts; anything else is refused with _describe(node).
_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.BinOp,
    ast.Compare,
    ast.Subscript,
    ast.Slice,
    ast.Attribute,
    ast.List,
    ast.Tuple,
    ast.Dict,
    ast.IfExp,
    ast.Call,
    *_BINOPS,
    *_UNARYOPS,
    *_CMPOPS,
)
_REFUSED = {
    ast.Lambda: "lambdas are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Starred: "* unpacking is not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}


def _describe(node: ast.AST) -> str:
    if type(node) in _REFUSED:
        return _REFUSED[type(node)]
    if isinstance(node, ast.operator | ast.unaryop | ast.cmpop | ast.boolop):
        return f"the operator {type(node).__name__} is not allowed"
    return f"{type(node).__name__} expressions are not allowed"


def _is_dunder(name: str) -> bool:
    return name.startswith("__")


def _static_check(tree: ast.Expression) -> str | None:
    """The first refused construct in ``tree`` as a message, or None."""
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"expression nests deeper than {MAX_DEPTH} levels"
        if not isinstance(node, _ALLOWED_NODES):
            return _describe(node)
        if isinstance(node, ast.Constant) and not isinstance(node.value, _CONSTANT_TYPES):
            return f"constants of type {type(node.value).__name__} are not allowed"
        if isinstance(node, ast.Name) and _is_dunder(node.id):
            return f"the name {node.id!r} is not allowed (double-underscore names are refused)"
        if isinstance(node, ast.Attribute) and _is_dunder(node.attr):
            return f"the attribute {node.attr!r} is not allowed (double-underscore names are refused)"
        if isinstance(node, ast.Dict) and any(key is None for key in node.keys):
            return "** unpacking is not allowed"
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                called = _short(node.func)
                return f"calling {called!r} is not allowed; callable functions: {', '.join(FUNCTIONS)}"
            if node.keywords:
                return f"keyword arguments are not allowed (in the call of {node.func.id})"
            # The function name is not looked up among the names: only walk the arguments.
            stack.extend((arg, depth + 1) for arg in node.args)
            continue
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return None


@lru_cache(maxsize=1024)
def _compile(expression: str) -> ast.Expression | str:
    """The checked tree of ``expression``, or the message saying why it is refused."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        return f"expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}"
    if not expression.strip():
        return "expression is empty"
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" (column {exc.offset})" if exc.offset else ""
        return f"invalid syntax: {exc.msg}{where}"
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return f"invalid expression: {exc}"
    return _static_check(tree) or tree


def check(expression: str) -> str | None:
    """None when ``expression`` parses and uses only accepted syntax, else a message saying why not."""
    if not isinstance(expression, str):
        return f"an expression must be a string, not {type(expression).__name__}"
    result = _compile(expression)
    return result if isinstance(result, str) else None


def switch_names(input_variables: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """The names a switch condition sees: ``input``, its alias ``vars``, and ``results``."""
    return {"input": input_variables, "vars": input_variables, "results": results}


def evaluate(expression: str, names: Mapping[str, Any]) -> Any:
    """The value of ``expression`` with ``names`` bound; :class:`ExpressionError` on any problem."""
    problem = check(expression)
    if problem is not None:
        raise ExpressionError(problem)
    tree = _compile(expression)
    assert isinstance(tree, ast.Expression)
    try:
        return _Evaluator(names).visit(tree.body)
    except ExpressionError:
        raise
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"{type(exc).__name__}: {exc}") from None


def _short(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Evaluator:
    def __init__(self, names: Mapping[str, Any]) -> None:
        self.names = names
        self.work = 0

    def _size(self, value: Any) -> int:
        """Roughly ``len(str(value))``; stops counting (and returns more than the cap) past the cap."""
        size, stack = 0, [value]
        while stack and size <= MAX_RESULT_SIZE:
            item = stack.pop()
            self.work += 1
            if isinstance(item, str):
                size += len(item) + 2
            elif _is_int(item):
                size += item.bit_length() // 3 + 1
            elif isinstance(item, list | tuple):
                size += 2 + 2 * len(item)
                stack.extend(item[: MAX_RESULT_SIZE + 1])
            elif isinstance(item, Mapping):
                size += 2 + 4 * len(item)
                for n, (key, val) in enumerate(item.items()):
                    if n > MAX_RESULT_SIZE:
                        break
                    stack += (key, val)
            else:
                size += 8
        if self.work > MAX_WORK:
            raise ExpressionError(f"expression too expensive to evaluate (over {MAX_WORK} steps)")
        return size

    def _limit_size(self, where: ast.AST, size: int) -> None:
        if size > MAX_RESULT_SIZE:
            raise ExpressionError(
                f"{_short(where)} would build a value of about {size} characters; "
                f"the limit is {MAX_RESULT_SIZE}"
            )

    @staticmethod
    def _cap_int(value: Any, where: ast.AST) -> Any:
        if _is_int(value) and value.bit_length() > MAX_INT_BITS:
            raise ExpressionError(f"{_short(where)} would produce an integer over {MAX_INT_BITS} bits")
        return value

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:  # the static check refuses these already
            raise ExpressionError(_describe(node))
        return method(node)

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id not in self.names:
            known = ", ".join(sorted(self.names)) or "none"
            raise ExpressionError(f"unknown name {node.id!r} (known names: {known})")
        return self.names[node.id]

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        value = self.visit(node.value)
        if not isinstance(value, Mapping):
            raise ExpressionError(
                f"{_short(node)}: {_short(node.value)} is of type {type(value).__name__}, not a dict "
                "(attribute access is a dict key lookup)"
            )
        if node.attr not in value:
            raise ExpressionError(f"{_short(node)}: {_short(node.value)} has no key {node.attr!r}")
        return value[node.attr]

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        value = self.visit(node.value)
        if isinstance(node.slice, ast.Slice):
            bounds = [
                None if part is None else self.visit(part)
                for part in (node.slice.lower, node.slice.upper, node.slice.step)
            ]
            if not isinstance(value, _SEQUENCES):
                raise ExpressionError(f"{_short(node)}: can't slice a {type(value).__name__}")
            if any(b is not None and not _is_int(b) for b in bounds):
                raise ExpressionError(f"{_short(node)}: slice bounds must be integers")
            return value[slice(*bounds)]
        key = self.visit(node.slice)
        if isinstance(key, str) and _is_dunder(key):
            raise ExpressionError(f"{_short(node)}: double-underscore keys are refused")
        if isinstance(value, Mapping):
            try:
                return value[key]
            except (KeyError, TypeError):
                raise ExpressionError(f"{_short(node)}: {_short(node.value)} has no key {key!r}") from None
        if isinstance(value, _SEQUENCES):
            if not _is_int(key):
                raise ExpressionError(f"{_short(node)}: a {type(value).__name__} index must be an integer")
            try:
                return value[key]
            except IndexError:
                raise ExpressionError(
                    f"{_short(node)}: index {key} out of range (length {len(value)})"
                ) from None
        raise ExpressionError(f"{_short(node)}: can't index a {type(value).__name__}")

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        value: Any = None
        for operand in node.values:
            value = self.visit(operand)
            if bool(value) is not is_and:  # `and` stops at a falsy value, `or` at a truthy one
                return value
        return value

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        return _UNARYOPS[type(node.op)](self.visit(node.operand))

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        left, right = self.visit(node.left), self.visit(node.right)
        op = type(node.op)
        if op is ast.Mult:
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, _SEQUENCES) and _is_int(times) and times > 0:
                    self._limit_size(node, self._size(seq) * times)
            if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise ExpressionError(f"{_short(node)} would produce an integer over {MAX_INT_BITS} bits")
        elif op is ast.Add:
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                self._limit_size(node, self._size(left) + self._size(right))
        elif op is ast.Mod:
            if isinstance(left, str):
                raise ExpressionError(f"{_short(node)}: %-formatting of strings is not allowed")
        elif op is ast.Pow:
            self._check_power(node, left, right)
        return self._cap_int(_BINOPS[op](left, right), node)

    @staticmethod
    def _check_power(node: ast.BinOp, base: Any, exponent: Any) -> None:
        if not _is_int(exponent) or abs(exponent) > MAX_POWER:
            raise ExpressionError(
                f"{_short(node)}: the exponent must be an integer between -{MAX_POWER} and {MAX_POWER}"
            )
        if _is_int(base) and base.bit_length() * abs(exponent) > MAX_INT_BITS:
            raise ExpressionError(f"{_short(node)} would produce an integer over {MAX_INT_BITS} bits")

    def visit_Compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.visit(comparator)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_List(self, node: ast.List) -> Any:
        return [self.visit(element) for element in node.elts]

    def visit_Tuple(self, node: ast.Tuple) -> Any:
        return tuple(self.visit(element) for element in node.elts)

    def visit_Dict(self, node: ast.Dict) -> Any:
        result = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # the static check refuses these already
                raise ExpressionError("** unpacking is not allowed")
            result[self.visit(key)] = self.visit(value)
        return result

    def visit_Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ExpressionError(_static_check(ast.Expression(body=node)) or "call not allowed")
        args = [self.visit(arg) for arg in node.args]
        name = node.func.id
        if name == "str" and args:
            self._limit_size(node, self._size(args[0]))
        return self._cap_int(FUNCTIONS[name](*args), node)
