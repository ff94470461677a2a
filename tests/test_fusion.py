"""Fused arithmetic (compiler.gates.fusion) computes what the simulator computes node by node."""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.gates import fusion
from compiler.gates import simulator as promsim
from compiler.gates.algebra import Binary, Call, Expr, Number, Paren, Selector
from compiler.ir.plan import Plan
from conftest import GOLDEN, plan_of

VALUES = st.sampled_from([None, 0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1e-9, 1e300, math.inf, -math.inf, math.nan, 2.0])
NUMBERS = st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5, 300.0, 1e-6, 12.830960999999999])
OPERATORS = st.sampled_from(["+", "-", "*", "/", ">", "<", ">=", "<=", "==", "!="])


@lru_cache(maxsize=1)
def plan() -> Plan:
    return plan_of(GOLDEN / "in-ramp.yaml")


def trees(leaves: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    def extend(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        binary = st.builds(lambda op, a, b, as_bool: Binary(op, a, b, op not in "+-*/" and as_bool),
                           OPERATORS, inner, inner, st.booleans())
        unary = st.one_of(
            st.builds(lambda a: Call("sqrt", (a,)), inner),
            st.builds(lambda a, n, f: Call(f, (a, Number(n))), inner, NUMBERS, st.sampled_from(["clamp_min",
                                                                                               "clamp_max"])),
            st.builds(Paren, inner),
        )
        return st.one_of(binary, unary)

    return st.recursive(st.one_of(leaves, st.builds(Number, NUMBERS)), extend, max_leaves=12)


def evaluate(tree: Expr, series: list[promsim.InputSeries], fused: bool) -> object:
    with pytest.MonkeyPatch.context() as patch:
        if not fused:
            patch.setattr(promsim, "_region", lambda plan, node: None)
        world = promsim.World(plan(), series, [k * promsim.STEP for k in range(len(series[0].values))], [])
        try:
            return world.evaluate(tree)
        except TypeError as exc:  # a function of numbers alone: refused either way
            return ("refused", str(exc))


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


X = Selector("x", (("service", "=", "a"),))
Y = Selector("y", (("service", "=", "a"),))
Z = Selector("z", ())  # two series: the fused way declines, the answer is the same


@settings(max_examples=400, deadline=None)
@given(trees(st.sampled_from([X, Y, Z])), st.lists(st.tuples(VALUES, VALUES, VALUES), min_size=1, max_size=6),
       st.booleans())
def test_fused_arithmetic_is_the_node_by_node_arithmetic(tree, samples, other_labels):
    labels = (("service", "a"),)
    series = [
        promsim.InputSeries("x", labels, tuple(s[0] for s in samples)),
        promsim.InputSeries("y", (("service", "a"), ("zone", "b")) if other_labels else labels,
                            tuple(s[1] for s in samples)),
        promsim.InputSeries("z", (("service", "a"),), tuple(s[2] for s in samples)),
        promsim.InputSeries("z", (("service", "b"),), tuple(s[2] for s in samples)),
    ]
    assert same(evaluate(tree, series, True), evaluate(tree, series, False))


def test_one_function_serves_every_tree_of_a_shape():
    a = fusion.region(Binary("*", Binary("/", X, Number(300.0)), Number(2.0)))
    b = fusion.region(Binary("*", Binary("/", Y, Number(60.0)), Number(5.0)))
    assert a is not None and b is not None and a.loop is b.loop and a.numbers != b.numbers
    assert a.values([[600.0, None, 0.0]]) == [4.0, None, 0.0]


def test_a_function_of_numbers_alone_is_not_fused():
    assert fusion.region(Call("sqrt", (Binary("+", Number(1.0), Number(2.0)),))) is None
    assert fusion.region(Binary("+", Number(1.0), Number(2.0))) is None
