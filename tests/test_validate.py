"""Bad input: every spec under tests/validate/bad fails with exactly the located messages it lists.

Each bad spec ends with ``# expect: LINE:COL: SEVERITY: MESSAGE`` comments.  A
compile that meets bad input exits 1, prints ``file:line:col``, shows no
traceback and leaves an existing output folder exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler import pipeline
from compiler.cli import main
from conftest import ROOT

BAD = sorted((ROOT / "tests" / "validate" / "bad").glob("*.yaml"))
GOOD = sorted((ROOT / "tests" / "validate" / "good").glob("*.yaml"))
BINARY = bytes(range(256)) * 4


def expectations(path: Path) -> list[tuple[int, int, str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect: "):
            position, severity, message = line[len("# expect: "):].split(": ", 2)
            row, col = position.split(":")
            out.append((int(row), int(col), severity, message))
    return out


def found(path: Path) -> list[tuple[int, int, str, str]]:
    result = pipeline.analyse([path])
    assert all(d.path == result.diagnostics[0].path for d in result.diagnostics)
    return [(d.line, d.col, d.severity, d.message) for d in result.diagnostics]


def test_every_bad_case_lists_what_it_expects():
    assert len(BAD) >= 30
    for path in BAD:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_gives_exactly_the_expected_located_errors(path: Path):
    assert found(path) == expectations(path)
    assert any(severity == "error" for _, _, severity, _ in found(path))


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_spec_has_no_finding(path: Path):
    assert found(path) == []


def test_binary_junk_is_located(tmp_path: Path):
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(BINARY)
    diagnostics = pipeline.analyse([junk]).diagnostics
    assert [(d.line, d.col, d.severity) for d in diagnostics] == [(1, 1, "error")]
    assert "NUL byte" in diagnostics[0].message


def test_invalid_utf8_is_located_at_the_byte(tmp_path: Path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("apiVersion: rollout-compiler/v1\nkind: Rollout\nmetadata: {owner: caf\xe9}\n".encode("latin-1"))
    (d,) = pipeline.analyse([spec]).diagnostics
    assert (d.line, d.col, d.severity) == (3, 22, "error")
    assert "not UTF-8" in d.message


def test_all_errors_of_a_file_are_reported_at_once(tmp_path: Path):
    text = (ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text()
    text = text.replace("port: 8080", "port: http").replace("host: web.example.com", "host: WEB").replace(
        "owner: web-team}", "owner: web-team, extra: 1}"
    )
    spec = tmp_path / "many.yaml"
    spec.write_text(text)
    messages = [d.message for d in pipeline.analyse([spec]).diagnostics]
    assert len(messages) == 3, messages


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file of the output tree (the compile's private lock and staging folder, .rollout/, aside)."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file() and ".rollout" not in p.relative_to(folder).parts
    }


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(main, ["compile", str(GOOD[0]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    (out / "notes.txt").write_text("a file rollout did not generate\n")
    return out


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_input_writes_nothing(path: Path, compiled: Path):
    before = _snapshot(compiled)
    result = CliRunner().invoke(main, ["compile", str(GOOD[0]), str(path), "-o", str(compiled)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    row, col, _, message = expectations(path)[0]
    shown = os.path.relpath(path, ROOT)
    assert f"{shown}:{row}:{col}: error: " in result.stderr
    assert _snapshot(compiled) == before


@pytest.mark.parametrize("case", ["binary", "alias-bomb", "malformed-yaml", "tab-indent"])
def test_real_command_shows_no_traceback(case: str, tmp_path: Path, compiled: Path):
    if case == "binary":
        spec = tmp_path / "junk.yaml"
        spec.write_bytes(BINARY)
    else:
        spec = ROOT / "tests" / "validate" / "bad" / f"{case}.yaml"
    before = _snapshot(compiled)
    proc = subprocess.run(
        [sys.executable, "-m", "compiler", "compile", str(spec), "-o", str(compiled)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert ":1:1: error: " in proc.stderr or ": error: " in proc.stderr
    assert _snapshot(compiled) == before


def _node_flood(tmp_path: Path) -> Path:
    spec = tmp_path / "flood.yaml"
    spec.write_text("apiVersion: rollout-compiler/v1\nkind: Rollout\nx: [" + ",".join(["0"] * 30_000) + "]\n")
    return spec


def _symlink_loop(tmp_path: Path) -> Path:
    spec = tmp_path / "loop.yaml"
    spec.symlink_to(spec)
    return spec


def _fifo(tmp_path: Path) -> Path:
    spec = tmp_path / "pipe.yaml"
    os.mkfifo(spec)
    return spec


@pytest.mark.parametrize("command", ["compile", "lint", "check"])
def test_a_symlink_loop_inside_a_specs_folder_is_located_and_writes_nothing(command, tmp_path: Path):
    folder = tmp_path / "specs"
    folder.mkdir()
    shutil.copy(GOOD[0], folder / GOOD[0].name)
    (folder / "loop.yaml").symlink_to(folder / "loop.yaml")
    out = tmp_path / "out"
    args = [command, str(folder)] + ([] if command == "lint" else ["-o", str(out)])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert re.search(r"loop\.yaml:1:1: error: cannot read: not a regular file", result.stderr), result.output
    assert not out.exists()


@pytest.mark.parametrize("make,message", [
    (_node_flood, "document has more than 20000 nodes"),
    (_symlink_loop, "not a regular file or folder"),
    (_fifo, "not a regular file or folder"),
], ids=["node-flood", "symlink-loop", "fifo"])
def test_generated_hostile_inputs_are_located_and_write_nothing(make, message, tmp_path: Path, compiled: Path):
    spec = make(tmp_path)
    before = _snapshot(compiled)
    result = CliRunner().invoke(main, ["compile", str(GOOD[0]), str(spec), "-o", str(compiled)])
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert re.search(rf"{re.escape(spec.name)}:\d+:\d+: error: {re.escape(message)}", result.stderr), result.stderr
    assert _snapshot(compiled) == before
