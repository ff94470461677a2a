"""Durations, percentages, latencies and ratios: parsed exactly, rejected clearly."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.spec import units


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("5m", 300), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("1h30m", 5400), ("1500ms", None)],
)
def test_durations(text, seconds):
    if seconds is None:
        with pytest.raises(ValueError, match="whole number of seconds"):
            units.parse_duration(text)
    else:
        assert units.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 m", "m5", "-5m", "0s", "5y", 5, 1.5, True, None, "2 hours"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        units.parse_duration(bad)


@given(st.integers(min_value=1, max_value=10**8))
def test_duration_round_trip(seconds):
    assert units.parse_duration(units.format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "value, share",
    [("1%", Fraction(1, 100)), ("0.1%", Fraction(1, 1000)), ("100%", Fraction(1)), ("0%", Fraction(0)),
     (5, Fraction(1, 20)), (0.5, Fraction(1, 200)), ("12.5 %", Fraction(1, 8)), ("33.333%", Fraction(33333, 100_000))],
)
def test_percentages_are_exact(value, share):
    assert units.parse_percent(value) == share


@pytest.mark.parametrize("bad", ["101%", "-1%", "1e2%", "abc", "", "%", True, None, [1], "1/3%", "nan", "inf"])
def test_bad_percentages(bad):
    with pytest.raises(ValueError):
        units.parse_percent(bad)


@given(st.integers(min_value=0, max_value=100_000))
def test_percent_round_trip(thousandths):
    share = Fraction(thousandths, 100_000)
    assert units.parse_percent(units.format_percent(share)) == share


def test_latency_and_ratio():
    assert units.parse_latency("200ms") == Fraction(1, 5)
    assert units.parse_latency("1.5s") == Fraction(3, 2)
    assert units.parse_ratio("2x") == 2
    assert units.parse_ratio(1.5) == Fraction(3, 2)
    for bad in ("0ms", "200", "fast", 200):
        with pytest.raises(ValueError):
            units.parse_latency(bad)
    for bad in ("0x", "-1x", "twice"):
        with pytest.raises(ValueError):
            units.parse_ratio(bad)


def test_formatting():
    assert units.format_percent(Fraction(1, 1000)) == "0.1%"
    assert units.format_percent(Fraction(1, 3)) == "~33.333333%"
    assert units.format_latency(Fraction(1, 5)) == "200ms"
    assert units.format_latency(Fraction(3, 2)) == "1.5s"
    assert units.format_decimal(Fraction(1, 1000)) == "0.001"
    assert units.format_duration(90061) == "1d1h1m1s"
