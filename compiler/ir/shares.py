"""Exact traffic shares and the integer weights routers can express.

A stage's canary share is an exact ``Fraction``.  Routers take integers: a
relative weight pair, a weight out of a total, or a bucket count out of a
number of hash buckets.  These helpers pick integers that realise the share
exactly when the router's limits allow, and say how far off they are when not.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from compiler.spec.units import format_decimal, format_percent


@dataclass(frozen=True)
class Split:
    """``canary`` out of ``total`` (stable gets ``total - canary``)."""

    canary: int
    total: int
    share: Fraction  # what the spec asked for

    @property
    def stable(self) -> int:
        return self.total - self.canary

    @property
    def realised(self) -> Fraction:
        return Fraction(self.canary, self.total)

    @property
    def error(self) -> Fraction:
        return self.realised - self.share

    @property
    def exact(self) -> bool:
        return self.error == 0

    def describe(self) -> str:
        """One line for a comment in the generated file."""
        realised = format_percent(self.realised)
        if self.exact:
            return f"canary share {format_percent(self.share)}: {self.canary}/{self.total} = {realised} (exact)"
        return (
            f"canary share {format_percent(self.share)}: {self.canary}/{self.total} = {realised} "
            f"(error {format_decimal(self.error * 100, 6)} percentage points)"
        )


def split(share: Fraction, total: int) -> Split:
    """The nearest ``canary/total`` to ``share`` for a fixed total (ties round half up, never to 0 above 0)."""
    if total <= 0:
        raise ValueError("total must be positive")
    canary = int(share * total + Fraction(1, 2))
    if share > 0 and canary == 0:
        canary = 1
    if share < 1 and canary == total:
        canary = total - 1
    return Split(canary, total, share)


def exact_split(share: Fraction, minimum_total: int = 1, maximum_total: int = 1_000_000) -> Split:
    """The smallest total >= ``minimum_total`` (up to ``maximum_total``) that realises ``share`` exactly.

    Falls back to ``maximum_total`` with the nearest integer when no total in
    range is exact (a share with a large denominator).
    """
    denominator = share.denominator
    if denominator <= maximum_total:
        total = denominator * max(1, -(-minimum_total // denominator))
        if total <= maximum_total:
            return Split(int(share * total), total, share)
    return split(share, maximum_total)


def relative(share: Fraction, maximum: int = 1_000_000) -> Split:
    """Relative weights (stable + canary = total) as small as possible, each at most ``maximum``."""
    return exact_split(share, 1, maximum)
