"""prometheus: rules that gate the stage in effect, and (from :mod:`.promtool`) the tests that prove them.

Files (``prometheus/``):

- ``rules.yaml``: one rule group, evaluated every 15 s: recording rules per
  variant and window (request rate, error rate, error ratio, its confidence
  bounds, latency quantiles, custom gate values, the stage in effect), then the
  alerts of the stage in effect (:func:`compiler.gates.alerts.alert_rules`): one per
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

from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from typing import Any

from compiler import serialize
from compiler.gates import alerts, conventions
from compiler.gates.statistics import CONFIDENCE
from compiler.ir.plan import Plan, StagePlan
from compiler.spec.units import format_decimal, format_duration, format_latency, format_percent
from compiler.targets import kube
from compiler.targets.base import CONFIG as CONFIG_FILE, MANIFEST, OTHER, Finding, Target
from compiler.targets.observability import promtool

NAME = "prometheus"
RULES = f"{NAME}/rules.yaml"
RULE_OBJECT = f"{NAME}/prometheusrule.yaml"
TESTS = f"{NAME}/rules.test.yaml"
API_VERSION = "monitoring.coreos.com/v1"


# --------------------------------------------------------------------------- rules


def render(plan: Plan) -> dict[str, str]:
    header = kube.header(plan)
    rules, rule_object = _rule_texts(plan, rule_group(plan), header)
    return {
        RULES: rules,
        RULE_OBJECT: rule_object,
        TESTS: serialize.comment(header) + serialize.json_text(test_file(plan), sort_keys=False),
    }


def _rule_texts(plan: Plan, group: dict[str, Any], header: str) -> tuple[str, str]:
    """rules.yaml and the PrometheusRule, whose ``spec`` is what rules.yaml holds: written once and nested, where
    the block layout writes it alone."""
    obj = prometheus_rule(plan, group)
    spec = obj.pop("spec")
    block = serialize.block_yaml(spec)
    nested = serialize.nested_yaml(obj, "spec", block, header) if block is not None else None
    if block is None or nested is None:  # libyaml writes one of them
        return serialize.yaml_text(spec, header), kube.manifest(plan, {**obj, "spec": spec})
    return serialize.comment(header) + block, nested


def rule_group(plan: Plan) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for record in alerts.records(plan):
        rules.append({"record": record.name, "expr": record.text, "labels": dict(record.labels)})
    for rule in alerts.alert_rules(plan):
        item: dict[str, Any] = {"alert": rule.name, "expr": rule.text}
        if rule.for_:
            item["for"] = format_duration(rule.for_)
        item["labels"] = dict(rule.labels)
        item["annotations"] = rule_annotations(plan, rule, template_value)
        rules.append(item)
    return {"name": plan.names.rule_group, "interval": format_duration(plan.metrics.evaluation_interval),
            "rules": rules}


def test_file(plan: Plan) -> dict[str, Any]:
    """The promtool tests of the rules, expecting the annotations as Prometheus renders them."""
    def expected(rule: alerts.AlertRule, value: float) -> dict[str, str]:
        return rule_annotations(plan, rule, formatted_value, value, rendered=True)

    return promtool.test_file(plan, RULES.rsplit("/", 1)[1], expected)


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


def rule_annotations(plan: Plan, rule: alerts.AlertRule, value: ValueText, measured: float | None = None,
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


def _kind_of(rule: alerts.AlertRule) -> str:
    if rule.kind == "starved":
        return "count"
    if rule.kind == "burn" or (rule.gate is not None and rule.gate.kind in ("error_rate", "ratio")):
        return "percent"
    return "number"


def _texts(plan: Plan, rule: alerts.AlertRule) -> tuple[str, str]:
    stage = plan.current.name
    action = f"Breach action: {rule.action}."
    if rule.kind == "resolve":
        stage_of = dict(rule.labels).get("stage", "")
        return (f"{scope(plan)}: resolves the alert of stage {stage_of} once rolled back",
                "Never fires: it lets the alert of the rolled-back stage resolve, so that a breach after a resume "
                "is notified at once.")
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
        burn, gate = rule.burn, conventions.error_gate(plan.current)
        assert burn is not None and gate is not None
        objective = format_percent(1 - gate.threshold)
        return (f"{scope(plan)}: error budget burning {burn.factor:g}x at stage {stage}",
                f"The error ratio is at least {_MARK} ({CONFIDENCE} confidence) over the last "
                f"{format_duration(burn.long)} and above "
                f"{burn.factor:g}x the {format_percent(gate.threshold)} budget over the last "
                f"{format_duration(burn.short)} too: the {objective} objective loses {burn.budget} of a 30-day "
                f"budget in {format_duration(burn.long)}. {action}")
    gate = rule.gate
    assert gate is not None
    window = format_duration(gate.window)
    summary = f"{scope(plan)}: gate {gate.name} ({gate.description}) breached at stage {stage}"
    if gate.kind == "error_rate":
        text = (f"Over the last {window} the canary's error ratio is at least {_MARK} ({CONFIDENCE} "
                f"confidence), above the {format_percent(gate.threshold)} the gate allows. {action}")
    elif gate.kind == "latency":
        assert gate.quantile is not None
        text = (f"Over the last {window} the canary's {conventions.quantile_name(gate.quantile)} latency is at least "
                f"{_MARK}s ({CONFIDENCE} confidence), above the {format_latency(gate.threshold)} the gate "
                f"allows. {action}")
    elif gate.kind == "ratio":
        text = (f"Over the last {window} the canary's error ratio is at least {_MARK}, more than "
                f"{format_decimal(gate.threshold)}x the stable version's ({CONFIDENCE} confidence each). {action}")
    else:
        side = "above the maximum" if gate.bound == "max" else "below the minimum"
        text = f"{gate.description}: the canary's value is {_MARK}, {side} {format_decimal(gate.threshold)}. {action}"
    return summary, text


# --------------------------------------------------------------------------- lint


#: Where a finding names its stage; the same finding at several stages (gates and holds set once for all the
#: stages of a preset) is one finding naming them all, in the rollout's order.
STAGE = "\0stage\0"


def lint(plan: Plan) -> list[Finding]:
    out: list[Finding] = []
    if plan.rollback_within < conventions.min_within(plan):
        out.append(Finding(("rollback", "within"), f"rollback.within {format_duration(plan.rollback_within)} is "
                           "shorter than the post-rollback guard can observe: the canary's request rate over "
                           f"{format_duration(conventions.min_window(plan))} (four scrapes), one scrape and one "
                           f"evaluation after it; give at least {format_duration(conventions.min_within(plan))}",
                           code="rollback"))
    stages: dict[Finding, list[str]] = {}
    for stage in plan.stages:
        for finding in _lint_stage(plan, stage):
            stages.setdefault(finding, []).append(stage.name)
    return out + [replace(f, message=f.message.replace(STAGE, _stages(names))) for f, names in stages.items()]


def _stages(names: list[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    if len(quoted) == 1:
        return f"stage {quoted[0]}"
    return f"stages {', '.join(quoted[:-1])} and {quoted[-1]}"


def _lint_stage(plan: Plan, stage: StagePlan) -> list[Finding]:
    out: list[Finding] = []
    for gate in stage.gates:
        windowed = gate.kind != "custom" or "$window" in (gate.query or "")  # a custom query may take no window
        if windowed and gate.window < conventions.min_window(plan):
            out.append(
                Finding(
                    gate.loc + ("window",),  # the gate itself where the window is the source's default
                    f"gate {gate.name} of {STAGE} has a {format_duration(gate.window)} "
                    f"window: a rate needs at least {format_duration(conventions.min_window(plan))} of scrapes "
                    f"(four, every {format_duration(plan.metrics.scrape_interval)})",
                    code="gates",
                )
            )
        if stage.hold is not None:
            for what, seconds in (("window", gate.window if windowed else 0), ("for", gate.for_)):
                if seconds > stage.hold:
                    out.append(Finding(gate.loc + (what,), f"gate {gate.name} of {STAGE} has a "
                                       f"{format_duration(seconds)} `{what}`, longer than the "
                                       f"{format_duration(stage.hold)} hold: it cannot judge the stage before it "
                                       f"ends; make the hold longer or the `{what}` shorter, or leave the stage "
                                       "without gates",
                                       code="gates"))
        if gate.kind == "ratio" and conventions.serves_everyone(stage):
            out.append(Finding(gate.loc, f"gate {gate.name} never judges at {STAGE}: the stable version "
                               "receives no traffic to compare with", severity="warning", code="gates"))
        if alerts.sourceless(gate):
            out.append(Finding(gate.loc + ("query",), f"custom gate {gate.name} yields a value with no input series "
                               "(vector(), absent(), time() or a number): with no traffic it still judges, and the "
                               "generated promtool tests cannot feed it, so they leave it out", severity="warning",
                               code="gates"))
        elif alerts.reads_computed(gate):
            out.append(Finding(gate.loc + ("query",), f"custom gate {gate.name} reads series a rule file computes "
                               "(rollout:..., rollout_variant:..., ALERTS, or a selector without a metric name): "
                               "the generated promtool tests cannot feed its value, so they leave it out; read the "
                               "scraped series instead", severity="warning", code="gates"))
        if (
            gate.kind == "latency"
            and plan.metrics.canary.has_latency
            and not plan.metrics.canary.latency_takes_a_level()
        ):
            out.append(Finding(gate.loc, f"gate {gate.name}: metrics.custom.latency uses $quantile inside a label "
                               "value, so the gate compares the quantile as measured, without a confidence bound",
                               severity="warning", code="gates"))
    out.extend(_lint_unjudged(plan, stage))
    out.extend(_lint_traffic(plan, stage))
    out.extend(_lint_burn(plan, stage))
    return out


#: Sources that count only the requests a router routes, not the copies it mirrors to the canary.
BLIND_TO_MIRRORS = {"ingress-nginx": "ingress-nginx counts the requests it routes, not the copies it mirrors",
                    "haproxy": "HAProxy's exporter counts the requests it routes, and HAProxy does not mirror"}


def _lint_unjudged(plan: Plan, stage: StagePlan) -> list[Finding]:
    """Gates that can never judge their stage: no request of the stage reaches what the source measures."""
    if not stage.gates or stage.kind in ("preview", "rollback"):
        return []
    loc = stage.gates[0].loc[:-1]
    if stage.is_shadow and plan.metrics.source in BLIND_TO_MIRRORS:
        return [Finding(loc, f"the gates of {STAGE} never judge: it only mirrors traffic, and "
                        f"{BLIND_TO_MIRRORS[plan.metrics.source]}; the canary-starved alert fires for the whole stage",
                        severity="warning", code="gates")]
    if not stage.is_shadow and stage.weight == 0 and not (stage.testers and plan.testers is not None):
        return [Finding(loc, f"{STAGE} serves 0% and has no testers: its gates never judge, the canary-starved "
                        "alert fires for the whole stage", severity="warning", code="gates")]
    return []


def _lint_traffic(plan: Plan, stage: StagePlan) -> list[Finding]:
    rps = plan.metrics.expected_rps
    if rps is None or not stage.gates or stage.kind == "preview":
        return []
    share = stage.mirror if stage.is_shadow else stage.weight
    out = []
    for seconds in conventions.judged_windows(stage):
        span = min(seconds, stage.hold) if stage.hold else seconds
        expected = rps * float(share) * span
        if expected < plan.metrics.min_requests:
            what = "mirrored" if stage.is_shadow else "served"
            out.append(Finding(stage.loc, f"{STAGE} cannot reach metrics.min_requests: "
                               f"{format_percent(share)} of {format_decimal(Fraction(str(rps)))} requests/s "
                               f"{what} over {format_duration(span)} is about {expected:.0f} requests, fewer than "
                               f"{plan.metrics.min_requests}; its gates would never judge. Raise the share, "
                               + ("lengthen the stage's hold" if stage.hold and stage.hold < seconds
                                  else "lengthen the gates' window")
                               + " or lower min_requests", code="gates"))
    return out


def _lint_burn(plan: Plan, stage: StagePlan) -> list[Finding]:
    gate = conventions.error_gate(stage)
    if gate is None or not conventions.serves_everyone(stage):
        return []
    out = []
    for burn in conventions.BURN_RATES:
        if burn.factor * float(gate.threshold) >= 1:
            out.append(Finding(gate.loc, f"the {format_percent(1 - gate.threshold)} objective of {STAGE} "
                               f"leaves no room for the {burn.factor:g}x burn-rate alert "
                               f"({format_duration(burn.long)}/{format_duration(burn.short)}): it would need more than "
                               "100% errors, so it is not generated", severity="warning", code="gates"))
    return out


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    """Every rule carries the stage's name."""
    return {RULES: stage.name, RULE_OBJECT: stage.name, TESTS: stage.name}


TARGET: Target = Target(NAME, render, lint, rollback=True,
                        kinds={RULES: CONFIG_FILE, RULE_OBJECT: MANIFEST, TESTS: OTHER}, stage_keys=stage_keys)
