"""The gate math as PromQL: recording-rule names, label sets and the expressions of every gate.

The Prometheus target writes these expressions into rules, the Grafana target
draws the recorded series, and ``rollout gate`` evaluates the same series.  The
formulas are written once, over an algebra that works both on floats (to
predict what a rule will do) and on :class:`Q`, PromQL text that combines like
a number: ``wilson_lower(e, n)`` with floats is the bound, with ``Q`` it is the
expression Prometheus evaluates, with the same operations in the same order.

How a gate judges (``docs/observability.md`` has the why):

- error rate (max T): the lower bound of a continuity-corrected Wilson score
  interval of the canary's error ratio over the gate's window must not exceed
  T.  ``wilson_lower(e, n) > T`` is exactly the one-sided score test
  ``e - 1/2 > nT + z*sqrt(nT(1-T))`` (:func:`score_test_breach`) at confidence
  :data:`CONFIDENCE`.
- latency (max L at quantile q): the share of requests slower than L is a
  proportion too; the gate compares with L the sample quantile at the level
  ``q - z*sqrt(q(1-q)/n) - 1/(2n)`` (:func:`quantile_level`), the lower
  confidence bound of the q-quantile.
- error rate vs stable (max factor R): the canary's lower bound must not
  exceed R times the stable's upper bound.
- custom: the user's query against the threshold, as written.
- every gate: fewer than ``metrics.min_requests`` canary requests in the
  gate's window and the gate does not judge; the ``hold`` alert says so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from fractions import Fraction
from typing import Union

import promql_parser

from compiler.gates import presets as metrics
from compiler.ir.plan import GatePlan, Plan, StagePlan
from compiler.spec.units import format_duration

#: One-sided confidence of every statistical gate, and its normal quantile.
CONFIDENCE = "99.99%"
Z = 3.719
#: Rule groups are evaluated this often (seconds); alert timings assume it.
EVALUATION_INTERVAL = 15
#: The window of the post-rollback traffic check.
GUARD_WINDOW = 120
#: Level of the per-variant recorded series (``level:metric:operations``).
LEVEL = "rollout_variant"
STAGE_RECORD = "rollout:canary_weight:ratio"
CUSTOM_RECORD = "rollout_gate:custom:value"
QUANTILES = (Fraction(95, 100), Fraction(99, 100))


@dataclass(frozen=True)
class BurnRate:
    """One multiwindow burn-rate alert of the SRE workbook (budget of a 30-day objective)."""

    long: int  # seconds
    short: int
    factor: float
    severity: str  # critical pages, warning is a ticket
    budget: str  # share of a 30-day budget spent when it fires, for the description


BURN_RATES = (
    BurnRate(3600, 300, 14.4, "critical", "2%"),
    BurnRate(21600, 1800, 6.0, "critical", "5%"),
    BurnRate(259200, 21600, 1.0, "warning", "10%"),
)


# --------------------------------------------------------------------------- PromQL text that combines like a number

_ADD, _MUL, _ATOM = 1, 2, 3


class Q:
    """A PromQL expression; ``+ - * /`` with numbers or other ``Q`` build PromQL of the same order of operations."""

    def __init__(self, text: str, precedence: int = _ATOM):
        self.text = text
        self.precedence = precedence

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Q({self.text!r})"

    def _binary(self, op: str, other: Operand, precedence: int, swapped: bool = False) -> Q:
        left, right = (other, self) if swapped else (self, other)
        return Q(f"{_render(left, False, precedence)} {op} {_render(right, True, precedence)}", precedence)

    def __add__(self, other: Operand) -> Q:
        return self._binary("+", other, _ADD)

    def __radd__(self, other: Operand) -> Q:
        return self._binary("+", other, _ADD, swapped=True)

    def __sub__(self, other: Operand) -> Q:
        return self._binary("-", other, _ADD)

    def __rsub__(self, other: Operand) -> Q:
        return self._binary("-", other, _ADD, swapped=True)

    def __mul__(self, other: Operand) -> Q:
        return self._binary("*", other, _MUL)

    def __rmul__(self, other: Operand) -> Q:
        return self._binary("*", other, _MUL, swapped=True)

    def __truediv__(self, other: Operand) -> Q:
        return self._binary("/", other, _MUL)

    def __rtruediv__(self, other: Operand) -> Q:
        return self._binary("/", other, _MUL, swapped=True)


def _render(value: Operand, right: bool, precedence: int) -> str:
    """An operand's text, in parentheses where PromQL would otherwise group it differently."""
    if isinstance(value, Q):
        text, inner = value.text, value.precedence
    else:
        text, inner = number(value), _ATOM
        if text.startswith("-"):
            inner = _ADD
    if inner < precedence or (right and inner == precedence):
        return f"({text})"
    return text


