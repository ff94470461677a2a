"""Every rule of a rollout's stage in effect, as expression trees: defined once per gate kind.

Recording rules measure each variant over each window (request and error
rates, the error ratio and its confidence bounds, latency quantiles and their
lower bounds, custom gate values, the stage itself).  Alerting rules judge:

- ``gate``: one per gate, its judged value past its threshold, with at least
  ``metrics.min_requests`` canary requests in the gate's window;
- ``starved``: the canary has fewer requests than that (or none at all): the
  gates cannot judge, so the stage holds;
- ``burn``: multiwindow burn-rate alerts when the stage serves everyone;
- ``guard``: in the rollback state, the canary still receives traffic.

The Prometheus target prints these trees, the promtool tests simulate them
(:mod:`compiler.gates.simulator`), the Grafana target draws their series and
``rollout gate`` evaluates their conditions with every recorded series inlined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from compiler.gates import conventions as c
from compiler.gates.algebra import (
    Call,
    Expr,
    Matching,
    Number,
    Paren,
    Selector,
    Text,
    both,
    call,
    text,
    compare,
    either,
    lift,
    paren,
    render,
    selectors,
    substitute,
    walk,
    window,
)
from compiler.gates.presets import VariantLabels, selected_metrics, substitute as fill, yields_a_number
from compiler.gates.statistics import quantile_level, wilson_lower, wilson_upper
from compiler.ir.plan import GatePlan, Plan, StagePlan

IDENTITY_VARIANT = ("rollout", "namespace", "environment", "variant")


@dataclass(frozen=True)
class Record:
    name: str
    expr: Expr
    labels: tuple[tuple[str, str], ...]
    _text: list[str] = field(default_factory=list, init=False, compare=False, repr=False)  # once rendered

    @property
    def text(self) -> str:
        if not self._text:
            self._text.append(render(self.expr))
        return self._text[0]


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule; ``kind`` says which of the conditions above it is."""

    name: str
    kind: str  # gate | starved | burn | guard | resolve
    expr: Expr
    for_: int  # seconds
    labels: tuple[tuple[str, str], ...]
    gate: GatePlan | None = None
    window: int | None = None  # starved: the window the count is taken over
    burn: c.BurnRate | None = None
    _text: list[str] = field(default_factory=list, init=False, compare=False, repr=False)  # once rendered

    @property
    def text(self) -> str:
        if not self._text:
            self._text.append(render(self.expr))
        return self._text[0]

    @property
    def action(self) -> str:
        return dict(self.labels)["action"]

    @property
    def severity(self) -> str:
        return dict(self.labels)["severity"]


# --------------------------------------------------------------------------- measurements


def count(plan: Plan, role: str, record: str, seconds: int) -> Expr:
    """A recorded rate times its window: how many over the window."""
    return c.series(plan, role, record) * seconds


def ratio_expr(plan: Plan, role: str, seconds: int) -> Expr:
    return c.series(plan, role, c.errors_record(seconds)) / c.series(plan, role, c.requests_record(seconds))


def lower_expr(plan: Plan, role: str, seconds: int) -> Expr:
    e, n = count(plan, role, c.errors_record(seconds), seconds), count(plan, role, c.requests_record(seconds), seconds)
    return lift(wilson_lower(e, n))


def upper_expr(plan: Plan, role: str, seconds: int) -> Expr:
    e, n = count(plan, role, c.errors_record(seconds), seconds), count(plan, role, c.requests_record(seconds), seconds)
    return lift(wilson_upper(e, n))


def latency_expr(plan: Plan, role: str, q: Fraction, seconds: int) -> Expr:
    return c.variant_metrics(plan, role).latency(Number(float(q)), seconds)


def latency_lower_expr(plan: Plan, q: Fraction, seconds: int) -> Expr:
    """The canary's latency at the lower-confidence quantile level (a scalar of its recorded request count)."""
    metrics = c.variant_metrics(plan, "canary")
    if not metrics.latency_takes_a_level():
        return latency_expr(plan, "canary", q, seconds)
    level = quantile_level(float(q), count(plan, "canary", c.requests_record(seconds), seconds))
    return metrics.latency(Call("scalar", (lift(level),)), seconds)


