"""prometheus/rules.test.yaml: promtool unit tests that prove the rules of the stage in effect.

Made from the same expression trees as the rules (:mod:`compiler.gates.alerts`), evaluated by
:mod:`compiler.gates.simulator` over made-up traffic:

- a healthy run with Poisson noise where nothing fires;
- zero canary traffic (with counters, then without series) where no rollback fires and the hold
  alert does;
- per alert, a breach where it fires when the gate's math says, and a recovery where it clears.

Written as JSON (which YAML readers accept) after the header: it is long, and JSON is fast to write.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from compiler.gates import alerts, conventions as c
from compiler.gates import simulator
from compiler.gates.algebra import matchers_text
from compiler.gates.simulator import STEP, Inputs, Phase
from compiler.gates.statistics import quantile_level
from compiler.ir.plan import GatePlan, Plan
from compiler.spec.units import format_duration, format_latency, format_percent

#: What an alert's annotations say when it fires with a value (the Prometheus target renders them).
Annotate = Callable[[alerts.AlertRule, float], dict[str, str]]
#: The tests evaluate the rules every minute (the group runs every 15 s in Prometheus): four times
#: fewer evaluations keep promtool fast; the detection benchmark evaluates every 15 s.
TEST_EVERY = 60


def test_file(plan: Plan, rule_file: str, annotate: Annotate) -> dict[str, Any]:
    """The promtool tests of a plan's rules in ``rule_file`` (beside the tests)."""
    rules = [r for r in alerts.alert_rules(plan) if not (r.gate and alerts.untested(r.gate))]
    scenario = Scenario(plan, annotate)
    tests = [scenario.healthy(), *scenario.zero(rules)]
    for rule in _distinct(rules):
        if rule.kind not in ("starved", "resolve"):  # the zero-traffic tests are its breach; resolvers never fire
            tests.append(scenario.breach(rules, rule))
    return {
        "rule_files": [rule_file],
        "evaluation_interval": format_duration(TEST_EVERY),
        "tests": tests,
    }


def _distinct(rules: list[alerts.AlertRule]) -> list[alerts.AlertRule]:
    """One rule per alert name (the burn-rate alerts share one test)."""
    seen, out = set(), []
    for rule in rules:
        if rule.name not in seen:
            seen.add(rule.name)
            out.append(rule)
    return out


def _t(seconds: int) -> str:
    return format_duration(seconds) if seconds else "0s"


