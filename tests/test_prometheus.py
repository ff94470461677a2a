"""Prometheus rules: the gate math, the rules' names and labels, and what the lint refuses.

promtool runs in ``test_promtool.py``; these tests need no external tool.
"""

from __future__ import annotations

import itertools
import math
import re
from functools import lru_cache
from pathlib import Path

import promql_parser
import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

import kubecheck
from compiler import pipeline
from compiler.gates import alerts, conventions, statistics
from compiler.gates import simulator as promsim
from compiler.gates.algebra import F, Selector, lift, render
from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets.observability import prometheus, promtool
from conftest import ALL_SPECS, GOLDEN, ROOT, SPECS, plan_of, plans_of

MINIMAL = (ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text()
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z_0-9]+:[a-z_0-9]+$")
ACTIONS = {"rollback", "hold", "notify"}
SEVERITIES = {"critical", "warning", "info"}


@lru_cache(maxsize=1)
def every_stage() -> list[Plan]:
    """Every spec at every stage and in the rollback state."""
    return [p.at(s) for p in plans_of(*ALL_SPECS) for s in [x.name for x in p.stages] + [ROLLBACK]]


def rules_of(plan: Plan) -> list[dict]:
    doc = yaml.safe_load(prometheus.render(plan)[prometheus.RULES])
    (group,) = doc["groups"]
    return group["rules"]


def alerts_of(plan: Plan) -> list[dict]:
    return [r for r in rules_of(plan) if "alert" in r]


def spec(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = MINIMAL
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


HOSTILE = '{{ printf "%s" "injected" }} and {{ .Labels }} \\ \'quoted\''


def hostile_spec(tmp_path: Path) -> Path:
    """A custom gate whose description is Go template syntax."""
    gate = ("gates:\n      custom:\n        score:\n          query: 'min(score{version=\"$version\"})'\n"
            "          min: 0.5\n          description: " + yaml.safe_dump(HOSTILE).strip().removesuffix("...").strip())
    stage = "- name: canary\n    weight: 5%\n    hold: 1h\n    " + gate
    return spec(tmp_path, ('- {name: canary, weight: 5%, hold: 1h, gates: {error_rate: "< 1%"}}', stage))


def findings(path: Path) -> list[str]:
    return [d.text() for d in pipeline.analyse([path]).diagnostics]


# --------------------------------------------------------------------------- the statistics


@pytest.mark.parametrize("threshold", [0.001, 0.005, 0.01, 0.02, 0.1, 0.3])
def test_wilson_lower_bound_is_the_continuity_corrected_score_test(threshold):
    for n in (100, 200, 300, 1000, 3000, 30000):
        for e in range(0, min(n, 600) + 1):
            judged = float(statistics.wilson_lower(e, n)) > threshold
            assert judged == statistics.score_test_breach(e, n, threshold), (e, n, threshold)


def test_a_handful_of_errors_on_little_traffic_is_not_a_breach():
    # 3 errors in 100 requests (3%) does not show that the error rate is above 1% ...
    assert float(statistics.wilson_lower(3, 100)) < 0.01
    # ... 30 in 1000 does, and so does 10% of 300.
    assert float(statistics.wilson_lower(30, 1000)) > 0.01
    assert float(statistics.wilson_lower(30, 300)) > 0.01
    assert float(statistics.wilson_lower(0, 300)) == 0


@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=5000))
def test_bounds_enclose_the_measured_ratio(errors, extra):
    n = errors + extra
    low, high = float(statistics.wilson_lower(errors, n)), float(statistics.wilson_upper(errors, n))
    assert 0 <= low <= errors / n <= high <= 1


def test_latency_gates_judge_a_lower_quantile_the_fewer_the_requests():
    levels = [float(statistics.quantile_level(0.99, n)) for n in (100, 300, 1000, 100000)]
    assert levels == sorted(levels) and levels[0] < 0.96 and 0.988 < levels[-1] < 0.99


_ATOMS = st.sampled_from(["a", "b", "c"]) | st.floats(min_value=-50, max_value=50, allow_nan=False).filter(
    lambda x: x != 0
)


def _trees(depth: int = 3):
    return st.recursive(_ATOMS, lambda kids: st.tuples(st.sampled_from("+-*/"), kids, kids), max_leaves=8)