class F(float):
    """A float whose arithmetic is IEEE 754 as in Prometheus: x/0 is +-Inf or NaN, never an exception."""

    def __add__(self, other: float) -> F:
        return F(float(self) + float(other))

    def __radd__(self, other: float) -> F:
        return F(float(other) + float(self))

    def __sub__(self, other: float) -> F:
        return F(float(self) - float(other))

    def __rsub__(self, other: float) -> F:
        return F(float(other) - float(self))

    def __mul__(self, other: float) -> F:
        return F(float(self) * float(other))

    def __rmul__(self, other: float) -> F:
        return F(float(other) * float(self))

    def __truediv__(self, other: float) -> F:
        return F(_divide(float(self), float(other)))

    def __rtruediv__(self, other: float) -> F:
        return F(_divide(float(other), float(self)))


def _divide(a: float, b: float) -> float:
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


Operand = Union[Q, F, float, int]


def number(value: float | int | Fraction) -> str:
    """A PromQL number literal that parses to exactly this double."""
    as_float = float(value)
    if math.isnan(as_float) or math.isinf(as_float):
        raise ValueError(f"no PromQL literal for {as_float}")
    text = repr(as_float)
    return text[:-2] if text.endswith(".0") else text


def _f(x: Operand) -> Operand:
    return x if isinstance(x, (Q, F)) else F(x)


def sqrt(x: Operand) -> Operand:
    if isinstance(x, Q):
        return Q(f"sqrt({x})")
    return F(math.sqrt(x)) if x >= 0 else F(math.nan)


def clamp_min(x: Operand, low: float) -> Operand:
    if isinstance(x, Q):
        return Q(f"clamp_min({x}, {number(low)})")
    return F(x if math.isnan(x) else max(float(x), low))


def clamp_max(x: Operand, high: float) -> Operand:
    if isinstance(x, Q):
        return Q(f"clamp_max({x}, {number(high)})")
    return F(x if math.isnan(x) else min(float(x), high))


def positive(x: Operand) -> Operand:
    """1 where ``x > 0``, else 0 (PromQL ``x > bool 0``)."""
    if isinstance(x, Q):
        return Q(f"({x} > bool 0)")
    return F(1.0 if x > 0 else 0.0)


# --------------------------------------------------------------------------- the statistics


def wilson_lower(e: Operand, n: Operand, z: float = Z) -> Operand:
    """Lower bound of the continuity-corrected Wilson score interval of e/n (Newcombe 1998, method 4); 0 when e = 0."""
    if not isinstance(e, Q) and not isinstance(n, Q):
        return _lower_of(float(e), float(n), z)
    return _wilson_lower(e, n, z)


@lru_cache(maxsize=65536)
def _lower_of(e: float, n: float, z: float) -> Operand:
    return _wilson_lower(F(e), F(n), z)


def _wilson_lower(e: Operand, n: Operand, z: float) -> Operand:
    e, n = _f(e), _f(n)
    z2 = z * z
    bound = (2 * e + (z2 - 1) - z * sqrt((z2 - 2) - 1 / n + 4 * e * (n - e + 1) / n)) / (2 * (n + z2))
    return clamp_min(bound, 0.0) * positive(e)


def wilson_upper(e: Operand, n: Operand, z: float = Z) -> Operand:
    """Upper bound of the same interval; at most 1."""
    e, n = _f(e), _f(n)
    z2 = z * z
    bound = (2 * e + (z2 + 1) + z * sqrt((z2 + 2) - 1 / n + 4 * e * (n - e - 1) / n)) / (2 * (n + z2))
    return clamp_max(bound, 1.0)


def quantile_level(q: float, n: Operand, z: float = Z) -> Operand:
    """The quantile level whose sample quantile is a lower confidence bound of the q-quantile over n requests."""
    n = _f(n)
    spread = z * math.sqrt(q * (1 - q))
    return q - spread / sqrt(n) - 0.5 / n


