"""Names, labels and windows every rule of a rollout follows.

Recorded series are named ``level:metric:operations`` (Prometheus' convention):
``rollout_variant:requests:rate5m`` and so on, labelled with the rollout's
identity (``rollout``, ``namespace``, ``environment``) and the ``variant``.
The Prometheus target records them, the Grafana target draws them, ``rollout
gate`` asks for them and the simulator evaluates them: all through the names
and selectors here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from compiler.gates.algebra import Matcher, Selector, matchers_text, window
from compiler.gates.presets import VariantMetrics
from compiler.ir.plan import GatePlan, Plan, StagePlan

#: Rule groups are evaluated this often (seconds) unless the spec says otherwise; alert timings assume it.
EVALUATION_INTERVAL = 15
#: A rate needs this many scrapes in its window.
SCRAPES_PER_WINDOW = 4


def min_window(plan: Plan) -> int:
    """The shortest window a rate can be judged over: four scrapes."""
    return SCRAPES_PER_WINDOW * plan.metrics.scrape_interval


def guard_window(plan: Plan) -> int:
    """The window of the post-rollback traffic check: traffic that stopped when the rollback took effect has left
    it, scraped and evaluated, before ``rollback.within`` is over, so the guard fires only on traffic after it."""
    m = plan.metrics
    return max(min_window(plan), plan.rollback_within - m.scrape_interval - m.evaluation_interval)


def min_within(plan: Plan) -> int:
    """The shortest ``rollback.within`` the guard can observe."""
    return min_window(plan) + plan.metrics.scrape_interval + plan.metrics.evaluation_interval
#: Level of the per-variant recorded series (``level:metric:operations``).
LEVEL = "rollout_variant"
STAGE_RECORD = "rollout:canary_weight:ratio"
CUSTOM_RECORD = "rollout_gate:custom:value"
QUANTILES = (Fraction(95, 100), Fraction(99, 100))
#: The label that routes a rollout's alerts to its receivers (the digest of its receivers and routes).
ROUTE_LABEL = "rollout_route"
ROLES = ("stable", "canary")
#: What rule files compute: the recorded series (``level:metric:operations`` of these levels) and the alerts.
COMPUTED_PREFIXES = (f"{LEVEL}:", "rollout:", "rollout_gate:")
COMPUTED_SERIES = ("ALERTS", "ALERTS_FOR_STATE")


def computed(metric: str) -> bool:
    """A series a rule file computes rather than one scraped ("": a selector without a plain name may be)."""
    return not metric or metric.startswith(COMPUTED_PREFIXES) or metric in COMPUTED_SERIES


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


# --------------------------------------------------------------------------- names


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


@lru_cache(maxsize=256)
def quantile_name(q: Fraction) -> str:
    """0.99 -> ``p99``; 0.999 -> ``p99_9``."""
    text = format(float(q * 100), "g").replace(".", "_")
    return f"p{text}"


def latency_record(q: Fraction, seconds: int) -> str:
    return f"{LEVEL}:latency_seconds:{quantile_name(q)}_rate{window(seconds)}"


def latency_lower_record(q: Fraction, seconds: int) -> str:
    return f"{LEVEL}:latency_seconds:{quantile_name(q)}_lower{window(seconds)}"


# --------------------------------------------------------------------------- labels


def identity(plan: Plan) -> dict[str, str]:
    """The labels that tell one rollout's series and alerts from every other's."""
    labels = {"rollout": plan.name, "namespace": plan.namespace}
    if plan.environment:
        labels["environment"] = plan.environment
    return labels


def variant_labels(plan: Plan, role: str) -> dict[str, str]:
    return {**identity(plan), "variant": role}


def identity_matchers(plan: Plan) -> list[Matcher]:
    """Matchers of :func:`identity`; ``environment=""`` keeps a plain rollout apart from its environments."""
    return [("rollout", "=", plan.name), ("namespace", "=", plan.namespace),
            ("environment", "=", plan.environment or "")]


def selector(plan: Plan, name: str, role: str | None = None, extra: list[Matcher] | None = None) -> Selector:
    matchers = identity_matchers(plan) + ([("variant", "=", role)] if role else []) + (extra or [])
    return Selector(name, tuple(matchers))


def series(plan: Plan, role: str, name: str) -> Selector:
    """One variant's recorded series."""
    return selector(plan, name, role)


def firing_alerts(plan: Plan) -> str:
    """The rollout's firing alerts, for dashboards."""
    return "ALERTS" + matchers_text([("alertstate", "=", "firing")] + identity_matchers(plan))


# --------------------------------------------------------------------------- windows


def serves_everyone(stage: StagePlan) -> bool:
    return stage.weight == 1 and stage.mirror == 0


def error_gate(stage: StagePlan) -> GatePlan | None:
    return next((g for g in stage.gates if g.kind == "error_rate"), None)


def judged_windows(stage: StagePlan) -> tuple[int, ...]:
    """Windows over which the stage's gates need ``min_requests`` canary requests."""
    return tuple(sorted({g.window for g in stage.gates}))


def recorded_windows(plan: Plan) -> tuple[int, ...]:
    """Windows recorded for both variants: the dashboard's (metrics.window) and the stage's gates'."""
    return tuple(sorted({plan.metrics.window} | {g.window for g in plan.current.gates}))


def burn_rates(plan: Plan) -> tuple[BurnRate, ...]:
    """The burn-rate alerts of the stage in effect: it serves everyone and has an error-rate objective."""
    return stage_burn_rates(plan.current)


def stage_burn_rates(stage: StagePlan) -> tuple[BurnRate, ...]:
    """:func:`burn_rates` of a plan with ``stage`` in effect."""
    gate = error_gate(stage)
    if gate is None or not serves_everyone(stage):
        return ()
    return tuple(b for b in BURN_RATES if b.factor * float(gate.threshold) < 1)


def burn_windows(plan: Plan) -> tuple[int, ...]:
    return tuple(sorted({w for b in burn_rates(plan) for w in (b.long, b.short)}))


def canary_windows(plan: Plan) -> tuple[int, ...]:
    extra = set(burn_windows(plan))
    if plan.is_rollback:
        extra.add(guard_window(plan))
    return tuple(sorted(set(recorded_windows(plan)) | extra))


def windows_of(plan: Plan, role: str) -> tuple[int, ...]:
    return canary_windows(plan) if role == "canary" else recorded_windows(plan)


# --------------------------------------------------------------------------- what is measured

def variant_metrics(plan: Plan, role: str) -> VariantMetrics:
    """The queries measuring a variant at the stage in effect: after a blue-green switch, those of
    :attr:`MetricsPlan.after_switch` where the planner gave them (the active Service then serves the new colour)."""
    if plan.blue_green is not None and plan.current.kind == "switch" and plan.metrics.after_switch is not None:
        stable, canary = plan.metrics.after_switch
        return stable if role == "stable" else canary
    return plan.metrics.queries(role)
