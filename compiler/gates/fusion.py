"""Arithmetic of one series, fused: the simulator's fast way through a rule's formula.

A gate's statistics (:mod:`compiler.gates.statistics`) are long trees of
``+ - * /``, ``bool`` comparisons, ``sqrt`` and ``clamp_min``/``clamp_max`` over
a few recorded series of one variant.  Node by node, the simulator builds a
list per node and matches labels at each operator.  Where every series such a
region reads has one sample stream with the same labels, the region is one
loop instead: its operations written out once per shape of tree (the numbers
are arguments, so every rollout's Wilson bound shares one function), each on
the same doubles in the same order as :class:`compiler.gates.simulator.World`
(``divide``'s x/0, ``sqrt`` of a negative, ``clamp`` of NaN), a missing sample
in any series missing in the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from compiler.gates.algebra import ARITHMETIC, COMPARISONS, Binary, Call, Expr, Number, Paren, divide

Values = list[float | None]


@dataclass(frozen=True)
class Region:
    """A fused subtree: the nodes it reads (each evaluated on its own), its numbers, and its loop."""

    leaves: tuple[Expr, ...]
    numbers: tuple[float, ...]
    loop: Callable[..., Values]  # (numbers, leaf values...) -> values; one per shape of tree

    def values(self, series: Sequence[Values]) -> Values:
        """The region's values at every evaluation, given each leaf's single series."""
        return self.loop(self.numbers, *series)


def region(node: Expr) -> Region | None:
    """The fused form of the arithmetic under ``node``; None where there is none (no operation, or no series
    under it: a function of numbers alone is left to the simulator, which refuses it)."""
    leaves: list[Expr] = []
    numbers: list[float] = []
    lines: list[str] = []
    count = [0]

    def emit(n: Expr) -> tuple[str, bool]:
        """(the local holding ``n``'s value, whether a series is under it)."""
        if isinstance(n, Paren):
            return emit(n.expr)
        if isinstance(n, Number):
            numbers.append(n.value)
            return f"c{len(numbers) - 1}", False
        if isinstance(n, Binary) and n.matching is None and (
                n.op in ARITHMETIC or (n.op in COMPARISONS and n.bool_)):
            (a, series_a), (b, series_b) = emit(n.lhs), emit(n.rhs)
            count[0] += 1
            t = f"t{count[0]}"
            if n.op == "/":
                lines.append(f"{t} = {a} / {b} if {b} != 0 else divide({a}, {b})")
            elif n.op in ARITHMETIC:
                lines.append(f"{t} = {a} {n.op} {b}")  # one of ARITHMETIC: written as Python writes it
            else:
                lines.append(f"{t} = 1.0 if {a} {n.op} {b} else 0.0")  # one of COMPARISONS, the same in Python
            return t, series_a or series_b
        if isinstance(n, Call) and (n.function == "sqrt" or (
                n.function in ("clamp_min", "clamp_max") and len(n.args) == 2 and isinstance(n.args[1], Number))):
            x, series = emit(n.args[0])
            if not series:
                raise _NotFused  # the simulator wants an instant vector here
            count[0] += 1
            t = f"t{count[0]}"
            if n.function == "sqrt":
                lines.append(f"{t} = sqrt({x}) if {x} >= 0 else nan")
            else:
                bound = n.args[1]
                assert isinstance(bound, Number)
                numbers.append(bound.value)
                pick = "max" if n.function == "clamp_min" else "min"
                lines.append(f"{t} = {x} if {x} != {x} else {pick}({x}, c{len(numbers) - 1})")
            return t, True
        leaves.append(n)
        return f"v{len(leaves) - 1}", True

    try:
        result, series = emit(node)
    except _NotFused:
        return None
    if not count[0] or not series:
        return None
    return Region(tuple(leaves), tuple(numbers), _compiled(len(leaves), len(numbers), tuple(lines), result))


class _NotFused(Exception):
    pass


@lru_cache(maxsize=256)  # one function per shape of tree: every rollout's gates share a handful
def _compiled(leaves: int, numbers: int, lines: tuple[str, ...], result: str) -> Callable[..., Values]:
    names = [f"v{i}" for i in range(leaves)]
    consts = "".join(f"c{i}, " for i in range(numbers))
    body = "\n".join(f"        {line}" for line in lines)
    missing = " or ".join(f"{name} is None" for name in names)
    source = (
        f"def fused(numbers, {', '.join(names)}):\n"
        f"    ({consts}) = numbers\n"
        f"    out = []\n"
        f"    append = out.append\n"
        f"    for {', '.join(names)}, in zip({', '.join(names)}):\n"
        f"        if {missing}:\n"
        f"            append(None)\n"
        f"            continue\n"
        f"{body}\n"
        f"        append({result})\n"
        f"    return out\n"
    )
    scope: dict[str, object] = {"divide": divide, "sqrt": math.sqrt, "nan": math.nan}
    exec(compile(source, f"<fused {len(lines)} operations>", "exec"), scope)  # noqa: S102  # our own code, built above
    fused = scope["fused"]
    assert callable(fused)
    return fused