def score_test_breach(e: float, n: float, threshold: float, z: float = Z) -> bool:
    """The one-sided continuity-corrected score test the Wilson bound inverts: is e/n above ``threshold``?"""
    if n <= 0 or e <= 0:
        return False
    return e - 0.5 > n * threshold + z * math.sqrt(n * threshold * (1 - threshold))


# --------------------------------------------------------------------------- names and labels


def window(seconds: int) -> str:
    """A window as Prometheus and the record names spell it: 300 -> ``5m``."""
    return format_duration(seconds)


def requests_record(seconds: int) -> str:
    return f"{LEVEL}:requests:rate{window(seconds)}"


def errors_record(seconds: int) -> str:
    return f"{LEVEL}:errors:rate{window(seconds)}"


def ratio_record(seconds: int) -> str:
    return f"{LEVEL}:errors_per_request:ratio_rate{window(seconds)}"


def ratio_lower_record(seconds: int) -> str:
    return f"{LEVEL}:errors_per_request:wilson_lower{window(seconds)}"


def ratio_upper_record(seconds: int) -> str:
    return f"{LEVEL}:errors_per_request:wilson_upper{window(seconds)}"


def quantile_name(q: Fraction) -> str:
    """0.99 -> ``p99``; 0.999 -> ``p99_9``."""
    text = format(float(q * 100), "g").replace(".", "_")
    return f"p{text}"


def latency_record(q: Fraction, seconds: int) -> str:
    return f"{LEVEL}:latency_seconds:{quantile_name(q)}_rate{window(seconds)}"


def latency_lower_record(q: Fraction, seconds: int) -> str:
    return f"{LEVEL}:latency_seconds:{quantile_name(q)}_lower{window(seconds)}"


def identity(plan: Plan) -> dict[str, str]:
    """The labels that tell one rollout's series and alerts from every other's."""
    labels = {"rollout": plan.name, "namespace": plan.namespace}
    if plan.environment:
        labels["environment"] = plan.environment
    return labels


def variant_labels(plan: Plan, role: str) -> dict[str, str]:
    return {**identity(plan), "variant": role}


def identity_matchers(plan: Plan) -> list[tuple[str, str, str]]:
    """Matchers of :func:`identity`; ``environment=""`` keeps a plain rollout apart from its environments."""
    return [("rollout", "=", plan.name), ("namespace", "=", plan.namespace),
            ("environment", "=", plan.environment or "")]


def selector(plan: Plan, name: str, role: str | None = None, extra: list[tuple[str, str, str]] | None = None) -> Q:
    matchers = identity_matchers(plan) + ([("variant", "=", role)] if role else []) + (extra or [])
    return Q(name + metrics.selector(matchers))


def series(plan: Plan, role: str, name: str) -> Q:
    """One variant's recorded series."""
    return selector(plan, name, role)


# --------------------------------------------------------------------------- windows


def recorded_windows(plan: Plan) -> tuple[int, ...]:
    """Windows recorded for both variants: the dashboard's (metrics.window) and the stage's gates'."""
    return tuple(sorted({plan.metrics.window} | {g.window for g in plan.current.gates}))


def burn_rates(plan: Plan) -> tuple[BurnRate, ...]:
    """The burn-rate alerts of the stage in effect: a stage serving everyone, with an error-rate objective."""
    gate = error_gate(plan.current)
    if gate is None or not serves_everyone(plan.current):
        return ()
    return tuple(b for b in BURN_RATES if b.factor * float(gate.threshold) < 1)


def burn_windows(plan: Plan) -> tuple[int, ...]:
    return tuple(sorted({w for b in burn_rates(plan) for w in (b.long, b.short)}))


def serves_everyone(stage: StagePlan) -> bool:
    return stage.weight == 1 and stage.mirror == 0


def error_gate(stage: StagePlan) -> GatePlan | None:
    return next((g for g in stage.gates if g.kind == "error_rate"), None)


def judged_windows(stage: StagePlan) -> tuple[int, ...]:
    """Windows over which the stage's gates need ``min_requests`` canary requests."""
    return tuple(sorted({g.window for g in stage.gates}))


# --------------------------------------------------------------------------- expressions of recording rules


def counts(plan: Plan, role: str, seconds: int) -> tuple[Q, Q]:
    """(errors, requests) of one variant over a window, from the recorded rates."""
    e = series(plan, role, errors_record(seconds)) * seconds
    n = series(plan, role, requests_record(seconds)) * seconds
    return e, n