def _up(seconds: float) -> int:
    """Seconds rounded up to a whole evaluation."""
    return int(-(-seconds // TEST_EVERY) * TEST_EVERY)


class Scenario:
    """Traffic for the tests of one plan: rates that let every gate judge, healthy and breaching levels."""

    def __init__(self, plan: Plan, annotate: Annotate):
        self.plan = plan
        self.annotate = annotate
        self.records = alerts.records(plan)
        stage = plan.current
        windows = c.judged_windows(stage) or (plan.metrics.window,)
        n_min = plan.metrics.min_requests
        self.canary_rps = max(1, -(-3 * n_min // min(windows)))
        self.stable_rps = 0 if c.serves_everyone(stage) else 4 * self.canary_rps
        thresholds = [float(g.threshold) for g in stage.gates if g.kind == "error_rate"]
        self.healthy_errors = 0.5 * min(thresholds) if thresholds else 0.002
        latency = [float(g.threshold) for g in stage.gates if g.kind == "latency"]
        self.buckets = (min(latency) / 2, 4 * max(latency)) if latency else (0.1, 1.0)
        self.warmup = _up(max(windows + (plan.metrics.window,)) + 120)
        digest = hashlib.sha256(f"{plan.out}\x00{stage.name}".encode()).hexdigest()
        self.seed = int(digest[:16], 16)

    # ---- traffic

    def _inputs(self, canary: list[Phase] | None, stable_errors: float | None = None,
                custom_breach: tuple[int, int] | None = None, seconds: int | None = None,
                buckets: tuple[float, float] | None = None) -> Inputs:
        """Inputs of a group: the canary's phases (None: no canary series), stable traffic alongside."""
        total = seconds if seconds is not None else sum(p.seconds for p in canary or [])
        stable = simulator.flow(
            [Phase(total, self.stable_rps, self.healthy_errors if stable_errors is None else stable_errors)]
        )
        flows: dict[str, simulator.Flow | None] = {
            "canary": simulator.flow(canary) if canary else None,
            "stable": stable,
        }
        steps = stable.steps
        return Inputs(steps, flows, self._custom(steps, custom_breach), buckets or self.buckets)

    def _custom(self, steps: int, breach: tuple[int, int] | None = None) -> dict[str, list[float]]:
        """Recorded values of the custom gates per scrape: healthy, or past the threshold in ``breach`` (seconds)."""
        out = {}
        for gate in self.plan.current.gates:
            if gate.kind != "custom" or alerts.untested(gate):
                continue
            good, bad = _custom_levels(float(gate.threshold), gate.bound)
            values = [good] * steps
            if breach is not None:
                for i in range(breach[0] // STEP, min(breach[1] // STEP, steps)):
                    values[i] = bad
            out[gate.name] = values
        return out

    # ---- groups

    def healthy(self) -> dict[str, Any]:
        seconds = max(1200, self.warmup + 600)
        rng = random.Random(self.seed)
        canary_rps = 0 if self.plan.is_rollback else self.canary_rps  # rolled back, the canary gets nothing
        canary = simulator.flow([Phase(seconds, canary_rps, self.healthy_errors, 0.001)], rng)
        stable = simulator.flow([Phase(seconds, self.stable_rps, self.healthy_errors, 0.001)], rng)
        custom = self._custom(canary.steps)
        for values in custom.values():
            values[:] = [v * (1 + 0.0001 * (rng.random() - 0.5)) for v in values]
        inputs = Inputs(canary.steps, {"canary": canary, "stable": stable}, custom, self.buckets)
        rates = f"canary {canary_rps} requests/s" + (
            f", stable {self.stable_rps} requests/s" if self.stable_rps else ""
        )
        name = (f"healthy: {rates}, {format_percent(_fraction(self.healthy_errors))} errors, Poisson noise: "
                f"nothing fires in {_t(seconds)}")
        return self._group(name, inputs, [], [self._none_firing(seconds, {})])

    def zero(self, rules: list[alerts.AlertRule]) -> list[dict[str, Any]]:
        starved = [r for r in rules if r.kind == "starved"]
        quiet = _up(max([r.for_ for r in starved] + [self.warmup]) + 120)
        resume = 0 if self.plan.is_rollback else _up(max([r.window or 0 for r in starved] + [0]) + 120)
        inputs = self._inputs([Phase(quiet, 0), Phase(resume, self.canary_rps, self.healthy_errors)])
        read = simulator.needs(self.plan, starved, self.records)
        timelines = simulator.simulate(self.plan, starved, inputs, TEST_EVERY, self.records, read)
        hold = ", the hold alert fires and clears" if starved else ""
        then = f", then {self.canary_rps} requests/s" if resume else ""
        groups = [
            self._group(
                f"zero canary traffic for {_t(quiet)}{then}: no rollback{hold}",
                inputs,
                self._checkpoints(timelines),
                [self._none_firing(quiet + resume, {"action": "rollback"})],
            )
        ]
        absent = self._inputs(None, seconds=quiet)
        timelines = simulator.simulate(self.plan, starved, absent, TEST_EVERY, self.records, read)
        hold = ", the hold alert fires" if starved else ""
        groups.append(self._group(f"no canary series for {_t(quiet)}: no rollback{hold}", absent,
                                  self._checkpoints(timelines, clears=False),
                                  [self._none_firing(quiet, {"action": "rollback"})]))
        return groups

    def breach(self, rules: list[alerts.AlertRule], rule: alerts.AlertRule) -> dict[str, Any]:
        """The rule's breach: long enough for every rule of its name to fire, then a recovery until they clear."""
        own = [r for r in rules if r.name == rule.name]
        read = simulator.needs(self.plan, own, self.records)
        plan_for = self._breach_plan(rule)
        if rule.kind == "burn":
            # The long windows hold only the test's short history, so the short windows decide; the pages'
            # are at most 30m. The 1x ticket fires within them too, and clears hours later: it is shown firing.
            longest = max(r.burn.short for r in own if r.burn is not None and r.burn.severity == "critical")
        else:
            longest = max(r.for_ for r in own) + max((r.gate.window if r.gate else r.window or 0) for r in own)
        bad, after = _up(longest + 1200), _up(longest + 600)

        def run(inputs: Inputs) -> list[simulator.Timeline]:
            return simulator.simulate(self.plan, own, inputs, TEST_EVERY, self.records, read)

        # It fires within the breach: the first run needs no recovery. The rules are causal and the traffic
        # exact, so a shorter run is the start of a longer one: when every rule fires (or clears) within it,
        # the longer run would find the same times.
        timelines = run(plan_for(_up(longest + 180), 0))
        fired = [f for t in timelines if (f := t.first_firing()) is not None]
        if len(fired) < len(timelines):
            timelines = run(plan_for(bad, 0))
            fired = [f for t in timelines if (f := t.first_firing()) is not None]
        if fired:
            bad = max(fired) * TEST_EVERY - self.warmup + 2 * TEST_EVERY
            end = self.warmup + bad
            longer = after
            # The slow burn ticket clears hours later: the shorter recovery never decides, so the longer one is run
            # at once and the shorter run read from its start.
            ahead = run(plan_for(bad, longer)) if rule.kind == "burn" else None
            for recovery in (_up(longest + 300), longer):
                inputs = plan_for(bad, recovery)
                timelines = (_cut(ahead, inputs) if ahead is not None else None) or run(inputs)
                clears = [c for t in timelines if (c := t.first_clear(end // TEST_EVERY)) is not None]
                if len(clears) < len(timelines):
                    continue  # not all clear: the longer run decides, or the recovery stays as long
                needed = max(clears) * TEST_EVERY - end + 2 * TEST_EVERY
                if needed <= recovery or recovery == longer:
                    after = needed
                    break
        inputs = plan_for(bad, after)
        timelines = _cut(timelines, inputs) or run(inputs)
        what = self._describe(rule, bad)
        first = [f for t in timelines if (f := t.first_firing()) is not None]
        if first:
            start = min(first)
            cleared = [t.first_clear(start) for t in timelines]
            done = [c for c in cleared if c is not None]
            clear = f", clears at {_t(max(done) * TEST_EVERY)}" if done else ""
            if done and len(done) < len(cleared):  # the slow burn ticket outlasts the test
                clear = f", {len(done)} of {len(cleared)} clear by {_t(max(done) * TEST_EVERY)}"
            name = f"{rule.name}: {what} from {_t(self.warmup)}; fires at {_t(start * TEST_EVERY)}{clear}"
        else:
            name = f"{rule.name}: {what} from {_t(self.warmup)}; cannot fire (nothing to compare with)"
        return self._group(name, inputs, self._checkpoints(timelines), [], read)

    def _breach_plan(self, rule: alerts.AlertRule) -> Callable[[int, int], Inputs]:
        """A function (breach seconds, recovery seconds) -> inputs breaching this rule after the warm-up."""
        h, warm, rps = self.healthy_errors, self.warmup, self.canary_rps
        if rule.kind == "guard":
            return lambda bad, after: self._inputs([Phase(warm + bad, rps, h), Phase(after, 0)])
        if rule.kind == "burn":
            level = self._burn_level()
            return lambda bad, after: self._inputs([Phase(warm, rps, h), Phase(bad, rps, level), Phase(after, rps, h)])
        gate = rule.gate
        assert gate is not None
        if gate.kind == "error_rate":
            level = _error_breach(gate.threshold)
            return lambda bad, after: self._inputs([Phase(warm, rps, h), Phase(bad, rps, level), Phase(after, rps, h)])
        if gate.kind == "latency":
            slow, buckets = self._latency_breach(gate)
            return lambda bad, after: self._inputs(
                [Phase(warm, rps, h), Phase(bad, rps, h, slow), Phase(after, rps, h)], buckets=buckets
            )
        if gate.kind == "ratio":
            base, level = self._ratio_levels(gate.threshold)
            return lambda bad, after: self._inputs(
                [Phase(warm, rps, base), Phase(bad, rps, level), Phase(after, rps, base)], stable_errors=base
            )
        return lambda bad, after: self._inputs([Phase(warm + bad + after, rps, h)], custom_breach=(warm, warm + bad))

    def _latency_breach(self, gate: GatePlan) -> tuple[float, tuple[float, float]]:
        """(share of slow requests, bucket bounds) that put the judged quantile at 1.25x the threshold.

        Slow requests land between L/2 and 2L; with a share of twice 1 - level, the quantile the
        gate judges sits halfway up that bucket: a quarter above the threshold, so a gate with a
        looser threshold would not fire.
        """
        assert gate.quantile is not None
        threshold = float(gate.threshold)
        level = quantile_level(float(gate.quantile), self.canary_rps * gate.window)
        assert isinstance(level, float)  # numbers in, a number out
        return min(1.0, math.ceil(2000 * (1 - level)) / 1000), (threshold / 2, 2 * threshold)

    def _burn_level(self) -> float:
        gate = c.error_gate(self.plan.current)
        assert gate is not None
        return min(1.0, 2 * max(b.factor for b in c.burn_rates(self.plan)) * float(gate.threshold))

    def _ratio_levels(self, factor: Fraction) -> tuple[float, float]:
        base = max(self.healthy_errors, 0.005)
        return base, min(1.0, 10 * float(factor) * base)

    def _describe(self, rule: alerts.AlertRule, bad: int) -> str:
        for_ = f" for {_t(bad)}"
        if rule.kind == "guard":
            return f"the canary keeps {self.canary_rps} requests/s{for_} after the rollback, then none"
        if rule.kind == "burn":
            return f"{format_percent(_fraction(self._burn_level()))} errors{for_}"
        gate = rule.gate
        assert gate is not None
        if gate.kind == "error_rate":
            return f"{format_percent(_fraction(_error_breach(gate.threshold)))} errors{for_}"
        if gate.kind == "latency":
            slow, (fast, _) = self._latency_breach(gate)
            return f"{format_percent(_fraction(slow))} of requests slower than {format_latency(_fraction(fast))}{for_}"
        if gate.kind == "ratio":
            base, level = self._ratio_levels(gate.threshold)
            return (f"{format_percent(_fraction(level))} canary errors against {format_percent(_fraction(base))} "
                    f"on stable{for_}")
        return f"{gate.name} past its threshold{for_}"

    def _group(self, name: str, inputs: Inputs, alerts: list[dict[str, Any]], exprs: list[dict[str, Any]],
               only: simulator.Needs | None = None) -> dict[str, Any]:
        """A test group; with ``only``, fed just the series its alert reads (a breach says nothing of the others)."""
        group: dict[str, Any] = {"name": name, "interval": format_duration(STEP),
                                 "input_series": simulator.input_series(self.plan, inputs, only, self.records)}
        if alerts:
            group["alert_rule_test"] = alerts
        if exprs:
            group["promql_expr_test"] = exprs
        return group

    # ---- expectations

    def _none_firing(self, seconds: int, extra: dict[str, str]) -> dict[str, Any]:
        """No alert of this rollout (with ``extra`` labels) fired at any evaluation up to ``seconds``."""
        matchers = [("alertstate", "=", "firing")] + c.identity_matchers(self.plan)
        matchers += [(k, "=", v) for k, v in extra.items()]
        untested = sorted(g.name for g in self.plan.current.gates if alerts.untested(g))
        if untested:  # their values cannot be fed: see alerts.untested
            matchers.append(("gate", "!~", "|".join(re.escape(name) for name in untested)))
        return {
            "expr": f"count_over_time(ALERTS{matchers_text(matchers)}[{_t(seconds)}])",
            "eval_time": _t(seconds),
            "exp_samples": [],
        }

    def _checkpoints(self, timelines: list[simulator.Timeline], clears: bool = True) -> list[dict[str, Any]]:
        """alert_rule_test entries just before and at each change of the rules' firing state."""
        out = []
        for name in sorted({t.rule.name for t in timelines}):
            mine = [t for t in timelines if t.rule.name == name]
            changes: set[int] = set()
            for t in mine:
                first = t.first_firing()
                if first is None:
                    continue
                changes.update({first - 1, first})
                clear = t.first_clear(first)
                if clears and clear is not None:
                    changes.update({clear - 1, clear})
            if not changes:
                changes = {len(mine[0].firing) - 1}
            for k in sorted(x for x in changes if x >= 0):
                out.append({"eval_time": _t(k * TEST_EVERY), "alertname": name, "exp_alerts": self._expected(mine, k)})
        return out

    def _expected(self, timelines: list[simulator.Timeline], k: int) -> list[dict[str, Any]]:
        out = []
        for t in timelines:
            value = t.firing[k]
            if value is None:
                continue
            out.append({"exp_labels": dict(t.labels), "exp_annotations": self.annotate(t.rule, value)})
        return out


def _cut(timelines: list[simulator.Timeline], inputs: Inputs) -> list[simulator.Timeline] | None:
    """The timelines of a simulation of ``inputs`` when they begin like the inputs simulated (rules are
    causal: the first evaluations only see the first samples), or None when ``inputs`` run longer."""
    evaluations = ((inputs.steps - 1) * STEP) // TEST_EVERY + 1
    if any(len(t.firing) < evaluations for t in timelines):
        return None
    return [simulator.Timeline(t.rule, t.every, t.firing[:evaluations], t.labels) for t in timelines]


def _error_breach(threshold: Fraction) -> float:
    """The error ratio of a breach: ten times the threshold, at least 5%."""
    return min(1.0, max(10 * float(threshold), 0.05))


def _custom_levels(threshold: float, bound: str) -> tuple[float, float]:
    """(healthy, breaching) values of a custom gate."""
    margin = abs(threshold) * 0.5 if threshold else 1.0
    if bound == "max":
        return threshold - margin, threshold + margin
    return threshold + margin, threshold - margin


def _fraction(value: float) -> Fraction:
    return Fraction(value).limit_denominator(10**6)

