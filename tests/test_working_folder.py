"""Where the compile runs does not change what it writes: spec paths are relative to the output's parent."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_check_passes_from_any_working_folder(tmp_path):
    for cwd, specs, out in ((ROOT, "specs", "generated"), (ROOT / "specs", ".", "../generated"),
                            (tmp_path, str(ROOT / "specs"), str(ROOT / "generated"))):
        proc = subprocess.run([sys.executable, "-m", "compiler", "check", specs, "-o", out],
                              cwd=cwd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"from {cwd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