def ratio_expr(plan: Plan, role: str, seconds: int) -> Q:
    return series(plan, role, errors_record(seconds)) / series(plan, role, requests_record(seconds))


def lower_expr(plan: Plan, role: str, seconds: int) -> Q:
    e, n = counts(plan, role, seconds)
    return wilson_lower(e, n)  # type: ignore[return-value]


def upper_expr(plan: Plan, role: str, seconds: int) -> Q:
    e, n = counts(plan, role, seconds)
    return wilson_upper(e, n)  # type: ignore[return-value]


_QUOTED_QUANTILE = re.compile(r"""(["'`])[^"'`]*\$quantile[^"'`]*\1""")


def quantile_is_scalar(template: str) -> bool:
    """``$quantile`` is used as a number (``histogram_quantile($quantile, ...)``), not inside a label value."""
    return not _QUOTED_QUANTILE.search(template)


def latency_expr(template: str, q: Fraction, seconds: int) -> str:
    return metrics.substitute(template, window=window(seconds), quantile=number(q))


def latency_lower_expr(plan: Plan, template: str, q: Fraction, seconds: int) -> str:
    """The latency template at the lower-confidence quantile level (a scalar of the recorded request count)."""
    if not quantile_is_scalar(template):
        return latency_expr(template, q, seconds)
    n = series(plan, "canary", requests_record(seconds)) * seconds
    level = quantile_level(float(q), n)
    return metrics.substitute(template, window=window(seconds), quantile=f"scalar({level})")


# --------------------------------------------------------------------------- expressions of alerts


def starved_expr(plan: Plan, seconds: int) -> str:
    """The canary's request count over a window, where it is below ``min_requests`` (0 where it has no series)."""
    rate = series(plan, "canary", requests_record(seconds))
    return f"{rate * seconds} < {plan.metrics.min_requests} or absent({rate}) - 1"


def enough_requests(plan: Plan, seconds: int) -> str:
    """The canary's request count over a window, where it is at least ``min_requests``."""
    rate = series(plan, "canary", requests_record(seconds))
    return f"{rate * seconds} >= {plan.metrics.min_requests}"


def comparison(gate: GatePlan) -> str:
    return ">" if gate.bound == "max" else "<"


def gate_value(plan: Plan, gate: GatePlan) -> Q:
    """What a gate compares with its threshold (before the comparison)."""
    if gate.kind == "error_rate":
        return series(plan, "canary", ratio_lower_record(gate.window))
    if gate.kind == "latency":
        assert gate.quantile is not None
        return series(plan, "canary", latency_lower_record(gate.quantile, gate.window))
    if gate.kind == "ratio":
        return series(plan, "canary", ratio_lower_record(gate.window))
    return selector(plan, CUSTOM_RECORD, "canary", [("gate", "=", gate.name)])


def gate_expr(plan: Plan, gate: GatePlan) -> str:
    """The alert condition of a gate: the judged value past the threshold, with enough canary requests."""
    value = gate_value(plan, gate)
    guard = enough_requests(plan, gate.window)
    if gate.kind == "ratio":
        stable = series(plan, "stable", ratio_upper_record(gate.window))
        condition = f"{value} > ignoring(variant) group_left {number(gate.threshold)} * {stable}"
        return f"({condition}) and {guard}"
    condition = f"{value} {comparison(gate)} {number(gate.threshold)}"
    if gate.kind == "custom":
        return f"({condition}) and on(rollout, namespace, environment, variant) ({guard})"
    return f"({condition}) and {guard}"


def burn_expr(plan: Plan, burn: BurnRate, threshold: Fraction) -> str:
    """The SRE workbook's multiwindow condition on the raw error ratios, judged with metrics.min_requests
    in the short window and only when the long window shows, at the gates' confidence, an error rate
    above the objective's: a few unlucky errors of a quiet service are no budget burning."""
    limit = number(burn.factor * float(threshold))
    long = series(plan, "canary", ratio_record(burn.long))
    short = series(plan, "canary", ratio_record(burn.short))
    evidence = series(plan, "canary", ratio_lower_record(burn.long))
    return (f"({long} > {limit} and {short} > {limit} and {evidence} > {number(threshold)}) "
            f"and {enough_requests(plan, burn.short)}")


def guard_expr(plan: Plan) -> str:
    return f"{series(plan, 'canary', requests_record(GUARD_WINDOW))} > 0"


