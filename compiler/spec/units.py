"""Quantities of the spec language: durations, percentages, latencies, ratios.

Every parser takes what YAML gives (a string or a number) and returns an exact
value (``int`` seconds or ``Fraction``) or raises ``ValueError`` with a message
meant for the spec's author.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w))+$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")


def _exact(text: str, what: str) -> Fraction:
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{what}: '{text}' is not a plain decimal number")
    try:
        return Fraction(Decimal(text))
    except (InvalidOperation, ValueError):  # pragma: no cover - guarded by the regex
        raise ValueError(f"{what}: '{text}' is not a number") from None


def shown(value: object) -> str:
    """A value as the spec wrote it: YAML spellings for booleans and null, a kind for lists and mappings."""
    if value is None or isinstance(value, bool):
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def _number_text(value: object, what: str) -> str:
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a value, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"{what}: expected a string or a number, got {shown(value)}")


def parse_duration(value: object) -> int:
    """``30s``, ``5m``, ``2h``, ``7d``, ``1w``, ``1h30m`` -> whole seconds (> 0)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"a duration is a string such as '30s', '5m', '2h' or '7d', got {shown(value)}"
        )
    text = value.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(
            f"'{value}' is not a duration: use a number and a unit (ms, s, m, h, d, w), e.g. '30s', '5m', '2h', '7d'"
        )
    millis = 0
    for number, unit in _DURATION_PART.findall(text):
        millis += int(number) if unit == "ms" else int(number) * _UNIT_SECONDS[unit] * 1000
    if millis % 1000:
        raise ValueError(f"'{value}' is not a whole number of seconds")
    if millis == 0:
        raise ValueError(f"'{value}' is zero: a duration must be positive")
    return millis // 1000


def parse_percent(value: object) -> Fraction:
    """``1%``, ``0.1%``, ``100%`` or a bare number of percent -> a fraction in [0, 1]."""
    text = _number_text(value, "percentage")
    if text.endswith("%"):
        text = text[:-1].strip()
    share = _exact(text, "percentage") / 100
    if share > 1:
        raise ValueError(f"'{value}' is more than 100%")
    return share


def parse_latency(value: object) -> Fraction:
    """``200ms``, ``1.5s`` -> seconds as an exact fraction (> 0)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"a latency is a string such as '200ms' or '1.5s', got {shown(value)}")
    match = re.fullmatch(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\s*$", value)
    if not match:
        raise ValueError(f"'{value}' is not a latency: use milliseconds or seconds, e.g. '200ms' or '1.5s'")
    seconds = _exact(match.group(1), "latency")
    if match.group(2) == "ms":
        seconds /= 1000
    if seconds <= 0:
        raise ValueError(f"'{value}' is zero: a latency threshold must be positive")
    return seconds


def parse_ratio(value: object) -> Fraction:
    """``2x`` or ``2`` -> a factor (> 0)."""
    text = _number_text(value, "ratio")
    if text.endswith("x"):
        text = text[:-1].strip()
    factor = _exact(text, "ratio")
    if factor <= 0:
        raise ValueError(f"'{value}' must be more than zero")
    return factor


def parse_number(value: object) -> Fraction:
    """A plain number, possibly negative or fractional, for custom gates."""
    text = _number_text(value, "number")
    negative = text.startswith("-")
    magnitude = _exact(text[1:] if negative else text, "number")
    return -magnitude if negative else magnitude


@lru_cache(maxsize=4096)
def format_duration(seconds: int) -> str:
    """Seconds -> the shortest exact spelling (``90`` -> ``1m30s``); Prometheus accepts it too."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@lru_cache(maxsize=4096)
def format_percent(share: Fraction) -> str:
    """An exact share -> ``1%``, ``0.1%``, ``33.333333%`` (rounded past 6 decimals)."""
    percent = share * 100
    if percent.denominator == 1:
        return f"{percent.numerator}%"
    text = f"{float(percent):.6f}".rstrip("0").rstrip(".")
    exact = Fraction(Decimal(text)) == percent
    return f"{text}%" if exact else f"~{text}%"


def format_decimal(value: Fraction, places: int = 12) -> str:
    """An exact value -> the shortest decimal text (for PromQL literals and thresholds)."""
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.{places}f}".rstrip("0").rstrip(".")
    return text or "0"


def format_latency(seconds: Fraction) -> str:
    millis = seconds * 1000
    if millis.denominator == 1 and millis < 1000:
        return f"{millis.numerator}ms"
    return f"{format_decimal(seconds)}s"


_TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$")


def check_timestamp(value: str) -> str:
    """An RFC 3339 time with its offset: ``2026-12-02T09:30:00Z``."""
    from datetime import datetime

    try:
        if _TIMESTAMP.fullmatch(value):
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value
    except ValueError:
        pass
    raise ValueError(f"'{value}' is not an RFC 3339 time such as 2026-12-02T09:30:00Z")
