"""The native build (compiler/native.py): used only when it matches the sources, writing the same bytes as
the sources, each compiled module loading on its own, and nothing in a compiled module that mypyc would
compile to something else."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import native
from conftest import GOLDEN, ROOT, SPECS, output_tree

BUILT = native.usable(native.lib_dir())
needs_build = pytest.mark.skipif(not BUILT, reason="no native build here (tools/build_native.py)")


def _build_tool():  # tools/ is not a package
    spec = importlib.util.spec_from_file_location("build_native", ROOT / "tools" / "build_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_build_is_there_wherever_one_can_be_made():
    """``make install`` (which ``make test`` runs first) builds it where a C compiler and mypyc are: the tests
    below are skipped only where it cannot be made."""
    why = _build_tool().missing()
    assert BUILT or why is not None, "a native build can be made here, but none matches the sources"


def _run(args: list[str], native_on: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, native.OFF: "1" if native_on else "0"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_a_stamp_of_other_sources_or_modules_is_not_used(tmp_path: Path):
    lib = tmp_path / "lib"
    lib.mkdir()
    assert not native.usable(lib)  # no stamp
    (lib / native.STAMP).write_text("{not json")
    assert not native.usable(lib)
    stamp = {"sources": native.sources_digest(), "modules": list(native.MODULES)}
    (lib / native.STAMP).write_text(json.dumps(stamp))
    assert native.usable(lib)
    (lib / native.STAMP).write_text(json.dumps({**stamp, "sources": "0" * 64}))  # a source edited since
    assert not native.usable(lib)
    (lib / native.STAMP).write_text(json.dumps({**stamp, "modules": list(native.MODULES[1:])}))
    assert not native.usable(lib)


def test_the_digest_follows_every_compiled_source(tmp_path: Path):
    for module in native.MODULES:
        path = tmp_path / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    before = native.sources_digest(tmp_path)
    (tmp_path / (native.MODULES[-1].replace(".", "/") + ".py")).write_text("x = 2\n")
    assert native.sources_digest(tmp_path) != before


@needs_build
def test_the_build_is_used_unless_turned_off():
    code = "import compiler.gates.simulator as s, compiler.native as n; print(n.active(), s.__file__)"
    on, off = _run(["-c", code], True), _run(["-c", code], False)
    assert on.stdout.startswith("True ") and "/.native/" in on.stdout, on.stdout + on.stderr
    assert off.stdout.startswith("False ") and off.stdout.strip().endswith("simulator.py"), off.stdout + off.stderr


@needs_build
def test_the_build_and_the_sources_write_the_same_bytes(tmp_path: Path):
    """Every example and golden spec, compiled by the native build and by the sources (the native build with
    several jobs: tests/test_determinism.py)."""
    for name, on in (("native", True), ("sources", False)):
        done = _run(["-m", "compiler", "compile", str(SPECS), str(GOLDEN), "-o", str(tmp_path / name)], on)
        assert done.returncode == 0, done.stdout + done.stderr
    built, sources = output_tree(tmp_path / "native"), output_tree(tmp_path / "sources")
    assert len(built) > 100 and built.keys() == sources.keys()
    assert [path for path in built if built[path] != sources[path]] == []


@needs_build
def test_each_compiled_module_loads_first_in_a_process_of_its_own():
    """A compiled module resolves its names on import (a dataclass's field types among them), in any order."""
    failed = []
    for module in native.MODULES:
        done = _run(["-c", f"import {module}, compiler.native as n; assert n.active()"], True)
        if done.returncode != 0:
            failed.append(f"{module}: {done.returncode} {done.stderr.strip().splitlines()[-1:]}")
    assert failed == []


def _compiled_sources() -> list[tuple[str, ast.Module]]:
    return [(m, ast.parse((ROOT / (m.replace(".", "/") + ".py")).read_text())) for m in native.MODULES]


def test_no_compiled_module_holds_what_mypyc_compiles_differently():
    """mypyc compiles ``functools.cached_property`` to a plain property (computed at every access), and needs
    at import the names a ``TYPE_CHECKING`` block hides; a subclass of a C class needs to stay a Python class."""
    found = []
    for module, tree in _compiled_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in ("cached_property", "TYPE_CHECKING"):
                found.append(f"{module}:{node.lineno}: {node.id}")
            if isinstance(node, ast.Attribute) and node.attr in ("cached_property", "TYPE_CHECKING"):
                found.append(f"{module}:{node.lineno}: {node.attr}")
    assert found == []


def test_no_compiled_module_finds_files_beside_itself():
    for module, tree in _compiled_sources():
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert "__file__" not in names, module  # a compiled module's __file__ is in .native/