def firing_alerts(plan: Plan) -> str:
    """The rollout's firing alerts, for dashboards."""
    return "ALERTS" + metrics.selector([("alertstate", "=", "firing")] + identity_matchers(plan))


# --------------------------------------------------------------------------- the rules of a rollout


@dataclass(frozen=True)
class Record:
    name: str
    expr: str
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule; ``kind`` says which of the conditions above it is."""

    name: str
    kind: str  # gate | starved | burn | guard
    expr: str
    for_: int  # seconds
    labels: tuple[tuple[str, str], ...]
    gate: GatePlan | None = None
    window: int | None = None  # starved: the window the count is taken over
    burn: BurnRate | None = None

    @property
    def action(self) -> str:
        return dict(self.labels)["action"]

    @property
    def severity(self) -> str:
        return dict(self.labels)["severity"]


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\-]", name) if part)


#: Sources that tell the variants apart by the route a request took (the canary Ingress, the
#: HAProxy backend), not by the version that served it.
# Sources that tell the variants apart by the Kubernetes route they took: after a blue-green
# switch the active Service (the stable route) serves the new colour.  HAProxy addresses each
# colour's servers itself, so its backends keep telling the colours apart.
ROUTED_SOURCES = ("ingress-nginx",)


def variant_queries(plan: Plan, role: str) -> metrics.VariantQueries:
    """The queries measuring a variant at the stage in effect.

    After a blue-green switch the new colour serves everyone through the stable Ingress route, so
    the ingress-nginx source counts the new version under the stable route.
    """
    switched = plan.blue_green is not None and plan.current.kind == "switch" and plan.metrics.source in ROUTED_SOURCES
    if switched:
        role = "stable" if role == "canary" else "canary"
    return plan.metrics.queries(role)


def canary_windows(plan: Plan) -> tuple[int, ...]:
    extra = set(burn_windows(plan))
    if plan.is_rollback:
        extra.add(GUARD_WINDOW)
    return tuple(sorted(set(recorded_windows(plan)) | extra))


def windows_of(plan: Plan, role: str) -> tuple[int, ...]:
    return canary_windows(plan) if role == "canary" else recorded_windows(plan)


_SOURCELESS = re.compile(r"\b(vector|absent|absent_over_time|time)\s*\(")


def sourceless(gate: GatePlan) -> bool:
    """A custom gate whose query yields a value with no input series at all (``or vector(0)``, ``absent()``).

    Its recorded value always exists, so a test cannot feed it: the generated tests leave it out.
    """
    if gate.kind != "custom" or gate.query is None:
        return False
    if _SOURCELESS.search(gate.query):
        return True
    sample = metrics.substitute(gate.query, metrics.VariantLabels("canary", "v1", "backend", 80), "5m", "0.99")
    try:
        return isinstance(promql_parser.parse(sample), promql_parser.NumberLiteral)
    except Exception:  # an unparsable query is a lint error of its own
        return False


def custom_query(plan: Plan, gate: GatePlan) -> str:
    assert gate.query is not None
    variant = plan.canary
    labels = metrics.VariantLabels(variant.role, variant.version, variant.backend, variant.port)
    return metrics.substitute(gate.query, labels, window=window(gate.window))


def records(plan: Plan) -> list[Record]:
    """Every recording rule of the stage in effect, in evaluation order (later rules read earlier ones)."""
    out: list[Record] = []
    roles = ("stable", "canary")
    for role in roles:
        labels = tuple(variant_labels(plan, role).items())
        queries = variant_queries(plan, role)
        for seconds in windows_of(plan, role):
            out.append(Record(requests_record(seconds), metrics.substitute(queries.requests, window=window(seconds)), labels))
            out.append(Record(errors_record(seconds), metrics.substitute(queries.errors, window=window(seconds)), labels))
    for role in roles:
        labels = tuple(variant_labels(plan, role).items())
        for seconds in windows_of(plan, role):
            out.append(Record(ratio_record(seconds), str(ratio_expr(plan, role, seconds)), labels))
    canary_labels = tuple(variant_labels(plan, "canary").items())
    stable_labels = tuple(variant_labels(plan, "stable").items())
    for seconds in sorted({g.window for g in plan.current.gates if g.kind in ("error_rate", "ratio")}
                          | {b.long for b in burn_rates(plan)}):
        out.append(Record(ratio_lower_record(seconds), str(lower_expr(plan, "canary", seconds)), canary_labels))
    for seconds in sorted({g.window for g in plan.current.gates if g.kind == "ratio"}):
        out.append(Record(ratio_upper_record(seconds), str(upper_expr(plan, "stable", seconds)), stable_labels))
    template = variant_queries(plan, "canary").latency
    if template is not None:
        for role in roles:
            labels = tuple(variant_labels(plan, role).items())
            latency = variant_queries(plan, role).latency
            assert latency is not None
            for seconds in recorded_windows(plan):
                for q in QUANTILES:
                    out.append(Record(latency_record(q, seconds), latency_expr(latency, q, seconds), labels))
        for q, seconds in sorted({(g.quantile, g.window) for g in plan.current.gates if g.kind == "latency"}):
            out.append(Record(latency_lower_record(q, seconds), latency_lower_expr(plan, template, q, seconds), canary_labels))
    for gate in plan.current.gates:
        if gate.kind == "custom":
            out.append(Record(CUSTOM_RECORD, custom_query(plan, gate), canary_labels + (("gate", gate.name),)))
    out.append(stage_record(plan))
    return out


def stage_record(plan: Plan) -> Record:
    """The stage in effect as a series: value = the canary's share of live traffic."""
    labels = {**identity(plan), "stage": plan.current.name, "stage_kind": plan.current.kind,
              "dashboard_uid": plan.names.dashboard_uid}
    return Record(STAGE_RECORD, f"vector({number(plan.current.weight)})", tuple(labels.items()))


