"""The compiler's shape: modules that import alone, targets that say what they write and what it depends on,
routers described by one capability table."""

from __future__ import annotations

import itertools
import os
import pkgutil
import subprocess
import sys
import typing
from functools import lru_cache

import pytest

import compiler
from compiler import pipeline
from compiler.ir.plan import Plan
from compiler.spec import model, routers
from compiler.targets.base import KINDS
from compiler.targets.registry import FLEET, REGISTRY
from conftest import ALL_SPECS, ROOT, plans_of

MODULES = sorted(m.name for m in pkgutil.walk_packages(compiler.__path__, "compiler.") if m.name != "compiler.__main__")

IMPORT_ALONE = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "compiler" or m.startswith("compiler.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:  # a partially initialised module, a cycle
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_on_its_own():
    """No import cycle: each module, imported first in a fresh set of compiler modules, loads (from the sources:
    a compiled module loads once per process; tests/test_native.py imports each of those in a process of its own)."""
    assert len(MODULES) > 40
    done = subprocess.run([sys.executable, "-c", IMPORT_ALONE, *MODULES], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, "ROLLOUT_NATIVE": "0"})
    assert done.returncode == 0, done.stdout + done.stderr


@lru_cache(maxsize=1)
def every_plan() -> list[Plan]:
    return plans_of(*ALL_SPECS)


@pytest.mark.parametrize("plan", every_plan(), ids=lambda p: p.out)
def test_every_file_has_a_kind_and_stage_keys_say_when_it_changes(plan: Plan):
    """Two stages give a file the same bytes exactly when its target's stage key is the same: PLAN.md lists what
    each stage changes from the keys alone, without rendering every stage."""
    stages = list(plan.stages) + [plan.rollback_stage]
    texts, keys = {}, {}
    for stage in stages:
        staged = plan.at(stage.name)
        texts[stage.name], keys[stage.name] = {}, {}
        for target in REGISTRY:
            files = target.render(staged)
            for path in files:
                assert target.kinds.get(path) in KINDS, f"{target.name} writes {path} without a kind"
            texts[stage.name].update(files)
            found = target.keys(plan, stage)
            assert set(found) <= set(files), f"{target.name} keys files it does not write: {set(found) - set(files)}"
            keys[stage.name].update(found)
    for a, b in itertools.combinations([s.name for s in stages], 2):
        for path in sorted(set(texts[a]) | set(texts[b])):
            same_text = texts[a].get(path) == texts[b].get(path)
            same_key = keys[a].get(path) == keys[b].get(path)
            assert same_text == same_key, (path, a, b, "same text" if same_text else "different text")


def test_fleet_targets_say_what_they_write():
    files = pipeline.compile_paths(ALL_SPECS[:3]).files
    fleet = {p.split("/", 1)[1] for p in files if p.startswith("_fleet/")}
    declared = {p for f in FLEET for p in f.kinds}
    assert fleet - {p for p in fleet if p.endswith("kustomization.yaml")} <= declared


def test_the_spec_language_names_exactly_the_routers_of_the_capability_table():
    field = model.Traffic.model_fields["targets"].annotation
    (item,) = typing.get_args(field)
    assert set(typing.get_args(item)) == set(routers.ROUTERS)
    assert {t.name for t in REGISTRY} >= set(routers.ROUTERS)


def test_the_docs_matrix_is_the_capability_table():
    assert routers.matrix() in (ROOT / "docs" / "routers.md").read_text(encoding="utf-8")


def test_routers_that_cannot_mirror_are_exactly_those_the_table_says():
    assert set(routers.MIRRORING) == {n for n, c in routers.ROUTERS.items() if c.mirror != "none"}
    assert "haproxy" not in routers.MIRRORING


def test_help_lists_lazy_commands_without_importing_them_and_with_their_own_words():
    probe = ("import sys; from compiler import cli\n"
             "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith(('compiler.ops', 'compiler.pipeline', 'pydantic'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    from compiler import cli

    for name, (where, words) in cli.LAZY.items():
        module, attr = where.split(":")
        command = getattr(__import__(module, fromlist=[attr]), attr)
        assert (command.help or "").split("\n\n")[0].replace("\n", " ").strip() == words, name


def test_every_package_is_installed():
    """A wheel holds every package of the compiler (pyproject lists them; a missing one breaks a real install)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"compiler"} | {m.name for m in pkgutil.walk_packages(compiler.__path__, "compiler.") if m.ispkg}
    assert found <= listed, sorted(found - listed)
