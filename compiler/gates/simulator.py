"""Traffic made for promtool, and what the generated rules will do with it.

Three parts, used by the promtool unit tests the Prometheus target writes and by
the detection benchmark:

- :class:`Flow`: one variant's requests, errors and slow requests per scrape,
  built from :class:`Phase` s, exactly (deterministic) or as Poisson traffic
  from a seeded generator.
- :func:`layout`: the exporter series a metrics source reads, found by parsing
  its PromQL templates (which metric, which labels make a request an error,
  which histogram and unit); sources whose templates cannot be read that way
  (``custom``) get their recorded series fed directly.
- :func:`simulate`: the rules of :mod:`compiler.promql` evaluated in Python the
  way Prometheus 2.x evaluates them (range selection, ``rate`` extrapolation,
  ``sum`` order, ``histogram_quantile``, the ``for`` state machine), so a test
  can say when an alert fires, when it clears and with which ``$value``.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from fractions import Fraction
from collections.abc import Iterable, Sequence

import promql_parser

from compiler.gates import presets as metrics
from compiler.gates import promql
from compiler.ir.plan import Plan
from compiler.gates.promql import F

STEP = 15  # scrape interval of the input series, seconds


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class Phase:
    seconds: int
    rps: float  # requests per second
    error_ratio: float = 0.0
    slow_ratio: float = 0.0  # share of requests slower than every latency gate


@dataclass(frozen=True)
class Flow:
    """Increments per scrape; index 0 is the first scrape (always 0), index i is at ``i * STEP`` seconds."""

    requests: tuple[int, ...]
    errors: tuple[int, ...]
    slow: tuple[int, ...]

    @property
    def steps(self) -> int:
        return len(self.requests)


def flow(phases: Sequence[Phase], rng: random.Random | None = None) -> Flow:
    """Traffic of consecutive phases: exact expected counts, or Poisson/binomial draws from ``rng``."""
    requests, errors, slow = [0], [0], [0]
    for phase in phases:
        steps = phase.seconds // STEP
        if rng is None:
            n = _spread(_exact(phase.rps) * STEP, steps)
            e = _thin(n, _exact(phase.error_ratio))
            s = _thin(n, _exact(phase.slow_ratio))
        else:
            n = [poisson(rng, phase.rps * STEP) for _ in range(steps)]
            e = [binomial(rng, k, phase.error_ratio) for k in n]
            s = [binomial(rng, k, phase.slow_ratio) for k in n]
        requests.extend(n)
        errors.extend(e)
        slow.extend(s)
    return Flow(tuple(requests), tuple(errors), tuple(slow))


def _spread(per_step: Fraction, steps: int) -> list[int]:
    """``steps`` whole counts adding up to ``per_step`` each on average (floor of the running total)."""
    num, den = per_step.numerator, per_step.denominator
    return [(num * (i + 1)) // den - (num * i) // den for i in range(steps)]


def _thin(counts: list[int], share: Fraction) -> list[int]:
    """Whole counts of ``share`` of each count, the running total kept exact."""
    num, den = share.numerator, share.denominator
    out, total, taken = [], 0, 0
    for count in counts:
        total += count
        now = (total * num) // den
        out.append(now - taken)
        taken = now
    return out


def _exact(value: float) -> Fraction:
    return Fraction(value).limit_denominator(10**6)


NORMAL_ABOVE = 1000.0


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: inversion in chunks of mean <= 20, the normal approximation above 1000."""
    if mean > NORMAL_ABOVE:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    total = 0
    while mean > 0:
        chunk = min(mean, 20.0)
        mean -= chunk
        limit, k, p = math.exp(-chunk), 0, rng.random()
        while p > limit:
            p *= rng.random()
            k += 1
        total += k
    return total


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw by geometric skips between successes (cost proportional to n*p)."""
    if p <= 0 or n <= 0:
        return 0
    if p >= 1:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1 - p)
    log_q = math.log1p(-p)
    count, position = 0, 0
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return count
        count += 1


def cumulative(increments: Sequence[int]) -> list[int]:
    out, total = [], 0
    for value in increments:
        total += value
        out.append(total)
    return out


# --------------------------------------------------------------------------- exporter series of a metrics source


class Unreadable(ValueError):
    """A template this module cannot turn into input series; its recorded series are fed instead."""


Labels = tuple[tuple[str, str], ...]
_POSITIVE = ("500", "503", "5xx", "error", "true", "1", "failed", "x")
_NEGATIVE = ("200", "2xx", "ok", "success", "false", "0", "")


@dataclass(frozen=True)
class CounterLayout:
    """Where one variant's requests and errors are counted."""

    kind: str  # "shared": one metric, an error label; "separate": a total counter and an error counter
    ok: tuple[str, Labels] | None  # shared: requests that are not errors
    errors: tuple[str, Labels]
    total: tuple[str, Labels] | None  # separate: every request