@given(_trees())
def test_promql_text_groups_operations_as_computed(tree):
    """Q renders an expression with the parentheses PromQL needs to compute what Python computed."""
    values = {"a": 3.5, "b": -1.25, "c": 7.0}

    def build(node, as_q):
        if isinstance(node, str):
            return Selector(node) if as_q else F(values[node])
        if isinstance(node, float):
            return node
        op, left, right = node
        lhs, rhs = build(left, as_q), build(right, as_q)
        constant = type(lhs) is float and type(rhs) is float
        if constant:  # folded in Python, as the formulas fold their constants
            lhs = F(lhs)
        result = {"+": lambda: lhs + rhs, "-": lambda: lhs - rhs, "*": lambda: lhs * rhs, "/": lambda: lhs / rhs}[op]()
        if constant:
            assume(math.isfinite(result))
            return float(result)
        return result

    text = render(lift(build(tree, True)))
    direct = build(tree, False)
    promql_parser.parse(text.replace("a", "x").replace("b", "y").replace("c", "z"))
    again = eval(text, {"__builtins__": {}}, {k: F(v) for k, v in values.items()})  # noqa: S307
    assert (math.isnan(direct) and math.isnan(again)) or again == direct


def test_the_simulated_gate_fires_when_the_score_test_first_says_breach():
    """The firing time the tests expect is the first evaluation where the statistics say breach."""
    plan = plan_of(GOLDEN / "in-ramp.yaml").at("canary")
    (rule,) = [r for r in alerts.alert_rules(plan) if r.kind == "gate" and r.gate.kind == "error_rate"]
    gate = rule.gate
    inputs = promtool.Scenario(plan, lambda rule, value: {})._breach_plan(rule)(1200, 600)
    (timeline,) = promsim.simulate(plan, [rule], inputs, every=15)
    canary = inputs.flows["canary"]
    steps = gate.window // promsim.STEP

    def breach(i):
        n = sum(canary.requests[max(1, i - steps + 1): i + 1])
        e = sum(canary.errors[max(1, i - steps + 1): i + 1])
        return n >= plan.metrics.min_requests and statistics.score_test_breach(e, n, float(gate.threshold))

    expected = next(i for i in range(inputs.steps) if breach(i))
    assert timeline.first_firing() == expected
    assert timeline.first_firing() * 15 > promtool.Scenario(plan, lambda rule, value: {}).warmup


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize("plan", every_stage(), ids=lambda p: f"{p.out}@{p.current.name}")
def test_rules_are_named_by_convention_and_parse(plan):
    rules = rules_of(plan)
    for rule in rules:
        promql_parser.parse(rule["expr"])
        if "record" in rule:
            assert RECORD_NAME.match(rule["record"]), rule["record"]
    alerts = [r for r in rules if "alert" in r]
    for alert in alerts:
        labels = alert["labels"]
        assert {"rollout", "namespace", "stage", "gate", "severity", "action"} <= set(labels)
        assert labels["rollout"] == plan.name and labels["namespace"] == plan.namespace
        assert labels["stage"] == plan.current.name or rule["expr"] == "vector(0) > 1"  # a resolver
        assert labels["severity"] in SEVERITIES and labels["action"] in ACTIONS
        assert labels.get("environment") == plan.environment
        notes = alert["annotations"]
        assert {"summary", "description", "dashboard", "rollback_command"} <= set(notes)
        assert notes.get("runbook_url") == plan.runbook
        assert notes["dashboard"].endswith(f"/d/{plan.names.dashboard_uid}")
        command = f"rollout rollback {plan.source.path}" + (f" --env {plan.environment}" if plan.environment else "")
        assert notes["rollback_command"] == command
    gates = {g.name for g in plan.current.gates}
    assert {a["labels"]["gate"] for a in alerts if a["labels"]["gate"] in gates} == gates


def test_one_alert_per_gate_thresholds_and_for_from_the_spec():
    plan = plan_of(SPECS / "moe-intelligence.yaml").at("soft-launch")
    alerts = {r["alert"]: r for r in rules_of(plan) if "alert" in r}
    accuracy = alerts["MoeIntelligenceExpertAccuracyBreached"]
    assert "< 0.999" in accuracy["expr"] and accuracy["for"] == "10m"
    assert 'gate="expert_accuracy"' in accuracy["expr"]
    overhead = alerts["MoeIntelligenceOrchestrationOverheadBreached"]
    assert "> 0.01" in overhead["expr"] and overhead["for"] == "5m"
    error = alerts["MoeIntelligenceErrorRateBreached"]
    assert "wilson_lower5m" in error["expr"] and "> 0.01" in error["expr"] and "for" not in error
    assert error["labels"]["action"] == "rollback" and error["labels"]["severity"] == "critical"
    starved = alerts["MoeIntelligenceCanaryStarved"]
    assert starved["labels"]["action"] == "hold" and "< 500" in starved["expr"]


