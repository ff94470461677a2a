"""Detection: how soon a breaching canary fires a rollback, and that healthy traffic never does.

Measured with promtool on the rules ``rollout compile`` writes for a benchmark
spec (an error-rate gate of 1%, the default 5m window, 100 minimum requests and
no pending period), evaluated every 15 s like the generated rule group, on
exporter series scraped every 15 s:

- detection: 10 minutes of healthy canary traffic (0.5% errors), then a breach
  (2x, 10x the threshold, or every request failing) for an hour; the time from
  the breach to the first evaluation where an ``action="rollback"`` alert is
  firing, found by checking every evaluation.  Poisson traffic, 60 seeds per cell.
- false firings: three seeded runs of 24 hours of healthy Poisson traffic at 0.5x the threshold.
- zero traffic: two hours with no canary request (counters present, and no
  series at all).

Writes ``benchmarks/results/detection.md`` and the table in ``README.md`` and ``docs/observability.md``.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from compiler import pipeline, serialize
from compiler.gates import conventions, simulator as promsim, statistics
from compiler.gates.algebra import matchers_text, window
from compiler.ir.plan import Plan
from compiler.gates.simulator import Inputs, Phase
from compiler.targets.observability import prometheus

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "detection.md"
DOCS = (ROOT / "README.md", ROOT / "docs" / "observability.md")
BEGIN, END = "<!-- detection:begin -->", "<!-- detection:end -->"

THRESHOLD = 0.01
HEALTHY = THRESHOLD / 2
RATES = (0.1, 1.0, 10.0)  # canary requests per second
BREACHES = (("2x", 2 * THRESHOLD), ("10x", 10 * THRESHOLD), ("100%", 1.0))
HEALTHY_DAYS = 3  # seeded 24-hour healthy runs per traffic rate
SEEDS = tuple(range(11, 71))  # 60 seeded runs per cell where the gate judges
STARVED_SEEDS = SEEDS[:10]  # below min_requests every run holds: fewer runs show it
EVERY = 15  # evaluation interval, as the generated rule group
WARMUP = 600
BREACH = 3600
DAY = 86400
TARGET = 120  # a 10x breach at >= 1 request/s is caught within this many seconds
WEIGHT = 0.05

SPEC = f"""apiVersion: rollout-compiler/v1
kind: Rollout
metadata: {{name: bench, namespace: bench, owner: bench}}
service:
  host: bench.example.com
  port: 8080
  stable: {{version: v1, backend: bench-v1}}
  canary: {{version: v2, backend: bench-v2}}
traffic: {{targets: [gateway-api], gateway: {{name: edge}}}}
metrics: {{source: generic}}
stages:
  - {{name: canary, weight: {WEIGHT:.0%}, hold: 1h, gates: {{error_rate: "< {THRESHOLD:.0%}"}}}}
  - {{name: full, weight: 100%}}
current: canary
"""


def bench_plan(folder: Path) -> Plan:
    path = folder / "bench.yaml"
    path.write_text(SPEC)
    result = pipeline.analyse([path])
    assert result.ok, [d.text() for d in result.diagnostics]
    (unit,) = result.units
    return unit.plan


# --------------------------------------------------------------------------- promtool


def _duration(text: str) -> int:
    return sum(int(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+)([dhms])", text))


def _t(seconds: int) -> str:
    return window(seconds) if seconds else "0s"


def run(plan: Plan, inputs: Inputs, checks: list[dict], folder: Path) -> str:
    """promtool over the plan's rules with these inputs; its output (failed checks name their time)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(prometheus.render(plan)[prometheus.RULES])
    group = {"name": folder.name, "interval": _t(promsim.STEP),
             "input_series": promsim.input_series(plan, inputs), "promql_expr_test": checks}
    test = {"rule_files": ["rules.yaml"], "evaluation_interval": _t(EVERY), "tests": [group]}
    (folder / "test.yaml").write_text(serialize.json_text(test, sort_keys=False))
    result = subprocess.run(["promtool", "test", "rules", str(folder / "test.yaml")], capture_output=True, text=True,
                            timeout=3600)
    if "FAILED" not in result.stdout + result.stderr and result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return result.stdout + result.stderr


