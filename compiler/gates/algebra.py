"""PromQL expressions as trees: built once, printed for Prometheus, evaluated by the simulator.

Every alert condition and recording rule of a rollout is a tree of the nodes
below.  :func:`render` prints it as PromQL text (the rule files, dashboards and
``rollout gate`` send that text); :mod:`compiler.gates.simulator` evaluates the
same tree over made-up series the way Prometheus does (the promtool tests and
the detection benchmark expect what it computes).  Nothing is printed and then
parsed back.

Arithmetic on nodes builds nodes (``2 * e + 1`` is a :class:`Binary` tree), and
the same operators on :class:`F` compute IEEE 754 doubles as Prometheus does,
so a formula written once (:mod:`compiler.gates.statistics`) is both the rule
and its numeric value.

User-written PromQL (a custom gate's query, a ``custom`` metrics template) is a
:class:`Text` node: printed as written, never evaluated; the simulator feeds the
series such a rule records instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Union

from mypy_extensions import mypyc_attr

from compiler.spec.units import format_duration

Matcher = tuple[str, str, str]  # (label, "=" | "!=" | "=~" | "!~", value)

# Binding strength of PromQL's binary operators (higher binds tighter), and of atoms.
OR, AND, COMPARE, ADD, MUL, POW, ATOM = 1, 2, 3, 4, 5, 6, 7
PRECEDENCE = {
    "or": OR, "and": AND, "unless": AND,
    "==": COMPARE, "!=": COMPARE, ">": COMPARE, "<": COMPARE, ">=": COMPARE, "<=": COMPARE,
    "+": ADD, "-": ADD, "*": MUL, "/": MUL, "%": MUL, "^": POW,
}
ARITHMETIC = ("+", "-", "*", "/")
COMPARISONS = ("==", "!=", ">", "<", ">=", "<=")
SET_OPERATORS = ("and", "or", "unless")


class Expr:
    """A PromQL expression; ``+ - * /`` with numbers or other expressions build a :class:`Binary`."""

    __slots__ = ()

    def __add__(self, other: Operand) -> Expr:
        return Binary("+", self, lift(other))

    def __radd__(self, other: Operand) -> Expr:
        return Binary("+", lift(other), self)

    def __sub__(self, other: Operand) -> Expr:
        return Binary("-", self, lift(other))

    def __rsub__(self, other: Operand) -> Expr:
        return Binary("-", lift(other), self)

    def __mul__(self, other: Operand) -> Expr:
        return Binary("*", self, lift(other))

    def __rmul__(self, other: Operand) -> Expr:
        return Binary("*", lift(other), self)

    def __truediv__(self, other: Operand) -> Expr:
        return Binary("/", self, lift(other))

    def __rtruediv__(self, other: Operand) -> Expr:
        return Binary("/", lift(other), self)

    def __str__(self) -> str:
        return render(self)


@dataclass(frozen=True, eq=False, slots=True)
class Number(Expr):
    value: float


@dataclass(frozen=True, eq=False, slots=True)
class Selector(Expr):
    """An instant vector selector: ``metric{label="value",...}``."""

    metric: str
    matchers: tuple[Matcher, ...] = ()

    def __getitem__(self, seconds: int) -> Range:
        return Range(self, seconds)


@dataclass(frozen=True, eq=False, slots=True)
class Range(Expr):
    """A range vector selector: ``metric{...}[5m]`` (only as a function's argument)."""

    selector: Selector
    seconds: int


@dataclass(frozen=True, eq=False, slots=True)
class Call(Expr):
    function: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, eq=False, slots=True)
class Aggregate(Expr):
    """``sum(x)`` or ``sum by (le) (x)``."""

    op: str
    expr: Expr
    by: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Matching:
    """Vector matching of a binary operator: ``on(...)`` or ``ignoring(...)``, optionally ``group_left``."""

    on: bool
    labels: tuple[str, ...]
    group_left: bool = False

    def text(self) -> str:
        words = f"{'on' if self.on else 'ignoring'}({', '.join(self.labels)})"
        return words + (" group_left" if self.group_left else "")


@dataclass(frozen=True, eq=False, slots=True)
class Binary(Expr):
    op: str
    lhs: Expr
    rhs: Expr
    bool_: bool = False  # a comparison returning 0/1 instead of filtering
    matching: Matching | None = None


@dataclass(frozen=True, eq=False, slots=True)
class Paren(Expr):
    """Parentheses as written (PromQL keeps them in its tree too)."""

    expr: Expr