def custom_query(plan: Plan, gate: GatePlan) -> Expr:
    assert gate.query is not None
    v = plan.canary
    labels = VariantLabels(v.role, v.version, v.backend, v.port, plan.namespace)
    return text(fill(gate.query, labels, window=window(gate.window)))


def sourceless(gate: GatePlan) -> bool:
    """A custom gate whose query yields a value with no input series at all (``or vector(0)``, ``absent()``).

    Its recorded value always exists, so a test cannot feed it: the generated tests leave it out.
    """
    if gate.kind != "custom" or gate.query is None:
        return False
    query = gate.query.replace(" ", "")
    if any(f"{name}(" in query for name in ("vector", "absent", "absent_over_time", "time")):
        return True
    return yields_a_number(gate.query)


def reads_computed(gate: GatePlan) -> bool:
    """A custom gate whose query reads series a rule file computes (recorded series, ``ALERTS``, or any name).

    A test that feeds the other rules' inputs makes its value too, beside the one fed: the generated tests
    leave it out.
    """
    if gate.kind != "custom" or gate.query is None:
        return False
    return any(c.computed(name) for name in selected_metrics(gate.query))


def untested(gate: GatePlan) -> bool:
    """A custom gate the generated promtool tests cannot feed (:func:`sourceless`, :func:`reads_computed`)."""
    return sourceless(gate) or reads_computed(gate)


def reads_inputs(plan: Plan, gate: GatePlan) -> bool:
    """A custom gate whose query reads the metrics source's own series (the counters or histogram the
    recording rules read): the tests then feed the recorded series instead, which its query does not read."""
    if gate.kind != "custom" or gate.query is None or untested(gate):
        return False
    return not selected_metrics(gate.query).isdisjoint(source_metrics(plan))


def source_metrics(plan: Plan) -> frozenset[str]:
    """The names of the series the recording rules read that no rule records."""
    found = plan.memo.get("source metrics")
    if found is None:
        recorded = {r.name for r in records(plan)}
        found = plan.memo["source metrics"] = frozenset(
            s.metric for r in records(plan) if not isinstance(r.expr, Text) for s in selectors(r.expr)
            if s.metric not in recorded
        )
    assert isinstance(found, frozenset)
    return found


# --------------------------------------------------------------------------- conditions


def enough_requests(plan: Plan, seconds: int) -> Expr:
    """The canary's request count over a window, where it is at least ``min_requests``."""
    return compare(count(plan, "canary", c.requests_record(seconds), seconds), ">=", plan.metrics.min_requests)


def starved_expr(plan: Plan, seconds: int) -> Expr:
    """The canary's request count over a window, where it is below ``min_requests`` (0 where it has no series)."""
    rate = c.series(plan, "canary", c.requests_record(seconds))
    return either(compare(rate * seconds, "<", plan.metrics.min_requests), call("absent", rate) - 1)


def gate_value(plan: Plan, gate: GatePlan) -> Expr:
    """What a gate compares with its threshold (before the comparison)."""
    if gate.kind in ("error_rate", "ratio"):
        return c.series(plan, "canary", c.ratio_lower_record(gate.window))
    if gate.kind == "latency":
        assert gate.quantile is not None
        return c.series(plan, "canary", c.latency_lower_record(gate.quantile, gate.window))
    return c.selector(plan, c.CUSTOM_RECORD, "canary", [("gate", "=", gate.name)])


def gate_expr(plan: Plan, gate: GatePlan) -> Expr:
    """The alert condition of a gate: the judged value past the threshold, with enough canary requests."""
    value = gate_value(plan, gate)
    guard = enough_requests(plan, gate.window)
    if gate.kind == "ratio":
        stable = c.series(plan, "stable", c.ratio_upper_record(gate.window))
        condition = compare(value, ">", Number(float(gate.threshold)) * stable, Matching(False, ("variant",), True))
        return both(paren(condition), guard)
    condition = compare(value, ">" if gate.bound == "max" else "<", float(gate.threshold))
    if gate.kind == "custom":
        return both(paren(condition), paren(guard), Matching(True, IDENTITY_VARIANT))
    return both(paren(condition), guard)


