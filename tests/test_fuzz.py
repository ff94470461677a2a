"""Hostile input never crashes the compiler: any bytes give diagnostics, never an exception.

`make test` runs a few dozen examples per property; `make fuzz` runs thousands.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler import pipeline
from conftest import ALL_SPECS, report_line

SEEDS = [p.read_bytes() for p in ALL_SPECS]
HANG = 30  # seconds: an example that takes longer is a hang
COUNTS: Counter[str] = Counter()


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"no answer within {HANG}s")


@pytest.fixture(scope="module", autouse=True)
def _counts():
    started = time.monotonic()
    yield
    if COUNTS:
        report_line(f"fuzzed specs: {COUNTS['cases']} cases ({COUNTS['accepted']} accepted and compiled, "
                    f"{COUNTS['refused']} refused with located errors), {COUNTS['crashes']} crashes, "
                    f"{COUNTS['hangs']} hangs, {time.monotonic() - started:.0f}s")


def analyse_bytes(tmp_path: Path, data: bytes) -> None:
    spec = tmp_path / "fuzz.yaml"
    spec.write_bytes(data)
    COUNTS["cases"] += 1
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG)
    try:
        result = pipeline.analyse([spec])
        for d in result.diagnostics:
            assert d.line >= 1 and d.col >= 1 and d.message
        if result.ok:
            pipeline.compile_paths([spec])
        COUNTS["accepted" if result.ok else "refused"] += 1
    except Hang:
        COUNTS["hangs"] += 1
        raise
    except AssertionError:
        raise
    except Exception:
        COUNTS["crashes"] += 1
        raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@given(data=st.binary(max_size=2048))
def test_random_bytes(tmp_path_factory, data):
    analyse_bytes(tmp_path_factory.mktemp("fuzz"), data)


@given(seed=st.sampled_from(SEEDS), cut=st.integers(min_value=0, max_value=6000), junk=st.binary(max_size=40))
def test_spliced_specs(tmp_path_factory, seed, cut, junk):
    position = cut % (len(seed) + 1)
    analyse_bytes(tmp_path_factory.mktemp("fuzz"), seed[:position] + junk + seed[position:])


LINES = st.sampled_from([
    "weight: 0%", "weight: 100%", "weight: 1e9", "mirror: 50%", "hold: 0s", "current: rollback", "current: ''",
    "targets: [haproxy, haproxy]", "sticky: {header: '', cookie: x}", "requires: [self]", "- {name: x}",
    "gates: {error_rate: '< 0%'}", "values: ['a\"b', 'c d']", "port: 0", "port: 65536", "&a [*a]", "<<: *a",
    "environments: {prod: {environments: {}}}", "kill_switch: true", "strategy: {blue-green: {}}",
    "host: '*.example.com'", "path: '/a b'", "name: a-", "version: ''",
])


@given(seed=st.sampled_from(SEEDS), line=LINES, index=st.integers(min_value=0, max_value=200))
def test_specs_with_a_foreign_line(tmp_path_factory, seed, line, index):
    lines = seed.decode().splitlines()
    at = index % (len(lines) + 1)
    indent = " " * (len(lines[at - 1]) - len(lines[at - 1].lstrip())) if at else ""
    lines.insert(at, indent + line)
    analyse_bytes(tmp_path_factory.mktemp("fuzz"), ("\n".join(lines) + "\n").encode())