@dataclass(frozen=True, eq=False, slots=True)
class Text(Expr):
    """PromQL a user wrote, printed as is and never evaluated; its holes hold expressions of ours
    (``$quantile`` filled with ``scalar(...)``), which are printed, inlined and walked like any node."""

    parts: tuple[str | Expr, ...]


def text(query: str, holes: dict[str, Expr] | None = None) -> Text:
    """User PromQL; each placeholder in ``holes`` (e.g. ``$quantile``) replaced by an expression."""
    parts: list[str | Expr] = [query]
    for placeholder, expr in (holes or {}).items():
        split: list[str | Expr] = []
        for part in parts:
            if isinstance(part, str):
                pieces = part.split(placeholder)
                for i, piece in enumerate(pieces):
                    if i:
                        split.append(expr)
                    split.append(piece)
            else:
                split.append(part)
        parts = split
    return Text(tuple(p for p in parts if p != ""))


Operand = Union[Expr, "F", float, int]


def lift(value: Operand | Fraction) -> Expr:
    return value if isinstance(value, Expr) else Number(float(value))


# --------------------------------------------------------------------------- building


def selector(metric: str, matchers: list[Matcher] | tuple[Matcher, ...] = ()) -> Selector:
    return Selector(metric, tuple(matchers))


def call(function: str, *args: Operand) -> Call:
    return Call(function, tuple(lift(a) for a in args))


def rate(series: Selector, seconds: int) -> Call:
    return Call("rate", (Range(series, seconds),))


def total(expr: Expr, by: tuple[str, ...] | None = None) -> Aggregate:
    return Aggregate("sum", expr, by)


def compare(lhs: Operand, op: str, rhs: Operand, matching: Matching | None = None) -> Binary:
    assert op in COMPARISONS, op
    return Binary(op, lift(lhs), lift(rhs), False, matching)


def both(lhs: Expr, rhs: Expr, matching: Matching | None = None) -> Binary:
    return Binary("and", lhs, rhs, False, matching)


def either(lhs: Expr, rhs: Expr) -> Binary:
    return Binary("or", lhs, rhs)


def paren(expr: Expr) -> Paren:
    return Paren(expr)


# --------------------------------------------------------------------------- printing