@dataclass(frozen=True)
class HistogramLayout:
    name: str
    labels: Labels
    unit: float  # bucket bounds are seconds times this (istio: 1000)


@dataclass(frozen=True)
class Layout:
    counters: CounterLayout | None  # None: feed the recorded rates
    histogram: HistogramLayout | None  # None: feed the recorded quantiles (when there is a latency template)


def _walk(node: object) -> Iterable[object]:
    yield node
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            yield from _walk(child)
    args = getattr(node, "args", None)
    if isinstance(args, list):
        for arg in args:
            yield from _walk(arg)


def _selectors(template: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    text = metrics.substitute(template, window="5m", quantile="0.5")
    tree = promql_parser.parse(text)
    found = []
    for node in _walk(tree):
        if type(node).__name__ == "VectorSelector":
            matchers = [(m.name, _op(m.op), m.value) for m in node.matchers.matchers]
            name = node.name or next((v for n, o, v in matchers if n == "__name__" and o == "="), None)
            if name is None:
                raise Unreadable("a selector without a metric name")
            found.append((name, [m for m in matchers if m[0] != "__name__"]))
    return found


def _op(op: object) -> str:
    return {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}[str(op).split(".")[-1].split("(")[0]]


def _matches(op: str, pattern: str, value: str) -> bool:
    if op == "=":
        return value == pattern
    if op == "!=":
        return value != pattern
    hit = re.fullmatch(pattern, value) is not None
    return hit if op == "=~" else not hit


def _value(required: list[tuple[str, str]], refused: list[tuple[str, str]] | None = None) -> str:
    """A label value matching every (op, pattern) of ``required`` and, if given, failing one of ``refused``."""
    candidates = [p for op, p in required + (refused or []) if op == "="] + list(_POSITIVE + _NEGATIVE)
    for value in candidates:
        if all(_matches(op, p, value) for op, p in required):
            if refused is None or not all(_matches(op, p, value) for op, p in refused):
                return value
    raise Unreadable("no label value satisfies the matchers")


def _labels(matchers: list[tuple[str, str, str]], refused: list[tuple[str, str, str]] | None = None) -> Labels:
    names = sorted({m[0] for m in matchers} | {m[0] for m in refused or []})
    out = []
    for name in names:
        required = [(op, p) for n, op, p in matchers if n == name]
        against = [(op, p) for n, op, p in refused or [] if n == name]
        value = _value(required, against if against else None)
        if value:
            out.append((name, value))
    return tuple(out)


def counter_layout(queries: metrics.VariantQueries) -> CounterLayout:
    requests, errors = _selectors(queries.requests), _selectors(queries.errors)
    if len(requests) != 1 or len(errors) != 1:
        raise Unreadable("requests and errors must each read one metric")
    (r_name, r_matchers), (e_name, e_matchers) = requests[0], errors[0]
    if r_name == e_name:
        extra = [m for m in e_matchers if m not in r_matchers]
        if not extra or any(m not in e_matchers for m in r_matchers):
            raise Unreadable("the errors selector must narrow the requests selector")
        ok = _labels(r_matchers, extra)
        return CounterLayout("shared", (r_name, ok), (e_name, _labels(e_matchers)), None)
    return CounterLayout("separate", None, (e_name, _labels(e_matchers)), (r_name, _labels(r_matchers)))


def histogram_layout(template: str) -> HistogramLayout:
    text = metrics.substitute(template, window="5m", quantile="0.5")
    tree = promql_parser.parse(text)
    unit = 1.0
    if type(tree).__name__ == "BinaryExpr" and type(tree.rhs).__name__ == "NumberLiteral":
        op = str(tree.op)
        if op == "/":
            unit = float(tree.rhs.val)
        elif op == "*":
            unit = 1 / float(tree.rhs.val)
        else:
            raise Unreadable("only a scale (* or /) may follow histogram_quantile")
        tree = tree.lhs
    while type(tree).__name__ == "ParenExpr":
        tree = tree.expr
    if type(tree).__name__ != "Call" or tree.func.name != "histogram_quantile":
        raise Unreadable("the latency template is not a histogram_quantile")
    selectors = _selectors(template)
    if len(selectors) != 1 or not selectors[0][0].endswith("_bucket"):
        raise Unreadable("the latency template must read one _bucket metric")
    name, matchers = selectors[0]
    if any(m[0] == "le" for m in matchers):
        raise Unreadable("the latency template must not match `le`")
    return HistogramLayout(name, _labels(matchers), unit)


@lru_cache(maxsize=256)
def layout(queries: metrics.VariantQueries) -> Layout:
    try:
        counters: CounterLayout | None = counter_layout(queries)
    except (Unreadable, ValueError):
        counters = None
    histogram = None
    if queries.latency is not None:
        try:
            histogram = histogram_layout(queries.latency)
        except (Unreadable, ValueError):
            histogram = None
    return Layout(counters, histogram)


# --------------------------------------------------------------------------- inputs of a promtool test


@dataclass
class Inputs:
    """What one test group feeds Prometheus: per variant a flow (None: no series at all), per custom gate values."""

    steps: int
    flows: dict[str, Flow | None]
    custom: dict[str, list[float]] = field(default_factory=dict)  # gate name -> value per scrape
    buckets: tuple[float, float] = (0.1, 1.0)  # seconds: fast requests <= [0], slow ones <= [1]


def series_text(name: str, labels: Labels) -> str:
    return name + "{" + ",".join(f"{k}={metrics.promql_string(v)}" for k, v in labels) + "}"


def expanding(values: Sequence[float]) -> str:
    """promtool's expanding notation: runs of a constant step as ``a+bxn``."""
    parts, i = [], 0
    while i < len(values):
        j = i
        if i + 1 < len(values):
            step = values[i + 1] - values[i]
            exact = all(float(v).is_integer() for v in values[i:i + 2]) or step == 0
            while exact and j + 1 < len(values) and values[j + 1] - values[j] == step:
                j += 1
        if j > i:
            step = values[i + 1] - values[i]
            sign = "+" if step >= 0 else "-"
            parts.append(f"{_num(values[i])}{sign}{_num(abs(step))}x{j - i}")
            i = j + 1
        else:
            parts.append(_num(values[i]))
            i += 1
    return " ".join(parts)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def input_series(plan: Plan, inputs: Inputs) -> list[dict[str, str]]:
    """promtool ``input_series`` for one test group (exporter series where the source allows it)."""
    out: list[dict[str, str]] = []
    recorded = Recorded(plan, inputs)
    for role in ("stable", "canary"):
        f = inputs.flows.get(role)
        if f is None:
            continue
        shape = layout(promql.variant_queries(plan, role))
        if shape.counters is not None:
            out.extend(_counter_series(shape.counters, f))
        else:
            out.extend(_recorded_rates(plan, role, recorded))
        if promql.variant_queries(plan, role).latency is not None:
            if shape.histogram is not None:
                out.extend(_bucket_series(shape.histogram, f, inputs.buckets))
            else:
                out.extend(_recorded_latency(plan, role, recorded))
    for gate, values in sorted(inputs.custom.items()):
        labels = tuple(sorted({**promql.variant_labels(plan, "canary"), "gate": gate}.items()))
        out.append({"series": series_text(promql.CUSTOM_RECORD, labels), "values": expanding(values)})
    return out


def _counter_series(shape: CounterLayout, f: Flow) -> list[dict[str, str]]:
    errors = cumulative(f.errors)
    if shape.kind == "shared":
        assert shape.ok is not None
        ok = cumulative([n - e for n, e in zip(f.requests, f.errors)])
        pairs = [(shape.ok, ok), (shape.errors, errors)]
    else:
        assert shape.total is not None
        pairs = [(shape.total, cumulative(f.requests)), (shape.errors, errors)]
    return [{"series": series_text(name, labels), "values": expanding(values)} for (name, labels), values in pairs]


def bucket_bounds(buckets: tuple[float, float], unit: float) -> list[tuple[str, float]]:
    """(``le`` label, bound) of the three buckets, in the histogram's unit."""
    fast, slow = (b * unit for b in buckets)
    return [(promql.number(fast), fast), (promql.number(slow), slow), ("+Inf", math.inf)]


def _bucket_series(shape: HistogramLayout, f: Flow, buckets: tuple[float, float]) -> list[dict[str, str]]:
    fast = cumulative([n - s for n, s in zip(f.requests, f.slow)])
    total = cumulative(f.requests)
    out = []
    for (le, _), values in zip(bucket_bounds(buckets, shape.unit), (fast, total, total)):
        labels = tuple(sorted(shape.labels + (("le", le),)))
        out.append({"series": series_text(shape.name, labels), "values": expanding(values)})
    return out


def _gauge(name: str, labels: dict[str, str], values: Sequence[float | None]) -> dict[str, str]:
    text = " ".join("_" if v is None or math.isnan(v) else _num(v) for v in values)
    return {"series": series_text(name, tuple(sorted(labels.items()))), "values": text}


def _recorded_rates(plan: Plan, role: str, recorded: Recorded) -> list[dict[str, str]]:
    labels = promql.variant_labels(plan, role)
    out = []
    for seconds in promql.windows_of(plan, role):
        for name, quantity in ((promql.requests_record(seconds), "requests"), (promql.errors_record(seconds), "errors")):
            values = [recorded.rate(role, quantity, seconds, i) for i in range(recorded.steps)]
            out.append(_gauge(name, labels, values))
    return out


def _recorded_latency(plan: Plan, role: str, recorded: Recorded) -> list[dict[str, str]]:
    labels = promql.variant_labels(plan, role)
    out = []
    for seconds in promql.recorded_windows(plan):
        for q in promql.QUANTILES:
            values = [recorded.latency(role, q, seconds, i) for i in range(recorded.steps)]
            out.append(_gauge(promql.latency_record(q, seconds), labels, values))
    if role == "canary":
        for q, seconds in sorted({(g.quantile, g.window) for g in plan.current.gates if g.kind == "latency"}):
            values = [recorded.latency_lower(q, seconds, i) for i in range(recorded.steps)]
            out.append(_gauge(promql.latency_lower_record(q, seconds), labels, values))
    return out


# --------------------------------------------------------------------------- Prometheus, in Python


def extrapolated_rate(times: Sequence[int], values: Sequence[float], at: int, seconds: int) -> float | None:
    """``rate(x[seconds])`` at ``at`` as Prometheus 2.x computes it (range closed at both ends).

    ``times`` are every ``STEP`` seconds from 0; ``values`` never decrease.
    """
    last_index = min(at // STEP, len(values) - 1)
    first_index = max(0, -(-(at - seconds) // STEP))
    if last_index - first_index < 1:
        return None
    first_t, last_t = times[first_index], times[last_index]
    first_v, last_v = values[first_index], values[last_index]
    result = last_v - first_v  # inputs are sums of non-negative increments: no counter resets
    to_start = float(first_t - (at - seconds))
    to_end = float(at - last_t)
    sampled = float(last_t - first_t)
    average = sampled / (last_index - first_index)
    if result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return F(result * (interval / sampled) / seconds)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` over (upper bound, cumulative rate) pairs."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    counts = [c for _, c in buckets]
    for i in range(1, len(counts)):  # ensureMonotonic
        if counts[i] < counts[i - 1]:
            counts[i] = counts[i - 1]
    if len(buckets) < 2:
        return math.nan
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(buckets) - 1) if counts[i] >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], counts[b]
    if b > 0:
        start = buckets[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


class Recorded:
    """The recorded series of one test group, computed as the recording rules compute them."""

    def __init__(self, plan: Plan, inputs: Inputs):
        self.plan = plan
        self.inputs = inputs
        self.steps = inputs.steps
        self.times = [i * STEP for i in range(inputs.steps)]
        self._cache: dict[tuple, object] = {}

    def _counter(self, role: str, quantity: str) -> list[list[float]] | None:
        key = ("counter", role, quantity)
        if key not in self._cache:
            parts = self._counter_series(role, quantity)
            self._cache[key] = None if parts is None else [values[: self.steps] for values in parts]
        return self._cache[key]  # type: ignore[return-value]

    def _counter_series(self, role: str, quantity: str) -> list[list[float]] | None:
        """The cumulative series summed for a quantity, in the order Prometheus sums them (by label set)."""
        f = self.inputs.flows.get(role)
        if f is None:
            return None
        shape = layout(promql.variant_queries(self.plan, role)).counters
        errors = [float(v) for v in cumulative(f.errors)]
        if quantity == "errors":
            return [errors]
        if shape is not None and shape.kind == "shared":
            assert shape.ok is not None
            ok = [float(v) for v in cumulative([n - e for n, e in zip(f.requests, f.errors)])]
            parts = sorted([(_sort_key(shape.ok), ok), (_sort_key(shape.errors), errors)], key=lambda p: p[0])
            return [values for _, values in parts]
        return [[float(v) for v in cumulative(f.requests)]]

    def rate(self, role: str, quantity: str, seconds: int, i: int) -> float | None:
        key = ("rate", role, quantity, seconds, i)
        if key not in self._cache:
            parts = self._counter(role, quantity)
            value = None
            if parts is not None:
                rates = [extrapolated_rate(self.times, values, self.times[i], seconds) for values in parts]
                if all(r is not None for r in rates):
                    value = F(rates[0])
                    for r in rates[1:]:
                        value = value + r
            self._cache[key] = value
        return self._cache[key]  # type: ignore[return-value]

    def count(self, role: str, quantity: str, seconds: int, i: int) -> F | None:
        rate = self.rate(role, quantity, seconds, i)
        return None if rate is None else F(rate) * seconds

    def ratio(self, role: str, seconds: int, i: int) -> F | None:
        e, n = self.rate(role, "errors", seconds, i), self.rate(role, "requests", seconds, i)
        return None if e is None or n is None or n == 0 else F(e) / n  # 0/0 is NaN: never past a threshold

    def lower(self, role: str, seconds: int, i: int) -> F | None:
        e, n = self.count(role, "errors", seconds, i), self.count(role, "requests", seconds, i)
        return None if e is None or n is None else promql.wilson_lower(e, n)  # type: ignore[return-value]

    def upper(self, role: str, seconds: int, i: int) -> F | None:
        e, n = self.count(role, "errors", seconds, i), self.count(role, "requests", seconds, i)
        return None if e is None or n is None else promql.wilson_upper(e, n)  # type: ignore[return-value]

    def _bucket_counters(self, role: str) -> tuple[list[float], list[float]] | None:
        key = ("buckets", role)
        if key not in self._cache:
            f = self.inputs.flows.get(role)
            self._cache[key] = None if f is None else (
                [float(v) for v in cumulative([n - s for n, s in zip(f.requests, f.slow)])],
                [float(v) for v in cumulative(f.requests)],
            )
        return self._cache[key]  # type: ignore[return-value]

    def _buckets(self, role: str, seconds: int, i: int) -> list[tuple[float, float]] | None:
        counters = self._bucket_counters(role)
        if counters is None:
            return None
        fast, total = counters
        out = []
        for (_, bound), values in zip(bucket_bounds(self.inputs.buckets, 1.0), (fast, total, total)):
            rate = extrapolated_rate(self.times, values, self.times[i], seconds)
            if rate is None:
                return None
            out.append((bound, rate))
        return out

    def _scaled_quantile(self, role: str, q: float, seconds: int, i: int) -> float | None:
        shape = layout(promql.variant_queries(self.plan, role)).histogram
        unit = shape.unit if shape is not None else 1.0
        buckets = self._buckets(role, seconds, i)
        if buckets is None:
            return None
        scaled = [(b * unit, c) for b, c in buckets]
        value = histogram_quantile(q, scaled)
        return F(value) / unit if unit != 1.0 else F(value)

    def latency(self, role: str, q: Fraction, seconds: int, i: int) -> float | None:
        return self._scaled_quantile(role, float(q), seconds, i)

    def latency_lower(self, q: Fraction, seconds: int, i: int) -> float | None:
        template = promql.variant_queries(self.plan, "canary").latency
        assert template is not None
        if not promql.quantile_is_scalar(template):
            return self.latency("canary", q, seconds, i)
        n = self.count("canary", "requests", seconds, i)
        level = math.nan if n is None else float(promql.quantile_level(float(q), n))
        return self._scaled_quantile("canary", level, seconds, i)

    def custom(self, gate: str, i: int) -> float | None:
        values = self.inputs.custom.get(gate)
        if values is None or i >= len(values):
            return None
        return values[i]


def _sort_key(series: tuple[str, Labels]) -> tuple:
    name, labels = series
    return tuple(sorted((("__name__", name),) + labels))


def _gt(a: float | None, b: float) -> bool:
    return a is not None and not math.isnan(a) and a > b


def _lt(a: float | None, b: float) -> bool:
    return a is not None and not math.isnan(a) and a < b


def condition(plan: Plan, rule: promql.AlertRule, rec: Recorded, i: int) -> float | None:
    """The value of a rule's expression at scrape ``i`` where it returns a series, else None."""
    n_min = plan.metrics.min_requests
    if rule.kind == "guard":
        rate = rec.rate("canary", "requests", promql.GUARD_WINDOW, i)
        return rate if _gt(rate, 0) else None
    if rule.kind == "starved":
        assert rule.window is not None
        count = rec.count("canary", "requests", rule.window, i)
        if count is None:
            return 0.0
        return count if _lt(count, n_min) else None
    if rule.kind == "burn":
        burn = rule.burn
        gate = promql.error_gate(plan.current)
        assert burn is not None and gate is not None
        limit = burn.factor * float(gate.threshold)
        long, short = rec.ratio("canary", burn.long, i), rec.ratio("canary", burn.short, i)
        evidence = rec.lower("canary", burn.long, i)
        enough = rec.count("canary", "requests", burn.short, i)
        if (_gt(long, limit) and _gt(short, limit) and _gt(evidence, float(gate.threshold))
                and enough is not None and enough >= n_min):
            return long
        return None
    gate = rule.gate
    assert gate is not None
    enough = rec.count("canary", "requests", gate.window, i)
    if enough is None or not enough >= n_min:
        return None
    threshold = float(gate.threshold)
    if gate.kind == "error_rate":
        value = rec.lower("canary", gate.window, i)
        return value if _gt(value, threshold) else None
    if gate.kind == "latency":
        assert gate.quantile is not None
        value = rec.latency_lower(gate.quantile, gate.window, i)
        return value if _gt(value, threshold) else None
    if gate.kind == "ratio":
        value, stable = rec.lower("canary", gate.window, i), rec.upper("stable", gate.window, i)
        if stable is None or math.isnan(stable):
            return None
        return value if _gt(value, threshold * stable) else None
    value = rec.custom(gate.name, i)
    hit = _gt(value, threshold) if gate.bound == "max" else _lt(value, threshold)
    return value if hit else None


@dataclass(frozen=True)
class Timeline:
    """One rule over a test group: its ``$value`` at each evaluation (every ``every`` seconds) where it fires."""

    rule: promql.AlertRule
    every: int
    firing: tuple[float | None, ...]

    def first_firing(self, start: int = 0) -> int | None:
        return next((i for i in range(start, len(self.firing)) if self.firing[i] is not None), None)

    def first_clear(self, start: int) -> int | None:
        return next((i for i in range(start, len(self.firing)) if self.firing[i] is None), None)


def simulate(plan: Plan, rules: Sequence[promql.AlertRule], inputs: Inputs,
             every: int = promql.EVALUATION_INTERVAL) -> list[Timeline]:
    """When each rule fires, evaluated every ``every`` seconds from 0 (pending for its ``for``)."""
    if every % STEP:
        raise ValueError(f"evaluations every {every}s do not line up with scrapes every {STEP}s")
    rec = Recorded(plan, inputs)
    stride = every // STEP
    evaluations = (inputs.steps - 1) // stride + 1
    out = []
    for rule in rules:
        active_since: int | None = None
        firing: list[float | None] = []
        for k in range(evaluations):
            value = condition(plan, rule, rec, k * stride)
            if value is None:
                active_since = None
                firing.append(None)
                continue
            if active_since is None:
                active_since = k
            firing.append(value if (k - active_since) * every >= rule.for_ else None)
        out.append(Timeline(rule, every, tuple(firing)))
    return out