def burn_expr(plan: Plan, burn: c.BurnRate, threshold: Fraction) -> Expr:
    """The SRE workbook's multiwindow condition on the raw error ratios, judged with metrics.min_requests
    in the short window and only when the long window shows, at the gates' confidence, an error rate
    above the objective's: a few unlucky errors of a quiet service are no budget burning."""
    limit = burn.factor * float(threshold)
    long = compare(c.series(plan, "canary", c.ratio_record(burn.long)), ">", limit)
    short = compare(c.series(plan, "canary", c.ratio_record(burn.short)), ">", limit)
    evidence = compare(c.series(plan, "canary", c.ratio_lower_record(burn.long)), ">", float(threshold))
    return both(paren(both(both(long, short), evidence)), enough_requests(plan, burn.short))


def guard_expr(plan: Plan) -> Expr:
    return compare(c.series(plan, "canary", c.requests_record(c.guard_window(plan))), ">", 0)


# --------------------------------------------------------------------------- the rules of a rollout


def records(plan: Plan) -> list[Record]:
    """Every recording rule of the stage in effect, in evaluation order (later rules read earlier ones)."""
    found = plan.memo.get("records")
    if found is None:
        found = plan.memo["records"] = _records(plan)
    return list(found)


def _records(plan: Plan) -> list[Record]:
    out: list[Record] = []
    for role in c.ROLES:
        labels = tuple(c.variant_labels(plan, role).items())
        metrics = c.variant_metrics(plan, role)
        for seconds in c.windows_of(plan, role):
            out.append(Record(c.requests_record(seconds), metrics.requests(seconds), labels))
            out.append(Record(c.errors_record(seconds), metrics.errors(seconds), labels))
    for role in c.ROLES:
        labels = tuple(c.variant_labels(plan, role).items())
        for seconds in c.windows_of(plan, role):
            out.append(Record(c.ratio_record(seconds), ratio_expr(plan, role, seconds), labels))
    gates = plan.current.gates
    canary_labels = tuple(c.variant_labels(plan, "canary").items())
    stable_labels = tuple(c.variant_labels(plan, "stable").items())
    for seconds in sorted({g.window for g in gates if g.kind in ("error_rate", "ratio")}
                          | {b.long for b in c.burn_rates(plan)}):
        out.append(Record(c.ratio_lower_record(seconds), lower_expr(plan, "canary", seconds), canary_labels))
    for seconds in sorted({g.window for g in gates if g.kind == "ratio"}):
        out.append(Record(c.ratio_upper_record(seconds), upper_expr(plan, "stable", seconds), stable_labels))
    if c.variant_metrics(plan, "canary").has_latency:
        for role in c.ROLES:
            labels = tuple(c.variant_labels(plan, role).items())
            for seconds in c.recorded_windows(plan):
                for q in c.QUANTILES:
                    out.append(Record(c.latency_record(q, seconds), latency_expr(plan, role, q, seconds), labels))
        for q, seconds in sorted({(g.quantile, g.window) for g in gates if g.kind == "latency" and g.quantile}):
            out.append(Record(c.latency_lower_record(q, seconds), latency_lower_expr(plan, q, seconds), canary_labels))
    for gate in gates:
        if gate.kind == "custom":
            out.append(Record(c.CUSTOM_RECORD, custom_query(plan, gate), canary_labels + (("gate", gate.name),)))
    out.append(stage_record(plan))
    return out


def stage_record(plan: Plan) -> Record:
    """The stage in effect as a series: value = the canary's share of live traffic."""
    labels = {**c.identity(plan), "stage": plan.current.name, "stage_kind": plan.current.kind,
              "dashboard_uid": plan.names.dashboard_uid}
    return Record(c.STAGE_RECORD, call("vector", float(plan.current.weight)), tuple(labels.items()))


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").split("_") if part)


def _alert_labels(plan: Plan, gate: str, severity: str, action: str, stage: StagePlan | None = None,
                  **extra: str) -> tuple[tuple[str, str], ...]:
    """An alert's labels, at the stage in effect or at ``stage``."""
    at = stage if stage is not None else plan.current
    labels = {**c.identity(plan), "stage": at.name, "gate": gate, "severity": severity, "action": action,
              **extra}
    if plan.alerting is not None:
        labels[c.ROUTE_LABEL] = plan.alerting.key
    return tuple(labels.items())


