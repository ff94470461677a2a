"""Where the compile runs does not change what it writes: spec paths are relative to the output's parent."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def test_check_passes_from_any_working_folder(tmp_path):
    for cwd, specs, out in ((ROOT, "specs", "generated"), (ROOT / "specs", ".", "../generated"),
                            (tmp_path, str(ROOT / "specs"), str(ROOT / "generated"))):
        proc = subprocess.run([sys.executable, "-m", "compiler", "check", specs, "-o", out],
                              cwd=cwd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"from {cwd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"


def test_specs_beside_the_output_s_parent_are_named_the_same_from_any_working_folder(tmp_path):
    """`specs/` beside `deploy/generated`: manifests name the specs `../specs/...` whatever the working folder,
    so `check` from another folder is up to date, and a compile of one spec never takes the others for gone."""
    import shutil

    specs = tmp_path / "specs"
    specs.mkdir()
    for name in ("a", "b"):
        shutil.copy(ROOT / "tests" / "validate" / "good" / "minimal.yaml", specs / f"{name}.yaml")
        text = (specs / f"{name}.yaml").read_text()
        (specs / f"{name}.yaml").write_text(text.replace("name: web,", f"name: {name},")
                                            .replace("host: web.example.com", f"host: {name}.example.com"))
    (tmp_path / "deploy").mkdir()

    def rollout(*args: str, cwd) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert rollout("compile", "specs", "-o", "deploy/generated", cwd=tmp_path).returncode == 0
    manifest = (tmp_path / "deploy/generated/shop/a/.rollout-manifest").read_text()
    assert '"spec": "../specs/a.yaml"' in manifest
    check = rollout("check", "../specs", "-o", "generated", cwd=tmp_path / "deploy")
    assert check.returncode == 0, check.stdout + check.stderr
    one = rollout("compile", "../../specs/a.yaml", "-o", ".", "--prune", cwd=tmp_path / "deploy/generated")
    assert one.returncode == 0 and "0 removed" in one.stderr, one.stdout + one.stderr
    assert (tmp_path / "deploy/generated/shop/b/PLAN.md").is_file()