def test_custom_gate_queries_are_for_the_canary():
    plan = plan_of(SPECS / "moe-intelligence.yaml").at("full")
    records = [r for r in rules_of(plan) if r.get("record") == conventions.CUSTOM_RECORD]
    assert {r["labels"]["gate"] for r in records} == {
        "expert_accuracy",
        "false_positive_rate",
        "orchestration_overhead",
        "throughput",
    }
    for record in records:
        assert 'version="v2.1.0"' in record["expr"] and "$" not in record["expr"]
        assert record["labels"]["variant"] == "canary"


def test_ratio_gate_compares_the_canary_with_stable():
    plan = plan_of(SPECS / "modelops-coordinator.yaml")
    alerts = {r["alert"]: r for r in rules_of(plan) if "alert" in r}
    expr = alerts["MocErrorRateVsStableBreached"]["expr"]
    assert 'variant="canary"' in expr and 'variant="stable"' in expr and "2 * " in expr


def test_the_full_stage_gets_multiwindow_burn_rate_alerts():
    plan = plan_of(GOLDEN / "in-full.yaml")
    burns = [r for r in rules_of(plan) if r.get("alert") == "ProfileErrorBudgetBurn"]
    windows = sorted((r["labels"]["window"], r["labels"]["severity"]) for r in burns)
    assert windows == [("1h", "critical"), ("3d", "warning"), ("6h", "critical")]
    fast = next(r for r in burns if r["labels"]["window"] == "1h")
    assert (
        "ratio_rate1h" in fast["expr"] and "ratio_rate5m" in fast["expr"] and "> 0.0144" in fast["expr"]
    )  # raw ratios
    assert not [r for r in rules_of(plan_of(GOLDEN / "in-ramp.yaml")) if r.get("alert", "").endswith("Burn")]


def test_rollback_state_has_the_guard_alert_and_resolvers_only():
    plan = plan_of(GOLDEN / "in-rollback.yaml")
    alerts = [r for r in rules_of(plan) if "alert" in r]
    guard, *resolvers = alerts
    assert guard["alert"] == plan.names.rollback_guard_alert
    assert guard["for"] == "5m" and guard["labels"]["stage"] == "rollback"
    # the window the guard reads ends one scrape and one evaluation before `within`
    assert 'variant="canary"' in guard["expr"] and "rate4m30s" in guard["expr"]
    # every gate alert of every stage, never firing, with the labels of the alert it resolves
    assert resolvers and all(r["expr"] == "vector(0) > 1" and "for" not in r for r in resolvers)
    ramp = alerts_of(plan.at("canary"))
    assert {(r["alert"], tuple(sorted(r["labels"].items()))) for r in ramp if r["labels"]["gate"] != "min_requests"} \
        <= {(r["alert"], tuple(sorted(r["labels"].items()))) for r in resolvers}
    rolled = prometheus.render(plan_of(GOLDEN / "in-ramp.yaml"))
    assert prometheus.RULES in rolled  # the main state; the pipeline adds rollback/ from the same target
    assert prometheus.TARGET.rollback


def test_environment_labels_and_rollback_command():
    plan = plan_of(SPECS / "ai-orchestra.yaml", "staging")
    for alert in (r for r in rules_of(plan) if "alert" in r):
        assert alert["labels"]["environment"] == "staging"
        assert alert["annotations"]["rollback_command"].endswith(" --env staging")
    for record in (r for r in rules_of(plan) if "record" in r):
        if record["record"].startswith(conventions.LEVEL):
            assert 'environment="staging"' in record["expr"] or record["labels"]["environment"] == "staging"


def test_dashboard_link_uses_grafana_url():
    plan = plan_of(SPECS / "moe-intelligence.yaml")
    alert = next(r for r in rules_of(plan) if "alert" in r)
    assert alert["annotations"]["dashboard"] == f"https://grafana.example.com/d/{plan.names.dashboard_uid}"


def test_prometheus_rule_object_is_valid_and_carries_the_spec_labels():
    plan = plan_of(SPECS / "moe-intelligence.yaml")
    files = prometheus.render(plan)
    found, issues = kubecheck.check_files(files, lambda m: plan.namespace)
    assert issues == []
    (rule,) = [m for m in found if m.kind == "PrometheusRule"]
    assert rule.doc["metadata"]["name"] == plan.names.prometheus_rule
    assert rule.doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    plain = yaml.safe_load(files[prometheus.RULES])
    assert rule.doc["spec"] == plain
    for group in rule.doc["spec"]["groups"]:
        for r in group["rules"]:
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in r.get(key, {}).values())


