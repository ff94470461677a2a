"""Golden trees: tests/golden/in-NAME.yaml compiles to exactly tests/golden/out-NAME/.

After an intended change of output, regenerate with ``ROLLOUT_UPDATE_GOLDEN=1 pytest tests/test_golden.py``
and review the diff like any other change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import GOLDEN, GOLDEN_INPUTS, compile_files

UPDATE = os.environ.get("ROLLOUT_UPDATE_GOLDEN") == "1"


def expected_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("spec", GOLDEN_INPUTS, ids=lambda p: p.stem[3:])
def test_golden_tree(spec: Path):
    out = GOLDEN / f"out-{spec.stem[3:]}"
    files = compile_files(spec)
    if UPDATE:
        shutil.rmtree(out, ignore_errors=True)
        for path, text in files.items():
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_text(text, encoding="utf-8")
    expected = expected_tree(out)
    assert sorted(files) == sorted(expected), "files differ: regenerate with ROLLOUT_UPDATE_GOLDEN=1 and review"
    for path in files:
        assert files[path] == expected[path], f"{path} differs from {out.name}/{path}"


def test_every_golden_case_has_its_tree():
    assert {p.stem[3:] for p in GOLDEN_INPUTS} == {p.name[4:] for p in GOLDEN.glob("out-*")}