def alerts(plan: Plan, **labels: str) -> str:
    matchers = (
        [("alertstate", "=", "firing")] + conventions.identity_matchers(plan) + [(k, "=", v) for k, v in labels.items()]
    )
    return "ALERTS" + matchers_text(matchers)


@dataclass(frozen=True)
class Failed:
    """A check promtool failed: its expression, time and the sum of the values it got."""

    expr: str
    seconds: int
    got: float


def failed(output: str) -> list[Failed]:
    out = []
    pattern = re.compile(r'expr: "(.*?)", time: (\S+),\s*\n\s*exp: .*\n\s*got: (.*)')
    for expr, time, got in pattern.findall(output):
        values = [float(v) for v in re.findall(r"\} (\S+?)(?:,|$)", got.strip())]
        out.append(Failed(expr.replace('\\"', '"'), _duration(time), sum(values)))
    return out


def first(checks: list[Failed], action: str) -> int | None:
    times = sorted(c.seconds for c in checks if f'action="{action}"' in c.expr and c.expr.startswith("ALERTS"))
    return times[0] if times else None


def total(checks: list[Failed], action: str) -> float:
    return sum(c.got for c in checks if f'action="{action}"' in c.expr and c.expr.startswith("count_over_time"))


# --------------------------------------------------------------------------- scenarios


def traffic(rps: float, phases: list[tuple[int, float]], seed: int) -> Inputs:
    rng = random.Random(seed)
    canary = promsim.flow([Phase(seconds, rps, ratio) for seconds, ratio in phases], rng)
    total = sum(seconds for seconds, _ in phases)
    stable = promsim.flow([Phase(total, rps * (1 - WEIGHT) / WEIGHT, HEALTHY)], rng)
    return Inputs(canary.steps, {"canary": canary, "stable": stable})


@dataclass
class Detection:
    rps: float
    breach: str
    seconds: list[int | None]  # per seed: breach to firing rollback, None: not within the hour
    held: list[int | None]  # per seed: first firing of the hold alert, if any


def detection(plan: Plan, rps: float, name: str, ratio: float, work: Path) -> Detection:
    times: list[int | None] = []
    held: list[int | None] = []
    judged = rps * plan.metrics.window >= plan.metrics.min_requests
    for seed in SEEDS if judged else STARVED_SEEDS:
        inputs = traffic(rps, [(WARMUP, HEALTHY), (BREACH, ratio)], seed)
        end = WARMUP + BREACH
        checks = [{"expr": alerts(plan, action="rollback"), "eval_time": _t(t), "exp_samples": []}
                  for t in range(WARMUP, end + 1, EVERY)]
        checks += [{"expr": alerts(plan, action="hold"), "eval_time": _t(t), "exp_samples": []}
                   for t in range(WARMUP, end + 1, 300)]
        result = failed(run(plan, inputs, checks, work / f"detect-{rps}-{name}-{seed}"))
        rollback, hold = first(result, "rollback"), first(result, "hold")
        times.append(rollback - WARMUP if rollback is not None else None)
        held.append(hold - WARMUP if hold is not None else None)
    return Detection(rps, name, times, held)


@dataclass
class Healthy:
    rps: float
    rollbacks: float  # evaluations with a firing action=rollback alert over HEALTHY_DAYS runs of 24 h
    holds: float  # evaluations with the hold alert firing


