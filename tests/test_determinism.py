"""Same specs, same bytes: under any hash seed, in any file order, in any working folder depth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import GOLDEN_INPUTS, ROOT, SEED_SPECS, output_tree as tree


def compile_with(seed: str, paths: list[Path], out: Path, jobs: int = 1) -> None:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    args = [str(p.relative_to(ROOT)) for p in paths]
    proc = subprocess.run(
        [sys.executable, "-m", "compiler", "compile", "--jobs", str(jobs), *args, "-o", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


def test_two_hash_seeds_two_file_orders_and_parallel_jobs_give_identical_trees(tmp_path):
    paths = SEED_SPECS + GOLDEN_INPUTS
    compile_with("0", paths, tmp_path / "a")
    compile_with("4242", list(reversed(paths)), tmp_path / "b", jobs=2)
    first, second = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert len(first) > len(paths)
    assert first.keys() == second.keys()
    different = [p for p in first if first[p] != second[p]]
    assert different == []


def test_no_timestamps_or_absolute_paths_in_output(tmp_path):
    compile_with("1", SEED_SPECS, tmp_path / "out")
    for path, data in tree(tmp_path / "out").items():
        text = data.decode("utf-8")
        assert str(ROOT) not in text, path
        assert str(tmp_path) not in text, path
        assert "2026-" not in text and "2025-" not in text, path


def test_the_recorded_compiler_digest_is_the_same_from_a_checkout_and_from_a_wheel(tmp_path):
    """Manifests are committed: the digest in them must not depend on how or where rollout was installed."""
    import shutil

    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "compiler", site / "compiler", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "templates", site / "compiler" / "templates")
    probe = "from compiler.output.digest import compiler_digest; print(compiler_digest())"

    def digest(path: Path, cwd: Path) -> str:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(path)
        proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    checkout = digest(ROOT, tmp_path)
    assert digest(site, tmp_path) == checkout
    (site / "compiler" / "templates" / "PLAN.md.j2").write_text("changed\n")
    assert digest(site, tmp_path) != checkout
