"""Compile speed, memory and the repository's shape on a varied fleet, against the floor of the same run.

For each fleet size (``ROLLOUT_BENCH_SIZES``, default 1000, 2000 and 3000 specs made by
:mod:`benchmarks.fleet`), on tmpfs when there is one, every command in a fresh
process pinned to one core, with byte-compiled sources and an empty hash cache
unless said otherwise:

- **floor**: read every spec with PyYAML's C loader and write the bytes the compile wrote
  (same paths, same sizes) into an empty folder; the median of three runs, as file writes vary most
  from run to run;
- **cold compile**: ``rollout compile --jobs 1`` into an empty folder, empty cache; the median of three runs,
  each followed by one of the floor's (a shared machine's speed drifts over minutes: the two medians see
  the same drift);
- **check, no cache**: ``rollout check`` of the unchanged fleet as a fresh CI clone runs it;
- **check**: the same with the cache the compile left, the median of three runs;
- **one changed**: ``rollout promote`` of one spec, then ``rollout compile`` (start-up included), the median of
  three specs promoted in turn; the files a promote changes (from ``rollout diff``, the most of the three), and
  whether any differs only in a digest or a header line;
- **peak RSS** of the cold compile (``wait4``), and its growth from the first size to the second;
- **largest object**: the largest Kubernetes object applied from the output (each YAML document, and each
  ConfigMap a kustomization generates from files), in bytes of JSON, with its linear extrapolation to
  10,000 rollouts from the first and the last size.

Then a profile of a cold compile of 60 specs in one process: where the time that is
left goes.  Writes ``benchmarks/results/compile.md``; exits 1 when a target is missed.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.fleet import write_fleet

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "compile.md"
SIZES = tuple(int(n) for n in os.environ.get("ROLLOUT_BENCH_SIZES", "1000,2000,3000").split(","))
KIB = 1024
PROFILED = 60
FLOOR_RUNS = 3
REPEATS = 3  # runs of the short commands, whose median is reported

FLOOR = r"""
import os, sys, time, yaml
specs, source, target = sys.argv[1:4]
blobs = []
for folder, dirs, names in os.walk(source):
    dirs[:] = sorted(d for d in dirs if d != ".rollout")
    for name in sorted(names):
        path = os.path.join(folder, name)
        with open(path, "rb") as handle:
            blobs.append((os.path.relpath(path, source), handle.read()))
started = time.perf_counter()
for name in sorted(os.listdir(specs)):
    with open(os.path.join(specs, name), "rb") as handle:
        yaml.load(handle.read(), Loader=yaml.CSafeLoader)