def healthy(plan: Plan, rps: float, work: Path) -> Healthy:
    rollbacks = holds = 0.0
    for day in range(HEALTHY_DAYS):
        inputs = traffic(rps, [(DAY, HEALTHY)], seed=int(rps * 1000) + 7 + 1000 * day)
        checks = [
            {"expr": f"count_over_time({alerts(plan, action='rollback')}[1d])", "eval_time": "1d", "exp_samples": []},
            {"expr": f"count_over_time({alerts(plan, action='hold')}[1d])", "eval_time": "1d", "exp_samples": []},
        ]
        result = failed(run(plan, inputs, checks, work / f"healthy-{rps}-{day}"))
        rollbacks, holds = rollbacks + total(result, "rollback"), holds + total(result, "hold")
    return Healthy(rps, rollbacks, holds)


def zero(plan: Plan, work: Path) -> tuple[float, int | None, float, int | None]:
    """(rollback firings, first hold firing) with flat zero counters, then without canary series."""
    out = []
    for present in (True, False):
        inputs = traffic(1.0, [(7200, HEALTHY)], seed=99)
        inputs.flows["canary"] = promsim.flow([Phase(7200, 0.0)]) if present else None
        checks = [{"expr": f"count_over_time({alerts(plan, action='rollback')}[2h])", "eval_time": "2h",
                   "exp_samples": []}]
        checks += [{"expr": alerts(plan, action="hold"), "eval_time": _t(t), "exp_samples": []}
                   for t in range(0, 7201, 60)]
        result = failed(run(plan, inputs, checks, work / f"zero-{present}"))
        out.extend([total(result, "rollback"), first(result, "hold")])
    return tuple(out)  # type: ignore[return-value]


# --------------------------------------------------------------------------- report


def _percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _cell(d: Detection) -> str:
    caught = sorted(t for t in d.seconds if t is not None)
    if not caught:
        return "not judged (hold)" if all(h is not None for h in d.held) else "not within 1h"
    if len(caught) < len(d.seconds):
        return f"{len(caught)}/{len(d.seconds)} within 1h, median {median(caught):.0f}s"
    text = f"{median(caught):.0f}s (90% by {_percentile(caught, 0.9)}s, max {max(caught)}s)"
    if d.breach == "10x" and d.rps >= 1:
        text += f"; {sum(t <= TARGET for t in caught)}/{len(caught)} within {TARGET}s"
    return text


def _why(d: Detection, plan: Plan) -> str | None:
    seconds = plan.metrics.window
    n = d.rps * seconds
    if n < plan.metrics.min_requests:
        return (f"{d.rps:g} request/s (every breach): {n:.0f} requests per {window(seconds)} window is below "
                f"min_requests ({plan.metrics.min_requests}), so the gate does not judge; the hold alert says the "
                "canary is starved instead")
    if any(t is None for t in d.seconds):
        return (
            f"{d.breach} at {d.rps:g} request/s: in {n:.0f} requests a {d.breach} error ratio is often within "
            f"what {THRESHOLD:.0%} and noise give at {statistics.CONFIDENCE} confidence; it takes more requests per "
            "window (a longer window or more traffic) to tell them apart every time"
        )
    caught = [t for t in d.seconds if t is not None]
    if d.breach == "10x" and d.rps >= 1 and max(caught) > TARGET:
        expected = statistics.Z * (plan.metrics.window * d.rps * THRESHOLD * (1 - THRESHOLD)) ** 0.5 \
            + plan.metrics.window * d.rps * THRESHOLD + 0.5
        late = sum(t > TARGET for t in caught)
        return (f"10x at {d.rps:g} request/s: the median ({median(caught):.0f}s) meets the {TARGET}s target, "
                f"{late} of {len(caught)} runs took longer (the slowest {max(caught)}s): the gate needs about "
                f"{expected:.0f} errors in the window at {statistics.CONFIDENCE} confidence, and at "
                f"{d.rps * 10 * THRESHOLD:g} errors/s they arrive as a Poisson process, sometimes late. Catching "
                "every such run within the target takes a lower confidence, which costs false rollbacks on healthy "
                "traffic; the gate keeps the confidence")
    return None