def test_user_text_lands_inert_in_annotations(tmp_path):
    path = hostile_spec(tmp_path)
    plan = plan_of(path)
    alert = next(r for r in rules_of(plan) if r.get("alert") == "WebScoreBreached")
    for text in (alert["annotations"]["summary"], alert["annotations"]["description"]):
        assert '{{ "{{" }} printf' in text and '{{ "{{" }} .Labels }}' in text


# --------------------------------------------------------------------------- lint


def test_lint_gate_window_or_for_longer_than_the_hold(tmp_path):
    path = spec(tmp_path, ('hold: 1h, gates: {error_rate: "< 1%"}',
                           'hold: 10m, gates: {error_rate: {max: 1%, window: 15m, for: 20m}}'))
    problems = findings(path)
    line = path.read_text().splitlines()[11]
    window, for_ = line.index("window:") + 1, line.index("for:") + 1  # each finding points at its own field
    assert any(f":12:{window}: error: gate error_rate of stage 'canary' has a 15m `window`" in p for p in problems)
    assert any(f":12:{for_}:" in p and "20m `for`, longer than the 10m hold" in p for p in problems)


def test_lint_window_too_short_for_a_rate(tmp_path):
    path = spec(tmp_path, ('gates: {error_rate: "< 1%"}', 'gates: {error_rate: {max: 1%, window: 30s}}'))
    assert any("30s window: a rate needs at least 1m" in p for p in findings(path))


def test_lint_canary_that_cannot_reach_min_requests(tmp_path):
    path = spec(
        tmp_path,
        (
            "traffic: {targets: [gateway-api], gateway: {name: public}}",
            "traffic: {targets: [gateway-api], gateway: {name: public}}\n"
            "metrics: {expected_rps: 10, min_requests: 200}",
        ),
    )
    problems = findings(path)
    # 5% of 10 requests/s over 5m is 150 requests
    assert any(":13:5: error: stage 'canary' cannot reach metrics.min_requests" in p and "about 150" in p
               for p in problems), problems
    fine = spec(
        tmp_path,
        (
            "traffic: {targets: [gateway-api], gateway: {name: public}}",
            "traffic: {targets: [gateway-api], gateway: {name: public}}\n"
            "metrics: {expected_rps: 20, min_requests: 200}",
        ),
    )
    assert not any("min_requests" in p for p in findings(fine))


def test_lint_min_requests_names_the_hold_when_the_hold_is_what_is_short(tmp_path):
    path = spec(
        tmp_path,
        ("traffic: {targets: [gateway-api], gateway: {name: public}}",
         "traffic: {targets: [gateway-api], gateway: {name: public}}\n"
         "metrics: {expected_rps: 10, min_requests: 200}"),
        ('- {name: canary, weight: 5%, hold: 1h, gates: {error_rate: "< 1%"}}',
         '- {name: canary, weight: 5%, hold: 2m, gates: {error_rate: {max: 1%, window: 5m}}}'),
    )
    (found,) = [p for p in findings(path) if "cannot reach metrics.min_requests" in p]
    assert "over 2m is about 60 requests" in found and "lengthen the stage's hold" in found, found


def test_lint_burn_rate_page_that_can_never_fire(tmp_path):
    path = spec(
        tmp_path, ("- {name: full, weight: 100%}", '- {name: full, weight: 100%, gates: {error_rate: "< 10%"}}')
    )
    problems = findings(path)
    assert any("warning: the 90% objective of stage 'full' leaves no room for the 14.4x burn-rate alert" in p
               for p in problems), problems
    plan = plan_of(path).at("full")
    factors = sorted(r.burn.factor for r in alerts.alert_rules(plan) if r.kind == "burn")
    assert factors == [1.0, 6.0]


def test_lint_ratio_gate_at_full_traffic(tmp_path):
    path = spec(tmp_path, ("- {name: full, weight: 100%}",
                           '- {name: full, weight: 100%, gates: {error_rate_vs_stable: "< 2x"}}'))
    assert any("warning: gate error_rate_vs_stable never judges at stage 'full'" in p for p in findings(path))


def test_seed_specs_pass_the_lint():
    for path in ALL_SPECS:
        problems = [d for d in pipeline.analyse([path]).diagnostics if d.code == "gates" and d.severity == "error"]
        assert problems == [], path


