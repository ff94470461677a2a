"""prometheus: rules that gate the stage in effect, and the promtool tests that prove them.

Files (``prometheus/``):

- ``rules.yaml``: one rule group, evaluated every 15 s: recording rules per
  variant and window (request rate, error rate, error ratio, its confidence
  bounds, latency quantiles, custom gate values, the stage in effect), then the
  alerts of the stage in effect (:func:`compiler.promql.alert_rules`): one per
  gate, a ``hold`` alert when the canary is starved, burn-rate alerts when the
  stage serves everyone, and in the rollback state the guard that fires while
  the canary still receives traffic.
- ``prometheusrule.yaml``: the same group as a ``PrometheusRule``.
- ``rules.test.yaml``: promtool unit tests made with the rules: a healthy run
  with Poisson noise where nothing fires, zero canary traffic where no rollback
  fires and the hold alert does, and per alert a breach where it fires when the
  gate's math says and a recovery where it clears.  Written as JSON (which YAML
  readers accept) after the header: it is long, and JSON is fast to write.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from fractions import Fraction
from functools import lru_cache
from typing import Any
from collections.abc import Callable

from compiler.targets import kube
from compiler.gates import presets as metrics
from compiler.gates import promql
from compiler.gates import simulator as promsim
from compiler import serialize
from compiler.ir.plan import GatePlan, Plan, StagePlan
from compiler.gates.simulator import Inputs, Phase, STEP
from compiler.spec.units import format_decimal, format_duration, format_latency, format_percent
from compiler.targets.base import Finding, Target

NAME = "prometheus"
RULES = f"{NAME}/rules.yaml"
RULE_OBJECT = f"{NAME}/prometheusrule.yaml"
TESTS = f"{NAME}/rules.test.yaml"
API_VERSION = "monitoring.coreos.com/v1"
MIN_WINDOW = 60


# --------------------------------------------------------------------------- rules


def render(plan: Plan) -> dict[str, str]:
    return dict(_render(plan))


@lru_cache(maxsize=512)
def _render(plan: Plan) -> dict[str, str]:
    """The files of a plan (a pure function of it, cached: compiles render each stage of a plan more than once)."""
    group = rule_group(plan)
    header = kube.header(plan)
    return {
        RULES: serialize.yaml_text({"groups": [group]}, header),
        RULE_OBJECT: kube.manifest(plan, prometheus_rule(plan, group)),
        TESTS: serialize.comment(header) + serialize.json_text(test_file(plan), sort_keys=False),
    }


def rule_group(plan: Plan) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for record in promql.records(plan):
        rules.append({"record": record.name, "expr": record.expr, "labels": dict(record.labels)})
    for rule in promql.alert_rules(plan):
        item: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
        if rule.for_:
            item["for"] = format_duration(rule.for_)
        item["labels"] = dict(rule.labels)
        item["annotations"] = annotations(plan, rule, template_value)
        rules.append(item)
    return {"name": plan.names.rule_group, "interval": format_duration(STEP), "rules": rules}


def prometheus_rule(plan: Plan, group: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "PrometheusRule",
        "metadata": kube.metadata(plan, plan.names.prometheus_rule),
        "spec": {"groups": [group]},
    }


# --------------------------------------------------------------------------- annotations

ValueText = Callable[[str, float | None], str]

#: How each kind of value is shown: (Go template, the same formatting in Python).
FORMATS: dict[str, tuple[str, Callable[[float], str]]] = {
    "percent": ("{{ $value | humanizePercentage }}", lambda v: "%.4g%%" % (v * 100)),
    "number": ('{{ printf "%.4g" $value }}', lambda v: "%.4g" % v),
    "count": ('{{ printf "%.0f" $value }}', lambda v: "%.0f" % v),
}


def template_value(kind: str, value: float | None) -> str:
    return FORMATS[kind][0]


def formatted_value(kind: str, value: float | None) -> str:
    assert value is not None
    return FORMATS[kind][1](value)


def literal(text: str) -> str:
    """User text inside an annotation (a Go template): ``{{`` would start an action."""
    return text.replace("{{", '{{ "{{" }}')


def scope(plan: Plan) -> str:
    where = f"{plan.namespace}/{plan.name}"
    return f"{where} ({plan.environment})" if plan.environment else where


def annotations(plan: Plan, rule: promql.AlertRule, value: ValueText, measured: float | None = None,
                rendered: bool = False) -> dict[str, str]:
    """Annotations of a rule, as Go templates; ``rendered``: as Prometheus renders them, ``measured`` filled in."""
    summary, description = _texts(plan, rule)
    escape = (lambda text: text) if rendered else literal
    # the measured value goes in after escaping: it is template text, or a number once rendered
    description = escape(description).replace(_MARK, value(_kind_of(rule), measured))
    out = {"summary": escape(summary), "description": description}
    if plan.runbook:
        out["runbook_url"] = escape(plan.runbook)
    out["dashboard"] = escape(plan.dashboard_url)
    out["rollback_command"] = escape(plan.command("rollback"))
    return out


_MARK = "\x00value\x00"


def _kind_of(rule: promql.AlertRule) -> str:
    if rule.kind == "starved":
        return "count"
    if rule.kind == "burn" or (rule.gate is not None and rule.gate.kind in ("error_rate", "ratio")):
        return "percent"
    return "number"


def _texts(plan: Plan, rule: promql.AlertRule) -> tuple[str, str]:
    stage = plan.current.name
    action = f"Breach action: {rule.action}."
    if rule.kind == "guard":
        return (f"{scope(plan)}: the canary still receives traffic after the rollback",
                f"The canary still receives {_MARK} requests/s {format_duration(plan.rollback_within)} after the "
                "rollback (rollback.within): check that the rollback state is applied to every router and flag.")
    if rule.kind == "starved":
        assert rule.window is not None
        return (f"{scope(plan)}: canary starved at stage {stage}, its gates do not judge",
                f"The canary served {_MARK} requests in the last {format_duration(rule.window)}, fewer than the "
                f"{plan.metrics.min_requests} (metrics.min_requests) a gate needs to judge. Hold: do not promote "
                "until the canary receives traffic.")
    if rule.kind == "burn":
        burn, gate = rule.burn, promql.error_gate(plan.current)
        assert burn is not None and gate is not None
        objective = format_percent(1 - gate.threshold)
        return (f"{scope(plan)}: error budget burning {burn.factor:g}x at stage {stage}",
                f"The error ratio is at least {_MARK} ({promql.CONFIDENCE} confidence) over the last "
                f"{format_duration(burn.long)} and above "
                f"{burn.factor:g}x the {format_percent(gate.threshold)} budget over the last "
                f"{format_duration(burn.short)} too: the {objective} objective loses {burn.budget} of a 30-day "
                f"budget in {format_duration(burn.long)}. {action}")
    gate = rule.gate
    assert gate is not None
    window = format_duration(gate.window)
    summary = f"{scope(plan)}: gate {gate.name} ({gate.description}) breached at stage {stage}"
    if gate.kind == "error_rate":
        text = (f"Over the last {window} the canary's error ratio is at least {_MARK} ({promql.CONFIDENCE} "
                f"confidence), above the {format_percent(gate.threshold)} the gate allows. {action}")
    elif gate.kind == "latency":
        assert gate.quantile is not None
        text = (f"Over the last {window} the canary's {promql.quantile_name(gate.quantile)} latency is at least "
                f"{_MARK}s ({promql.CONFIDENCE} confidence), above the {format_latency(gate.threshold)} the gate "
                f"allows. {action}")
    elif gate.kind == "ratio":
        text = (f"Over the last {window} the canary's error ratio is at least {_MARK}, more than "
                f"{format_decimal(gate.threshold)}x the stable version's ({promql.CONFIDENCE} confidence each). {action}")
    else:
        side = "above the maximum" if gate.bound == "max" else "below the minimum"
        text = f"{gate.description}: the canary's value is {_MARK}, {side} {format_decimal(gate.threshold)}. {action}"
    return summary, text


# --------------------------------------------------------------------------- lint


def lint(plan: Plan) -> list[Finding]:
    out: list[Finding] = []
    for stage in plan.stages:
        out.extend(_lint_stage(plan, stage))
    return out


def _lint_stage(plan: Plan, stage: StagePlan) -> list[Finding]:
    out: list[Finding] = []
    for gate in stage.gates:
        if gate.window < MIN_WINDOW:
            out.append(Finding(gate.loc, f"gate {gate.name} of stage '{stage.name}' has a {format_duration(gate.window)} "
                               f"window: a rate needs at least {format_duration(MIN_WINDOW)} of scrapes", code="gates"))
        if stage.hold is not None:
            for what, seconds in (("window", gate.window), ("for", gate.for_)):
                if seconds > stage.hold:
                    out.append(Finding(gate.loc, f"gate {gate.name} of stage '{stage.name}' has a "
                                       f"{format_duration(seconds)} `{what}`, longer than the stage's "
                                       f"{format_duration(stage.hold)} hold: it cannot judge the stage before it ends",
                                       code="gates"))
        if gate.kind == "ratio" and promql.serves_everyone(stage):
            out.append(Finding(gate.loc, f"gate {gate.name} never judges at stage '{stage.name}': the stable version "
                               "receives no traffic to compare with", severity="warning", code="gates"))
        if promql.sourceless(gate):
            out.append(Finding(gate.loc + ("query",), f"custom gate {gate.name} yields a value with no input series "
                               "(vector(), absent(), time() or a number): with no traffic it still judges, and the "
                               "generated promtool tests cannot feed it, so they leave it out", severity="warning",
                               code="gates"))
        if gate.kind == "latency" and plan.metrics.canary.latency and not promql.quantile_is_scalar(plan.metrics.canary.latency):
            out.append(Finding(gate.loc, f"gate {gate.name}: metrics.custom.latency uses $quantile inside a label "
                               "value, so the gate compares the quantile as measured, without a confidence bound",
                               severity="warning", code="gates"))
    out.extend(_lint_traffic(plan, stage))
    out.extend(_lint_burn(plan, stage))
    return out


def _lint_traffic(plan: Plan, stage: StagePlan) -> list[Finding]:
    rps = plan.metrics.expected_rps
    if rps is None or not stage.gates or stage.kind == "preview":
        return []
    share = stage.mirror if stage.is_shadow else stage.weight
    out = []
    for seconds in promql.judged_windows(stage):
        span = min(seconds, stage.hold) if stage.hold else seconds
        expected = rps * float(share) * span
        if expected < plan.metrics.min_requests:
            what = "mirrored" if stage.is_shadow else "served"
            out.append(Finding(stage.loc, f"stage '{stage.name}' cannot reach metrics.min_requests: "
                               f"{format_percent(share)} of {format_decimal(Fraction(str(rps)))} requests/s "
                               f"{what} over {format_duration(span)} is about {expected:.0f} requests, fewer than "
                               f"{plan.metrics.min_requests}; its gates would never judge. Raise the share, "
                               "lengthen the gates' window or lower min_requests", code="gates"))
    return out


def _lint_burn(plan: Plan, stage: StagePlan) -> list[Finding]:
    gate = promql.error_gate(stage)
    if gate is None or not promql.serves_everyone(stage):
        return []
    out = []
    for burn in promql.BURN_RATES:
        if burn.factor * float(gate.threshold) >= 1:
            out.append(Finding(gate.loc, f"the {format_percent(1 - gate.threshold)} objective of stage '{stage.name}' "
                               f"leaves no room for the {burn.factor:g}x burn-rate alert "
                               f"({format_duration(burn.long)}/{format_duration(burn.short)}): it would need more than "
                               "100% errors, so it is not generated", severity="warning", code="gates"))
    return out


# --------------------------------------------------------------------------- promtool tests

#: The tests evaluate the rules every minute (the group runs every 15 s in Prometheus): four times
#: fewer evaluations keep promtool fast; the detection benchmark evaluates every 15 s.
TEST_EVERY = 60


def test_file(plan: Plan) -> dict[str, Any]:
    """The promtool tests of a plan."""
    rules = [r for r in promql.alert_rules(plan) if not (r.gate and promql.sourceless(r.gate))]
    scenario = Scenario(plan)
    tests = [scenario.healthy(), *scenario.zero(rules)]
    for rule in _distinct(rules):
        if rule.kind != "starved":  # the zero-traffic tests are its breach
            tests.append(scenario.breach(rules, rule))
    return {
        "rule_files": [RULES.rsplit("/", 1)[1]],
        "evaluation_interval": format_duration(TEST_EVERY),
        "tests": tests,
    }


def _distinct(rules: list[promql.AlertRule]) -> list[promql.AlertRule]:
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

    def __init__(self, plan: Plan):
        self.plan = plan
        stage = plan.current
        windows = promql.judged_windows(stage) or (plan.metrics.window,)
        n_min = plan.metrics.min_requests
        self.canary_rps = max(1, -(-3 * n_min // min(windows)))
        self.stable_rps = 0 if promql.serves_everyone(stage) else 4 * self.canary_rps
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
        stable = promsim.flow([Phase(total, self.stable_rps, self.healthy_errors if stable_errors is None else stable_errors)])
        flows: dict[str, promsim.Flow | None] = {"canary": promsim.flow(canary) if canary else None, "stable": stable}
        steps = stable.steps
        return Inputs(steps, flows, self._custom(steps, custom_breach), buckets or self.buckets)

    def _custom(self, steps: int, breach: tuple[int, int] | None = None) -> dict[str, list[float]]:
        """Recorded values of the custom gates per scrape: healthy, or past the threshold in ``breach`` (seconds)."""
        out = {}
        for gate in self.plan.current.gates:
            if gate.kind != "custom" or promql.sourceless(gate):
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
        canary = promsim.flow([Phase(seconds, canary_rps, self.healthy_errors, 0.001)], rng)
        stable = promsim.flow([Phase(seconds, self.stable_rps, self.healthy_errors, 0.001)], rng)
        custom = self._custom(canary.steps)
        for values in custom.values():
            values[:] = [v * (1 + 0.0001 * (rng.random() - 0.5)) for v in values]
        inputs = Inputs(canary.steps, {"canary": canary, "stable": stable}, custom, self.buckets)
        rates = f"canary {canary_rps} requests/s" + (f", stable {self.stable_rps} requests/s" if self.stable_rps else "")
        name = (f"healthy: {rates}, {format_percent(_fraction(self.healthy_errors))} errors, Poisson noise: "
                f"nothing fires in {_t(seconds)}")
        return self._group(name, inputs, [], [self._none_firing(seconds, {})])

    def zero(self, rules: list[promql.AlertRule]) -> list[dict[str, Any]]:
        starved = [r for r in rules if r.kind == "starved"]
        quiet = _up(max([r.for_ for r in starved] + [self.warmup]) + 120)
        resume = 0 if self.plan.is_rollback else _up(max([r.window or 0 for r in starved] + [0]) + 120)
        inputs = self._inputs([Phase(quiet, 0), Phase(resume, self.canary_rps, self.healthy_errors)])
        timelines = promsim.simulate(self.plan, starved, inputs, TEST_EVERY)
        hold = ", the hold alert fires and clears" if starved else ""
        then = f", then {self.canary_rps} requests/s" if resume else ""
        groups = [self._group(f"zero canary traffic for {_t(quiet)}{then}: no rollback{hold}", inputs,
                              self._checkpoints(timelines), [self._none_firing(quiet + resume, {"action": "rollback"})])]
        absent = self._inputs(None, seconds=quiet)
        timelines = promsim.simulate(self.plan, starved, absent, TEST_EVERY)
        hold = ", the hold alert fires" if starved else ""
        groups.append(self._group(f"no canary series for {_t(quiet)}: no rollback{hold}", absent,
                                  self._checkpoints(timelines, clears=False),
                                  [self._none_firing(quiet, {"action": "rollback"})]))
        return groups

    def breach(self, rules: list[promql.AlertRule], rule: promql.AlertRule) -> dict[str, Any]:
        """The rule's breach: long enough for every rule of its name to fire, then a recovery until they clear."""
        own = [r for r in rules if r.name == rule.name]
        plan_for = self._breach_plan(rule)
        if rule.kind == "burn":
            # The long windows hold only the test's short history, so the short windows decide; the pages'
            # are at most 30m. The 1x ticket fires within them too, and clears hours later: it is shown firing.
            longest = max(r.burn.short for r in own if r.burn is not None and r.burn.severity == "critical")
        else:
            longest = max(r.for_ for r in own) + max((r.gate.window if r.gate else r.window or 0) for r in own)
        bad, after = _up(longest + 1200), _up(longest + 600)
        timelines = promsim.simulate(self.plan, own, plan_for(bad, after), TEST_EVERY)
        fired = [t.first_firing() for t in timelines if t.first_firing() is not None]
        if fired:
            bad = max(fired) * TEST_EVERY - self.warmup + 2 * TEST_EVERY  # type: ignore[operator]
            timelines = promsim.simulate(self.plan, own, plan_for(bad, after), TEST_EVERY)
            end = self.warmup + bad
            clears = [t.first_clear(end // TEST_EVERY) for t in timelines]
            if all(c is not None for c in clears):
                after = max(clears) * TEST_EVERY - end + 2 * TEST_EVERY  # type: ignore[operator]
        inputs = plan_for(bad, after)
        timelines = promsim.simulate(self.plan, own, inputs, TEST_EVERY)
        what = self._describe(rule, bad)
        first = [t.first_firing() for t in timelines if t.first_firing() is not None]
        if first:
            start = min(first)  # type: ignore[type-var]
            cleared = [t.first_clear(start) for t in timelines]
            done = [c for c in cleared if c is not None]
            clear = f", clears at {_t(max(done) * TEST_EVERY)}" if done else ""
            if done and len(done) < len(cleared):  # the slow burn ticket outlasts the test
                clear = f", {len(done)} of {len(cleared)} clear by {_t(max(done) * TEST_EVERY)}"
            name = f"{rule.name}: {what} from {_t(self.warmup)}; fires at {_t(start * TEST_EVERY)}{clear}"
        else:
            name = f"{rule.name}: {what} from {_t(self.warmup)}; cannot fire (nothing to compare with)"
        return self._group(name, inputs, self._checkpoints(timelines), [])

    def _breach_plan(self, rule: promql.AlertRule) -> Callable[[int, int], Inputs]:
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
            return lambda bad, after: self._inputs([Phase(warm, rps, h), Phase(bad, rps, h, slow), Phase(after, rps, h)],
                                                   buckets=buckets)
        if gate.kind == "ratio":
            base, level = self._ratio_levels(gate.threshold)
            return lambda bad, after: self._inputs([Phase(warm, rps, base), Phase(bad, rps, level), Phase(after, rps, base)],
                                                   stable_errors=base)
        return lambda bad, after: self._inputs([Phase(warm + bad + after, rps, h)], custom_breach=(warm, warm + bad))

    def _latency_breach(self, gate: GatePlan) -> tuple[float, tuple[float, float]]:
        """(share of slow requests, bucket bounds) that put the judged quantile at 1.25x the threshold.

        Slow requests land between L/2 and 2L; with a share of twice 1 - level, the quantile the
        gate judges sits halfway up that bucket: a quarter above the threshold, so a gate with a
        looser threshold would not fire.
        """
        assert gate.quantile is not None
        threshold = float(gate.threshold)
        level = float(promql.quantile_level(float(gate.quantile), self.canary_rps * gate.window))
        return min(1.0, math.ceil(2000 * (1 - level)) / 1000), (threshold / 2, 2 * threshold)

    def _burn_level(self) -> float:
        gate = promql.error_gate(self.plan.current)
        assert gate is not None
        return min(1.0, 2 * max(b.factor for b in promql.burn_rates(self.plan)) * float(gate.threshold))

    def _ratio_levels(self, factor: Fraction) -> tuple[float, float]:
        base = max(self.healthy_errors, 0.005)
        return base, min(1.0, 10 * float(factor) * base)

    def _describe(self, rule: promql.AlertRule, bad: int) -> str:
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

    def _group(self, name: str, inputs: Inputs, alerts: list[dict[str, Any]], exprs: list[dict[str, Any]]) -> dict[str, Any]:
        group: dict[str, Any] = {"name": name, "interval": format_duration(STEP),
                                 "input_series": promsim.input_series(self.plan, inputs)}
        if alerts:
            group["alert_rule_test"] = alerts
        if exprs:
            group["promql_expr_test"] = exprs
        return group

    # ---- expectations

    def _none_firing(self, seconds: int, extra: dict[str, str]) -> dict[str, Any]:
        """No alert of this rollout (with ``extra`` labels) fired at any evaluation up to ``seconds``."""
        matchers = [("alertstate", "=", "firing")] + promql.identity_matchers(self.plan)
        matchers += [(k, "=", v) for k, v in extra.items()]
        untested = sorted(g.name for g in self.plan.current.gates if promql.sourceless(g))
        if untested:  # their values cannot be fed: see promql.sourceless
            matchers.append(("gate", "!~", "|".join(re.escape(name) for name in untested)))
        return {
            "expr": f"count_over_time(ALERTS{metrics.selector(matchers)}[{_t(seconds)}])",
            "eval_time": _t(seconds),
            "exp_samples": [],
        }

    def _checkpoints(self, timelines: list[promsim.Timeline], clears: bool = True) -> list[dict[str, Any]]:
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
            for k in sorted(c for c in changes if c >= 0):
                out.append({"eval_time": _t(k * TEST_EVERY), "alertname": name, "exp_alerts": self._expected(mine, k)})
        return out

    def _expected(self, timelines: list[promsim.Timeline], k: int) -> list[dict[str, Any]]:
        out = []
        for t in timelines:
            value = t.firing[k]
            if value is None:
                continue
            labels = {**promql.variant_labels(self.plan, "canary"), **dict(t.rule.labels)}
            out.append({"exp_labels": dict(sorted(labels.items())),
                        "exp_annotations": annotations(self.plan, t.rule, formatted_value, value, rendered=True)})
        return out


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


TARGET = Target(NAME, render, lint, rollback=True)