def _alert_labels(plan: Plan, gate: str, severity: str, action: str, **extra: str) -> tuple[tuple[str, str], ...]:
    labels = {**identity(plan), "stage": plan.current.name, "gate": gate, "severity": severity, "action": action, **extra}
    return tuple(labels.items())


def alert_rules(plan: Plan) -> list[AlertRule]:
    """Every alerting rule of the stage in effect."""
    prefix = plan.names.alert_prefix
    stage = plan.current
    if plan.is_rollback:
        return [AlertRule(plan.names.rollback_guard_alert, "guard", guard_expr(plan), plan.rollback_within,
                          _alert_labels(plan, "rollback_guard", "critical", "rollback"))]
    out = []
    for gate in stage.gates:
        out.append(AlertRule(f"{prefix}{camel(gate.name)}Breached", "gate", gate_expr(plan, gate), gate.for_,
                             _alert_labels(plan, gate.name, gate.severity, gate.action), gate=gate))
    for seconds in judged_windows(stage):
        out.append(AlertRule(f"{prefix}CanaryStarved", "starved", starved_expr(plan, seconds), seconds,
                             _alert_labels(plan, "min_requests", "info", "hold", window=window(seconds)), window=seconds))
    objective = error_gate(stage)
    for burn in burn_rates(plan):
        assert objective is not None
        page = burn.severity == "critical"
        out.append(AlertRule(f"{prefix}ErrorBudgetBurn", "burn", burn_expr(plan, burn, objective.threshold), 0,
                             _alert_labels(plan, "error_budget", burn.severity, stage.action if page else "notify",
                                           window=window(burn.long)), burn=burn))
    return out


# --------------------------------------------------------------------------- the same conditions without recording rules


def recorded_definitions(plan: Plan) -> dict[str, str]:
    """Each recorded series, as the alert expressions select it, -> the expression recording it (itself inlined).

    Recording rules read earlier rules' series, so each definition is inlined with those before it.
    """
    defined: dict[str, str] = {}
    for record in records(plan):
        labels = dict(record.labels)
        if "variant" not in labels:
            continue  # the stage record: no condition reads it
        extra = [("gate", "=", labels["gate"])] if "gate" in labels else None
        defined[str(selector(plan, record.name, labels["variant"], extra))] = _inline(record.expr, defined)
    return defined


def _inline(text: str, defined: dict[str, str]) -> str:
    if not defined:
        return text
    names = "|".join(re.escape(key) for key in sorted(defined, key=len, reverse=True))
    return re.sub(rf"(?<![\w:])(?:{names})", lambda m: f"({defined[m.group(0)]})", text)


def inline(plan: Plan, expr: str) -> str:
    """``expr`` evaluable by a Prometheus that has only the exporters' metrics: every recorded series of
    the plan replaced by the expression that records it.

    The values are those the recording rules would store at the same instant; only the labels the
    rules add (``rollout``, ``namespace``, ``variant``) are missing, on both sides of every operator.
    """
    return _inline(expr, recorded_definitions(plan))