@lru_cache(maxsize=8192)
def string(value: str) -> str:
    """A PromQL double-quoted string literal (Go escaping)."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def label_value(value: str) -> str:
    """A label value as it stands between the quotes of a PromQL string."""
    return string(value)[1:-1]


def matchers_text(matchers: tuple[Matcher, ...] | list[Matcher]) -> str:
    """``(("service", "=", "checkout"),)`` -> ``{service="checkout"}``."""
    return "{" + ",".join(f"{name}{op}{string(value)}" for name, op, value in matchers) + "}"


def number(value: float | int | Fraction) -> str:
    """A PromQL number literal that parses to exactly this double."""
    as_float = float(value)
    if math.isnan(as_float) or math.isinf(as_float):
        raise ValueError(f"no PromQL literal for {as_float}")
    text = repr(as_float)
    return text[:-2] if text.endswith(".0") else text


def window(seconds: int) -> str:
    """A range as Prometheus spells it: 300 -> ``5m``."""
    return format_duration(seconds)


def precedence(node: Expr) -> int:
    if isinstance(node, Binary):
        return PRECEDENCE[node.op]
    if isinstance(node, Number) and node.value < 0:
        return ADD
    if isinstance(node, Text):
        return OR
    return ATOM


def render(node: Expr) -> str:
    """The PromQL text of a tree, parenthesised where PromQL would otherwise group it differently."""
    if isinstance(node, Binary):
        level = PRECEDENCE[node.op]
        left, right = render(node.lhs), render(node.rhs)
        if precedence(node.lhs) < level:
            left = f"({left})"
        if precedence(node.rhs) <= level:
            right = f"({right})"
        modifier = " bool" if node.bool_ else ""
        matching = f" {node.matching.text()}" if node.matching else ""
        return f"{left} {node.op}{modifier}{matching} {right}"
    if isinstance(node, Selector):
        return node.metric + matchers_text(node.matchers) if node.matchers else node.metric
    if isinstance(node, Number):
        return number(node.value)
    if isinstance(node, Call):
        return f"{node.function}({', '.join(render(a) for a in node.args)})"
    if isinstance(node, Range):
        return f"{render(node.selector)}[{window(node.seconds)}]"
    if isinstance(node, Aggregate):
        by = f" by ({', '.join(node.by)}) " if node.by is not None else ""
        return f"{node.op}{by}({render(node.expr)})"
    if isinstance(node, Paren):
        return f"({render(node.expr)})"
    if isinstance(node, Text):
        return "".join(p if isinstance(p, str) else render(p) for p in node.parts)
    raise TypeError(f"not a PromQL node: {node!r}")


def walk(node: Expr) -> list[Expr]:
    """Every node of a tree, parents before children."""
    out: list[Expr] = []
    todo = [node]
    while todo:
        item = todo.pop()
        out.append(item)
        if isinstance(item, Binary):
            todo += [item.rhs, item.lhs]
        elif isinstance(item, Call):
            todo += reversed(item.args)
        elif isinstance(item, (Aggregate, Paren)):
            todo.append(item.expr)
        elif isinstance(item, Range):
            todo.append(item.selector)
        elif isinstance(item, Text):
            todo += [p for p in reversed(item.parts) if isinstance(p, Expr)]
    return out


def selectors(node: Expr) -> list[Selector]:
    return [n for n in walk(node) if isinstance(n, Selector)]


def evaluable(node: Expr) -> bool:
    """A tree with no user-written PromQL in it."""
    return not any(isinstance(n, Text) for n in walk(node))


def substitute(node: Expr, replace: dict[int, Expr]) -> Expr:
    """The tree with the nodes whose ``id`` is in ``replace`` replaced (shared subtrees are kept)."""
    found = replace.get(id(node))
    if found is not None:
        return found
    if isinstance(node, Binary):
        lhs, rhs = substitute(node.lhs, replace), substitute(node.rhs, replace)
        return node if (lhs, rhs) == (node.lhs, node.rhs) else Binary(node.op, lhs, rhs, node.bool_, node.matching)
    if isinstance(node, Call):
        args = tuple(substitute(a, replace) for a in node.args)
        return node if args == node.args else Call(node.function, args)
    if isinstance(node, Aggregate):
        inner = substitute(node.expr, replace)
        return node if inner is node.expr else Aggregate(node.op, inner, node.by)
    if isinstance(node, Paren):
        inner = substitute(node.expr, replace)
        return node if inner is node.expr else Paren(inner)
    if isinstance(node, Text):
        parts = tuple(p if isinstance(p, str) else substitute(p, replace) for p in node.parts)
        return node if parts == node.parts else Text(parts)
    return node


# --------------------------------------------------------------------------- numbers


@mypyc_attr(native_class=False)  # a float subclass: a Python class in the native build too
class F(float):
    """A float whose arithmetic is IEEE 754 as in Prometheus: x/0 is +-Inf or NaN, never an exception."""

    def __add__(self, other: float) -> F:
        return F(float(self) + float(other))

    def __radd__(self, other: float) -> F:
        return F(float(other) + float(self))

    def __sub__(self, other: float) -> F:
        return F(float(self) - float(other))

    def __rsub__(self, other: float) -> F:
        return F(float(other) - float(self))

    def __mul__(self, other: float) -> F:
        return F(float(self) * float(other))

    def __rmul__(self, other: float) -> F:
        return F(float(other) * float(self))

    def __truediv__(self, other: float) -> F:
        return F(divide(float(self), float(other)))

    def __rtruediv__(self, other: float) -> F:
        return F(divide(float(other), float(self)))


def divide(a: float, b: float) -> float:
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def as_operand(x: Operand) -> Expr | F:
    return x if isinstance(x, (Expr, F)) else F(x)


def sqrt(x: Operand) -> Expr | F:
    if isinstance(x, Expr):
        return Call("sqrt", (x,))
    return F(math.sqrt(x)) if x >= 0 else F(math.nan)


def clamp_min(x: Operand, low: float) -> Expr | F:
    if isinstance(x, Expr):
        return Call("clamp_min", (x, Number(low)))
    return F(x if math.isnan(x) else max(float(x), low))


def clamp_max(x: Operand, high: float) -> Expr | F:
    if isinstance(x, Expr):
        return Call("clamp_max", (x, Number(high)))
    return F(x if math.isnan(x) else min(float(x), high))


def positive(x: Operand) -> Expr | F:
    """1 where ``x > 0``, else 0 (PromQL ``(x > bool 0)``)."""
    if isinstance(x, Expr):
        return Paren(Binary(">", x, Number(0.0), bool_=True))
    return F(1.0 if x > 0 else 0.0)