def test_after_a_blue_green_switch_the_new_colour_is_measured_on_the_stable_route():
    plan = plan_of(SPECS / "ai-orchestra.yaml", "production")

    def canary_requests(stage: str) -> str:
        return next(r["expr"] for r in rules_of(plan.at(stage))
                    if r.get("record") == conventions.requests_record(300) and r["labels"]["variant"] == "canary")

    assert 'canary="production-ai-orchestra-preview-80"' in canary_requests("canary-50")
    assert 'canary=""' in canary_requests("switch")  # served by the main Ingress, which now selects green
    generic = plan_of(GOLDEN / "in-blue-green.yaml")  # versions tell the colours apart: nothing to swap
    assert generic.metrics.source == "generic"
    switched = next(r["expr"] for r in rules_of(generic.at("switch"))
                    if r.get("record") == conventions.requests_record(300) and r["labels"]["variant"] == "canary")
    assert 'version="v2.0.0"' in switched


def _expanded(text: str) -> list[float]:
    """promtool's expanding notation read back: ``a+bxn`` is a, a+b, ... a+n*b; ``_`` no sample."""
    out: list[float] = []
    for part in text.split():
        run = re.fullmatch(r"(-?[\d.e+inf]+)([+-])([\d.e+]+)x(\d+)", part)
        if run is None:
            out.append(float(part))
            continue
        start, sign, step, times = run.groups()
        delta = float(step) if sign == "+" else -float(step)
        out.extend(float(start) + k * delta for k in range(int(times) + 1))
    return out


@given(st.lists(st.integers(min_value=-3, max_value=3), max_size=40), st.integers(min_value=0, max_value=10**6))
def test_the_expanding_notation_reads_back_as_the_samples(steps, start):
    values = [float(start)]
    for step in steps:
        values.append(values[-1] + step)
    assert _expanded(promsim.expanding(values)) == values


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=120),
       st.sampled_from([15, 30, 60]), st.sampled_from([60, 120, 300, 600, 45]), st.integers(min_value=1, max_value=60))
def test_a_rate_over_a_full_window_is_the_extrapolated_rate(increments, every, seconds, count):
    """The plain difference the simulator takes over a window holding every sample is what Prometheus'
    extrapolation gives there."""
    values: list[float | None] = []
    total = 0.0
    for n in increments:
        total += n
        values.append(total)
    last = len(values) - 1
    expected = [promsim._extrapolated(values, k * every, seconds, last) for k in range(count)]
    assert promsim.rates(values, every, count, seconds) == expected


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=80),
       st.sampled_from([15, 30, 60]), st.sampled_from([60, 120, 300, 600, 3600]), st.integers(1, 40))
def test_rates_of_whole_counters_are_the_rates_of_their_doubles(increments, every, seconds, count):
    """Counters hold ints where doubles hold them exactly: every rate comes out as the same double."""
    counts = promsim.cumulative(increments)
    assert counts.whole and all(type(v) is int for v in counts)
    as_floats = [float(v) for v in counts]
    assert promsim.rates(counts, every, count, seconds) == promsim.rates(as_floats, every, count, seconds)
    last = len(counts) - 1
    for k in range(count):
        assert promsim._extrapolated(counts, k * every, seconds, last) == promsim._extrapolated(
            as_floats, k * every, seconds, last)


@given(st.lists(st.one_of(st.none(), st.floats(min_value=-10, max_value=1e6), st.just(math.nan)), max_size=60),
       st.sampled_from([0, 0.0, -0.0]), st.sampled_from([15, 30, 60]), st.sampled_from([60, 300, 3600]),
       st.integers(1, 60))
def test_the_first_windows_of_a_counter_from_zero_are_the_extrapolated_rate(rest, zero, every, seconds, count):
    values = [zero, *rest]
    last = len(values) - 1
    expected = [promsim._extrapolated(values, k * every, seconds, last) for k in range(count)]
    got = promsim.rates(values, every, count, seconds)
    assert [None if v is None else (v if v == v else "nan") for v in got] == [
        None if v is None else (v if v == v else "nan") for v in expected]


def test_counters_past_what_a_double_holds_are_doubles():
    counts = promsim.cumulative([2**53, 1])
    assert not counts.whole and all(type(v) is float for v in counts)


@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=60))
def test_counters_are_written_in_the_notation_of_their_samples(increments):
    counts = promsim.cumulative(increments)
    assert promsim._values_text(counts) == promsim.expanding([float(v) for v in itertools.accumulate(increments)])