for relative, data in blobs:
    path = os.path.join(target, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
print(time.perf_counter() - started)
"""


@dataclass
class Run:
    seconds: float
    rss_mib: float
    stdout: str


def _pin() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def fresh(args: list[str], env: dict[str, str]) -> Run:
    """One fresh process on one core: wall time and peak resident memory (``wait4``)."""
    with tempfile.TemporaryFile() as captured:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=captured, stderr=subprocess.STDOUT,
                                preexec_fn=_pin)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        captured.seek(0)
        stdout = captured.read().decode()
    if code != 0:
        raise RuntimeError(f"{' '.join(args[2:])} exited {code}: {stdout[-2000:]}")
    return Run(elapsed, usage.ru_maxrss / 1024, stdout)


def rollout(*args: str, env: dict[str, str]) -> Run:
    return fresh([sys.executable, "-m", "compiler", *args], env)


def tmpfs() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def environment(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["ROLLOUT_CACHE_DIR"] = str(cache)
    env["PYTHONHASHSEED"] = "0"
    return env


def files_and_bytes(folder: Path) -> tuple[int, int]:
    count = size = 0
    for path in folder.rglob("*"):
        if path.is_file() and ".rollout" not in path.relative_to(folder).parts[:1]:
            count += 1
            size += path.stat().st_size
    return count, size


def largest_object(out: Path) -> tuple[int, str]:
    """(bytes of JSON, what) of the largest object a controller applies from ``out``."""
    import yaml

    best = (0, "")
    for path in out.rglob("*.yaml"):
        if ".rollout" in path.parts:
            continue
        relative = path.relative_to(out).as_posix()
        text = path.read_text(encoding="utf-8")
        for doc in yaml.load_all(text, Loader=yaml.CSafeLoader):
            if not isinstance(doc, dict) or "kind" not in doc:
                continue
            size = len(json.dumps(doc, separators=(",", ":")))
            if doc.get("kind") == "Kustomization":
                for generator in doc.get("configMapGenerator") or []:
                    files = [path.parent / f.split("=")[-1] for f in generator.get("files") or []]
                    size = sum(f.stat().st_size for f in files) + 512  # the data, and a ConfigMap's frame
                    best = max(best, (size, f"ConfigMap {generator['name']} ({relative})"))
                continue
            best = max(best, (size, f"{doc['kind']} in {relative}"))
    return best


def promote_one(specs: Path, out: Path, env: dict[str, str], skip: int = 0) -> tuple[Run, int, list[str]]:
    """Promote the first spec (after ``skip`` others) that has a next stage; the compile, the files it changed,
    and those that changed only in a digest or a header line."""
    for path in sorted(specs.glob("*.yaml"))[skip:]:
        done = subprocess.run([sys.executable, "-m", "compiler", "promote", str(path)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode == 0:
            break
    else:
        raise RuntimeError("no spec could be promoted")
    diff = subprocess.run([sys.executable, "-m", "compiler", "diff", str(specs), "-o", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True).stdout
    changed: dict[str, list[str]] = {}
    current = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else line[4:]
            changed[current] = []
        elif current is not None and line[:1] in "+-" and not line.startswith("--- "):
            changed[current].append(line[1:])
    trivial = [name for name, lines in changed.items() if lines and all(_bookkeeping(line) for line in lines)]
    compiled = rollout("compile", str(specs), "-o", str(out), env=env)
    counts = re.search(r"(\d+) compiled, (\d+) unchanged", compiled.stdout)
    if counts is None or not 1 <= int(counts.group(1)) <= 2 or int(counts.group(2)) == 0:  # a spec: 1 or 2 rollouts
        raise RuntimeError(f"one promoted spec: {compiled.stdout.strip()[-500:]}")
    return compiled, len(changed), trivial


def _bookkeeping(line: str) -> bool:
    """A line that says nothing about the output's meaning: a comment, or a digest."""
    stripped = line.strip()
    return stripped.startswith("#") or re.fullmatch(r'.*"?[0-9a-f]{64}"?,?', stripped) is not None


def measure(base: Path, size: int) -> dict[str, Any]:
    work = base / f"fleet-{size}"
    specs, out, cache, floor_out = work / "specs", work / "out", work / "cache", work / "floor"
    write_fleet(specs, size)
    env = environment(cache)
    colds, floors = [], []
    for _ in range(FLOOR_RUNS):  # writing files is the noisiest part of a run: the median of a few
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        colds.append(rollout("compile", "--jobs", "1", str(specs), "-o", str(out), env=env))
        floors.append(float(fresh([sys.executable, "-c", FLOOR, str(specs), str(out), str(floor_out)],
                                  env).stdout.strip()))
        shutil.rmtree(floor_out)
    cold = sorted(colds, key=lambda run: run.seconds)[len(colds) // 2]
    rss = max(run.rss_mib for run in colds)
    files, size_bytes = files_and_bytes(out)
    floor = statistics.median(floors)
    shutil.rmtree(cache)
    check_cold = rollout("check", str(specs), "-o", str(out), env=env)
    check_warm = statistics.median(rollout("check", str(specs), "-o", str(out), env=env).seconds
                                   for _ in range(REPEATS))
    biggest, what = largest_object(out)
    promotes = [promote_one(specs, out, env, skip=10 * k) for k in range(REPEATS)]  # different specs
    one = sorted(promotes, key=lambda p: p[0].seconds)[len(promotes) // 2][0]
    promoted = max(p[1] for p in promotes)
    trivial = sorted({name for p in promotes for name in p[2]})
    noop = rollout("compile", str(specs), "-o", str(out), env=env)
    shutil.rmtree(work)
    return {"specs": size, "files": files, "mb": size_bytes / 1e6, "floor": floor, "cold": cold.seconds,
            "rss": rss, "check_cold": check_cold.seconds, "check": check_warm,
            "one": one.seconds, "noop": noop.seconds, "largest": biggest, "largest_what": what,
            "promoted": promoted, "trivial": ", ".join(trivial) or "none"}


def profile(base: Path) -> str:
    """Cumulative time per part of a cold compile of PROFILED specs, in this process."""
    from compiler import build

    specs, out = base / "profiled" / "specs", base / "profiled" / "out"
    write_fleet(specs, PROFILED)
    os.environ["ROLLOUT_CACHE_DIR"] = ""
    profiler = cProfile.Profile()
    profiler.enable()
    build.build([specs], out, jobs=1)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = max(v[3] for v in stats.stats.values())  # type: ignore[attr-defined]  # pstats keeps its table untyped
    parts = {
        "load and validate (analyse)": "pipeline.py:.*\\(analyse_bytes\\)",
        "promtool tests (simulator)": "promtool.py:.*\\(test_file\\)",
        "  breach groups": "promtool.py:.*\\(breach\\)",
        "  healthy and zero-traffic groups": "promtool.py:.*\\((healthy|zero)\\)",
        "Prometheus rules": "prometheus.py:.*\\(rule_group\\)",
        "YAML emitter (libyaml + node building)": "serialize.py:.*\\(yaml_text\\)",
        "PLAN.md": "plan_md.py:.*\\(render\\)",
        "staging writes": "transaction.py:.*\\(write_staged\\)",
        "commit (renames)": "transaction.py:.*\\(commit\\)",
    }
    rows = []
    for label, pattern in parts.items():
        regex = re.compile(pattern)
        seconds = sum(v[3] for k, v in stats.stats.items()  # type: ignore[attr-defined]
                      if regex.search(f"{k[0]}:{k[1]}({k[2]})"))
        rows.append(f"| {label} | {100 * seconds / total:.0f}% |")
    head = f"| part of a cold compile (cProfile, {PROFILED} specs; parts overlap) | share of the time |\n|---|---|\n"
    return head + "\n".join(rows)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| specs | files | MB | floor | cold compile | x floor | check (no cache) | check | one promoted "
             "| no-op compile | peak RSS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['specs']:.0f} | {r['files']:.0f} | {r['mb']:.0f} | {r['floor']:.2f} s | {r['cold']:.1f} s "
                     f"| {r['cold'] / r['floor']:.1f} | {r['check_cold']:.2f} s | {r['check']:.2f} s "
                     f"| {r['one']:.2f} s | {r['noop']:.2f} s | {r['rss']:.0f} MiB |")
    lines += ["", "| specs | largest object | bytes | files one promote changes | of which only a digest or header |",
              "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['specs']:.0f} | {r['largest_what']} | {r['largest'] / KIB:.1f} KiB | {r['promoted']} "
                     f"| {r['trivial']} |")
    return "\n".join(lines)


def extrapolate(rows: list[dict[str, Any]], target: int = 10_000) -> float:
    """The largest object at ``target`` rollouts, on the line through the first and the last size."""
    first, last = rows[0], rows[-1]
    if last["specs"] == first["specs"]:
        return float(last["largest"])
    slope = (last["largest"] - first["largest"]) / (last["specs"] - first["specs"])
    return float(last["largest"] + slope * (target - last["specs"]))


def verdicts(rows: list[dict[str, Any]]) -> list[tuple[bool, str]]:
    first = rows[0]
    out = [
        (first["cold"] <= 10 * first["floor"],
         f"cold compile of {first['specs']:.0f} specs at most 10x the floor: {first['cold'] / first['floor']:.1f}x"),
        (first["check"] < 1.0, f"check of the unchanged fleet under 1 s: {first['check']:.2f} s"),
        (first["one"] < 1.0, f"one promoted spec recompiled under 1 s: {first['one']:.2f} s"),
        (first["rss"] < 256, f"peak RSS under 256 MiB: {first['rss']:.0f} MiB"),
        (first["largest"] <= 256 * KIB, f"largest object at {first['specs']:.0f} rollouts at most 256 KiB: "
         f"{first['largest'] / KIB:.1f} KiB"),
        (all(r["trivial"] == "none" for r in rows), "no file a promote changes differs only in a digest or header"),
    ]
    second = next((r for r in rows if r["specs"] == 2 * first["specs"]), None)
    if second is not None:
        growth = second["rss"] / first["rss"]
        out.append((growth <= 1.2, f"peak RSS of {second['specs']:.0f} specs within 1.2x of {first['specs']:.0f}: "
                    f"{growth:.2f}x"))
    if len(rows) > 1:
        at = extrapolate(rows)
        out.append((at <= KIB * KIB, "largest object extrapolated to 10,000 rollouts at most 1 MiB: "
                    f"{at / KIB:.1f} KiB"))
    return out


def build_used() -> str:
    """Which build the measured commands ran: the native one (compiler/native.py) or the sources."""
    done = subprocess.run([sys.executable, "-c", "import compiler.native as n; print(n.active(), len(n.MODULES))"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    used, count = done.stdout.split()
    return (f"the native build ({count} modules compiled by mypyc, `compiler/native.py`)" if used == "True"
            else "the Python sources (no native build here)")


def profile_of_sources(base: Path) -> str:
    """:func:`profile` in a process running the sources: cProfile sees no compiled function, and the native
    build runs the same functions."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.compile", "--profile", str(base)], cwd=ROOT,
                          env={**os.environ, "ROLLOUT_NATIVE": "0"}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def main() -> int:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "compiler")], check=True,
                   stdout=subprocess.DEVNULL)
    parent = tmpfs()
    used = build_used()
    with tempfile.TemporaryDirectory(prefix="rollout-bench-", dir=parent) as tmp:
        rows = []
        for size in SIZES:
            print(f"  fleet of {size} specs", flush=True)
            rows.append(measure(Path(tmp), size))
        shape = profile_of_sources(Path(tmp))
    checks = verdicts(rows)
    lines = [f"- {'ok' if passed else 'MISSED'}: {text}" for passed, text in checks]
    text = ("# Compile benchmark\n\n"
            "Written by `make bench` (`python -m benchmarks compile`). A varied fleet (`benchmarks/fleet.py`: "
            "every example spec's shape, names, thresholds, holds, windows and targets varied by index) on "
            f"{'tmpfs' if parent else 'disk'}; every command a fresh process pinned to one core, Python "
            f"{sys.version.split()[0]}, running {used}. The floor reads the specs with PyYAML's C loader and "
            "writes the compile's bytes to an empty folder in the same run; the cold compile and the floor are "
            f"each the median of {FLOOR_RUNS} runs, taken in turn (peak RSS: the most of the cold compiles). "
            "`check (no cache)` is a fresh CI clone's check (every file hashed); `check` and `one promoted` run "
            f"with the cache the previous commands left: `check` is the median of {REPEATS} runs, `one promoted` "
            f"the median of {REPEATS} specs promoted and compiled in turn.\n\n"
            f"{table(rows)}\n\n" + "\n".join(lines) + "\n\n## Where a cold compile spends its time\n\n"
            f"Profiled in the Python sources, whose functions the native build compiles.\n\n{shape}\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(passed for passed, _ in checks) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--profile"]:
        print(profile(Path(sys.argv[2])))
        sys.exit(0)
    sys.exit(main())
