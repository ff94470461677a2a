"""Compile time of fleets: does it grow linearly with the number of specs?

Builds fleets of 50 and 200 specs (copies of the specs in ``specs/`` and
``tests/golden/``, each in a namespace of its own) and times, in a fresh
process each (no warm caches), ``rollout lint`` and ``rollout compile`` into an
empty folder, with one and with two jobs.  Writes
``benchmarks/results/compile.md``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "compile.md"
SIZES = (50, 200)
JOBS = (1, 2)
SOURCES = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "tests" / "golden").glob("in-*.yaml"))


def fleet(folder: Path, size: int) -> Path:
    """``size`` specs, each a copy of a source spec in a namespace of its own."""
    specs = folder / f"fleet-{size}"
    specs.mkdir()
    for index in range(size):
        source = SOURCES[index % len(SOURCES)]
        text = source.read_text(encoding="utf-8")
        text = re.sub(r"\bnamespace: ([a-z0-9-]+)", rf"namespace: \g<1>-{index}", text)
        (specs / f"{index:04d}-{source.name}").write_text(text, encoding="utf-8")
    return specs


def timed(*args: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"rollout {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def measure(folder: Path, size: int) -> list[dict[str, float]]:
    specs = fleet(folder, size)
    rows = []
    for jobs in JOBS:
        out = folder / f"out-{size}-{jobs}"
        lint = timed("lint", "--jobs", str(jobs), str(specs))
        compile_ = timed("compile", "--jobs", str(jobs), str(specs), "-o", str(out))
        files = sum(1 for p in out.rglob("*") if p.is_file())
        rows.append({"specs": size, "jobs": jobs, "files": files, "lint": lint, "compile": compile_})
    return rows


def table(rows: list[dict[str, float]]) -> str:
    lines = ["| specs | jobs | files written | lint | compile | compile per spec |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['specs']} | {r['jobs']} | {r['files']} | {r['lint']:.1f} s | {r['compile']:.1f} s | "
                     f"{1000 * r['compile'] / r['specs']:.0f} ms |")
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for size in SIZES for row in measure(Path(tmp), size)]
    single = [r for r in rows if r["jobs"] == 1]
    growth = (single[-1]["compile"] / single[-1]["specs"]) / (single[0]["compile"] / single[0]["specs"])
    linear = growth < 1.3
    verdict = (f"Compile time per spec with {SIZES[-1]} specs is {growth:.2f}x the time with {SIZES[0]}: "
               + ("linear in the fleet." if linear else "NOT linear: something grows with the fleet."))
    text = ("# Compile benchmark\n\nWritten by `make bench` (`python -m benchmarks compile`): fleets made of copies "
            "of `specs/` and `tests/golden/` in namespaces of their own; each command in a fresh process "
            f"(start-up included), Python {sys.version.split()[0]}.\n\n{table(rows)}\n\n{verdict}\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0 if linear else 1


if __name__ == "__main__":
    sys.exit(main())
