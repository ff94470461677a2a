"""Hostile input never crashes the compiler: any bytes give diagnostics, never an exception.

`make test` runs a few dozen examples per property; `make fuzz` runs thousands.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from compiler import pipeline
from conftest import ALL_SPECS

SEEDS = [p.read_bytes() for p in ALL_SPECS]


def analyse_bytes(tmp_path: Path, data: bytes) -> None:
    spec = tmp_path / "fuzz.yaml"
    spec.write_bytes(data)
    result = pipeline.analyse([spec])
    for d in result.diagnostics:
        assert d.line >= 1 and d.col >= 1 and d.message
    if result.ok:
        pipeline.compile_paths([spec])


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