def alert_rules(plan: Plan) -> list[AlertRule]:
    """Every alerting rule of the stage in effect."""
    found = plan.memo.get("alert_rules")
    if found is None:
        found = plan.memo["alert_rules"] = _alert_rules(plan)
    return list(found)


def _alert_rules(plan: Plan) -> list[AlertRule]:
    if plan.is_rollback:
        return [AlertRule(plan.names.rollback_guard_alert, "guard", guard_expr(plan), plan.rollback_within,
                          _alert_labels(plan, "rollback_guard", "critical", "rollback"))] + resolvers(plan)
    stage = plan.current
    out = []
    for gate, (name, labels) in zip(stage.gates, _gate_heads(plan)):
        out.append(AlertRule(name, "gate", gate_expr(plan, gate), gate.for_, labels, gate=gate))
    for seconds in c.judged_windows(stage):
        out.append(AlertRule(f"{plan.names.alert_prefix}CanaryStarved", "starved", starved_expr(plan, seconds),
                             seconds, _alert_labels(plan, "min_requests", "info", "hold", window=window(seconds)),
                             window=seconds))
    objective = c.error_gate(stage)
    for burn, (name, labels) in zip(c.burn_rates(plan), _burn_heads(plan)):
        assert objective is not None
        out.append(AlertRule(name, "burn", burn_expr(plan, burn, objective.threshold), 0, labels, burn=burn))
    return out


def _gate_heads(plan: Plan, stage: StagePlan | None = None) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """(name, labels) of the gate alerts of the stage in effect (or of ``stage``)."""
    at = stage if stage is not None else plan.current
    prefix = plan.names.alert_prefix
    return [(f"{prefix}{camel(gate.name)}Breached", _alert_labels(plan, gate.name, gate.severity, gate.action, at))
            for gate in at.gates]


def _burn_heads(plan: Plan, stage: StagePlan | None = None) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """(name, labels) of the burn-rate alerts of the stage in effect (or of ``stage``)."""
    at = stage if stage is not None else plan.current
    return [(f"{plan.names.alert_prefix}ErrorBudgetBurn",
             _alert_labels(plan, "error_budget", burn.severity,
                           at.action if burn.severity == "critical" else "notify", at, window=window(burn.long)))
            for burn in c.stage_burn_rates(at)]


def resolvers(plan: Plan) -> list[AlertRule]:
    """In the rollback state, every stage's gate and burn-rate alerts as rules that never fire.

    Prometheus carries an alert's state over a reload to the rule of the same name and labels in the same
    group; such a rule that yields nothing resolves it at its next evaluation, and Alertmanager sends the
    resolution. A breach after a resume is then a new alert, notified at once (``group_wait``), not held
    back until the repeat interval as a repeat of the one that led to the rollback.
    """
    out, seen = [], set()
    for stage in plan.stages:
        if stage.kind == "rollback":
            continue
        for name, labels in _gate_heads(plan, stage) + _burn_heads(plan, stage):  # no expression is built
            if (name, labels) not in seen:
                seen.add((name, labels))
                out.append(AlertRule(name, "resolve", NEVER, 0, labels))
    return out


#: A condition that never yields a sample.
NEVER = compare(call("vector", 0.0), ">", 1)


# ------------------------------------------------------------- the same conditions without recording rules


def inline(plan: Plan, expr: Expr) -> Expr:
    """``expr`` evaluable by a Prometheus that has only the exporters' metrics: every recorded series of
    the plan replaced by the expression that records it (itself inlined), in parentheses.

    The values are those the recording rules would store at the same instant; only the labels the
    rules add (``rollout``, ``namespace``, ``variant``) are missing, on both sides of every operator.
    """
    defined: dict[str, Expr] = {}
    for record in records(plan):
        labels = dict(record.labels)
        if "variant" not in labels:
            continue  # the stage record: no condition reads it
        extra = [("gate", "=", labels["gate"])] if "gate" in labels else None
        key = render(c.selector(plan, record.name, labels["variant"], extra))
        defined[key] = Paren(_replace(record.expr, defined))
    return _replace(expr, defined)


def _replace(expr: Expr, defined: dict[str, Expr]) -> Expr:
    found = {id(n): defined[render(n)] for n in walk(expr) if isinstance(n, Selector) and render(n) in defined}
    return substitute(expr, found) if found else expr