def report(plan: Plan, cells: list[Detection], days: list[Healthy], zeros: tuple) -> tuple[str, list[str]]:
    header = "| canary traffic | " + " | ".join(f"{name} breach ({ratio:.0%} errors)" for name, ratio in BREACHES) + \
             f" | false rollbacks in {HEALTHY_DAYS} x 24 h healthy |"
    lines = [header, "|" + "---|" * (len(BREACHES) + 2)]
    for rps in RATES:
        row = [f"{rps:g} request/s"] + [_cell(c) for c in cells if c.rps == rps]
        day = next(d for d in days if d.rps == rps)
        hold = f" (hold alert {day.holds:.0f} evaluations)" if day.holds else ""
        row.append(f"{day.rollbacks:.0f}{hold}")
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)
    misses = list(dict.fromkeys(why for c in cells if (why := _why(c, plan))))
    misses += [f"{d.rps:g} request/s: {d.rollbacks:.0f} false rollback firings in {HEALTHY_DAYS} x 24 h"
               for d in days if d.rollbacks]
    flat_rollbacks, flat_hold, absent_rollbacks, absent_hold = zeros
    if flat_rollbacks or absent_rollbacks:
        misses.append("zero traffic fired a rollback")
    zero_text = (f"Zero canary traffic for 2 h: {flat_rollbacks:.0f} rollback firings with counters present "
                 f"(hold alert from {flat_hold}s), {absent_rollbacks:.0f} without canary series (hold alert from "
                 f"{absent_hold}s).")
    body = "\n".join([
        f"Error-rate gate `< {THRESHOLD:.0%}`, window {window(plan.metrics.window)}, "
        f"min_requests {plan.metrics.min_requests}, no pending period, {statistics.CONFIDENCE} confidence "
        f"(z = {statistics.Z}); rules evaluated every {EVERY}s, series scraped every {promsim.STEP}s; healthy canary "
        f"traffic has {HEALTHY:.1%} errors. Time from the breach to a firing `action=\"rollback\"` alert over "
        f"{len(SEEDS)} seeded Poisson runs per cell ({len(STARVED_SEEDS)} where the canary is starved): median, "
        f"90th percentile and worst (promtool {tool_version()}).",
        "",
        table,
        "",
        zero_text,
    ])
    return body, misses


def tool_version() -> str:
    result = subprocess.run(["promtool", "--version"], capture_output=True, text=True)
    match = re.search(r"version (\S+)", result.stdout + result.stderr)
    return match.group(1) if match else "?"


def write(body: str, misses: list[str]) -> None:
    verdict = "Every target is met." if not misses else "Missed:\n\n" + "\n".join(f"- {m}" for m in misses)
    text = f"{BEGIN}\n{body}\n\n{verdict}\n{END}\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Detection benchmark\n\nWritten by `make bench` (`python -m benchmarks detection`).\n\n" + text
    )
    for doc in DOCS:
        content = doc.read_text() if doc.exists() else ""
        if BEGIN in content and END in content:
            before, rest = content.split(BEGIN, 1)
            _, after = rest.split(END, 1)
            doc.write_text(before + text.rstrip("\n") + after)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plan = bench_plan(work)
        jobs = [(rps, name, ratio) for rps in RATES for name, ratio in BREACHES]
        with ThreadPoolExecutor(max_workers=2) as pool:
            cells = list(pool.map(lambda job: detection(plan, *job, work), jobs))
            days = list(pool.map(lambda rps: healthy(plan, rps, work), RATES))
        zeros = zero(plan, work)
    body, misses = report(plan, cells, days, zeros)
    write(body, misses)
    print(body)
    print("\n".join(["", "Missed:"] + misses) if misses else "\nEvery target is met.")
    slow = [c for c in cells if c.breach == "10x" and c.rps >= 1
            and (None in c.seconds or median(t for t in c.seconds if t is not None) > TARGET)]
    broken = [m for m in misses if "false" in m or "zero traffic" in m]
    return 1 if slow or broken else 0


if __name__ == "__main__":
    sys.exit(main())
