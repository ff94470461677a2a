"""The statistics of the gates, written once over :mod:`compiler.gates.algebra`.

Each formula takes numbers or expression trees: with numbers it computes the
value (IEEE 754, as Prometheus does), with trees it builds the expression the
recording rule evaluates, with the same operations in the same order.

- error rate (max T): the lower bound of a continuity-corrected Wilson score
  interval of the canary's error ratio over the gate's window must not exceed
  T.  ``wilson_lower(e, n) > T`` is exactly the one-sided score test
  ``e - 1/2 > nT + z*sqrt(nT(1-T))`` (:func:`score_test_breach`) at confidence
  :data:`CONFIDENCE`.
- latency (max L at quantile q): the share of requests slower than L is a
  proportion too; the gate compares with L the sample quantile at the level
  ``q - z*sqrt(q(1-q)/n) - 1/(2n)`` (:func:`quantile_level`), the lower
  confidence bound of the q-quantile.
- error rate vs stable (max factor R): the canary's lower bound must not
  exceed R times the stable's upper bound.
"""

from __future__ import annotations

import math
from functools import lru_cache

from compiler.gates.algebra import Expr, F, Operand, as_operand, clamp_max, clamp_min, positive, sqrt

#: One-sided confidence of every statistical gate, and its normal quantile.
CONFIDENCE = "99.99%"
Z = 3.719


def wilson_lower(e: Operand, n: Operand, z: float = Z) -> Expr | F:
    """Lower bound of the continuity-corrected Wilson score interval of e/n (Newcombe 1998, method 4); 0 when e = 0."""
    if not isinstance(e, Expr) and not isinstance(n, Expr):
        return _lower_of(float(e), float(n), z)
    return _wilson_lower(e, n, z)


@lru_cache(maxsize=65536)
def _lower_of(e: float, n: float, z: float) -> Expr | F:
    return _wilson_lower(F(e), F(n), z)


def _wilson_lower(e: Operand, n: Operand, z: float) -> Expr | F:
    e, n = as_operand(e), as_operand(n)
    z2 = z * z
    bound = (2 * e + (z2 - 1) - z * sqrt((z2 - 2) - 1 / n + 4 * e * (n - e + 1) / n)) / (2 * (n + z2))
    return clamp_min(bound, 0.0) * positive(e)


def wilson_upper(e: Operand, n: Operand, z: float = Z) -> Expr | F:
    """Upper bound of the same interval; at most 1."""
    e, n = as_operand(e), as_operand(n)
    z2 = z * z
    bound = (2 * e + (z2 + 1) + z * sqrt((z2 + 2) - 1 / n + 4 * e * (n - e - 1) / n)) / (2 * (n + z2))
    return clamp_max(bound, 1.0)


def quantile_level(q: float, n: Operand, z: float = Z) -> Expr | F:
    """The quantile level whose sample quantile is a lower confidence bound of the q-quantile over n requests."""
    n = as_operand(n)
    spread = z * math.sqrt(q * (1 - q))
    return q - spread / sqrt(n) - 0.5 / n


def score_test_breach(e: float, n: float, threshold: float, z: float = Z) -> bool:
    """The one-sided continuity-corrected score test the Wilson bound inverts: is e/n above ``threshold``?"""
    if n <= 0 or e <= 0:
        return False
    return e - 0.5 > n * threshold + z * math.sqrt(n * threshold * (1 - threshold))
