"""Made-up traffic, and what the rules of :mod:`compiler.gates.alerts` do with it.

Three parts, used by the promtool unit tests the Prometheus target writes and
by the detection benchmark:

- :class:`Flow`: one variant's requests, errors and slow requests per scrape,
  built from :class:`Phase` s, exactly (deterministic) or as Poisson traffic
  from a seeded generator.
- :func:`input_series`: the exporter series a metrics source reads, written
  from the preset's data (:mod:`compiler.gates.presets`: which counter, which
  label value marks a failed request, which histogram in which unit).  A
  ``custom`` source's queries are the user's own: the series its rules record
  are fed instead, computed by the same rules over stand-in counters; so are a
  preset's, when a custom gate's query reads the preset's own series
  (:func:`feeds_records`).
- :func:`simulate`: the rules' expression trees evaluated the way Prometheus 2.x
  evaluates them (selection with a 5-minute look-back, ``rate`` extrapolation,
  vector matching, ``sum``, ``histogram_quantile``, ``absent``, rule order in a
  group, the ``for`` state machine), at every evaluation of a test at once.
"""

from __future__ import annotations

import itertools
import math
import operator
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from fractions import Fraction
from typing import Any, NamedTuple, Union

from mypy_extensions import mypyc_attr

from compiler.gates import alerts, conventions as c, fusion
from compiler.gates.algebra import (
    COMPARISONS,
    selectors,
    Aggregate,
    Binary,
    Call,
    Expr,
    Matcher,
    Number,
    Paren,
    Range,
    Selector,
    Text,
    divide,
    number,
    string,
)
from compiler.gates.presets import Counters, ErrorLabel, Histogram, VariantMetrics
from compiler.ir.plan import Plan

STEP = 15  # scrape interval of the input series, seconds
LOOKBACK = 300  # Prometheus' default look-back for instant selectors

# --------------------------------------------------------------------------- traffic


class Phase(NamedTuple):  # a tuple: flows are cached by their phases, and a tuple hashes and compares in C
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
    # The counters, made when a series needs them (groups of a test share flows): neither compared nor hashed.
    _totals: dict[str, Counts] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def steps(self) -> int:
        return len(self.requests)

    def _total(self, name: str, counts: Callable[[], Sequence[int]]) -> Counts:
        found = self._totals.get(name)
        if found is None:
            found = self._totals[name] = cumulative(counts())
        return found

    @property
    def total_requests(self) -> Counts:
        return self._total("requests", lambda: self.requests)

    @property
    def total_errors(self) -> Counts:
        return self._total("errors", lambda: self.errors)

    @property
    def total_ok(self) -> Counts:
        return self._total("ok", lambda: list(map(operator.sub, self.requests, self.errors)))

    @property
    def total_fast(self) -> Counts:
        return self._total("fast", lambda: list(map(operator.sub, self.requests, self.slow)))


def flow(phases: Sequence[Phase], rng: random.Random | None = None) -> Flow:
    """Traffic of consecutive phases: exact expected counts, or Poisson/binomial draws from ``rng``."""
    if rng is None:
        return _exact_flow(tuple(phases))
    return _flow(phases, rng)


@lru_cache(maxsize=64)  # the flows of a test file's groups (with their counters)
def _exact_flow(phases: tuple[Phase, ...]) -> Flow:
    return _flow(phases, None)


def _flow(phases: Sequence[Phase], rng: random.Random | None) -> Flow:
    requests, errors, slow = [0], [0], [0]
    for phase in phases:
        steps = phase.seconds // STEP
        if rng is None:
            n, e, s = _exact_phase(phase.rps, phase.error_ratio, phase.slow_ratio, steps)
        else:
            n = poissons(rng, phase.rps * STEP, steps)
            e = binomials(rng, n, phase.error_ratio)
            s = binomials(rng, n, phase.slow_ratio)
        requests.extend(n)
        errors.extend(e)
        slow.extend(s)
    return Flow(tuple(requests), tuple(errors), tuple(slow))


#: (requests per second, error ratio, slow ratio) -> exact counts per scrape of a phase at those rates, as long as
#: a phase asked for so far: a phase's first counts do not depend on its length, so shorter ones are slices.
_PHASES: dict[tuple[float, float, float], tuple[list[int], list[int], list[int]]] = {}


def _exact_phase(rps: float, error_ratio: float, slow_ratio: float, steps: int) -> tuple[list[int], list[int],
                                                                                        list[int]]:
    """Requests, errors and slow requests per scrape of ``steps`` scrapes at these rates, exactly."""
    key = (rps, error_ratio, slow_ratio)
    found = _PHASES.get(key)
    if found is None or len(found[0]) < steps:
        if len(_PHASES) > 256:  # a test file asks for a few rates: the cache need not outlive it
            _PHASES.clear()
        length = max(steps, 2 * len(found[0]) if found else 240)
        n = _spread(_exact(rps) * STEP, length)
        found = _PHASES[key] = (n, _thin(n, _exact(error_ratio)), _thin(n, _exact(slow_ratio)))
    return found[0][:steps], found[1][:steps], found[2][:steps]


def _spread(per_step: Fraction, steps: int) -> list[int]:
    """``steps`` whole counts adding up to ``per_step`` each on average (floor of the running total)."""
    num, den = per_step.numerator, per_step.denominator
    return _differences([k // den for k in range(0, num * (steps + 1), num)] if num else [0] * (steps + 1))


def _thin(counts: list[int], share: Fraction) -> list[int]:
    """Whole counts of ``share`` of each count, the running total kept exact."""
    num, den = share.numerator, share.denominator
    return _differences([0] + [total * num // den for total in itertools.accumulate(counts)])


def _differences(running: list[int]) -> list[int]:
    return list(map(operator.sub, itertools.islice(running, 1, None), running))


@lru_cache(maxsize=256)
def _exact(value: float) -> Fraction:
    return Fraction(value).limit_denominator(10**6)


def poissons(rng: random.Random, mean: float, count: int) -> list[int]:
    """``count`` exact Poisson draws: multiplication of uniforms below a mean of 10, else Hörmann's transformed
    rejection (PTRS, 1993), which takes about two uniforms whatever the mean."""
    if mean <= 0:
        return [0] * count
    uniform = rng.random
    out = []
    if mean < 10:
        limit = math.exp(-mean)
        for _ in range(count):
            k, p = 0, uniform()
            while p > limit:
                p *= uniform()
                k += 1
            out.append(k)
        return out
    slam, loglam = math.sqrt(mean), math.log(mean)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    log, log_invalpha, lgamma, floor = math.log, math.log(invalpha), math.lgamma, math.floor
    for _ in range(count):
        while True:
            u = uniform() - 0.5
            v = uniform()
            us = 0.5 - abs(u)
            k = floor((2 * a / us + b) * u + mean + 0.43)
            if us >= 0.07 and v <= vr:
                break
            if k < 0 or (us < 0.013 and v > us):
                continue
            if log(v) + log_invalpha - log(a / (us * us) + b) <= -mean + k * loglam - lgamma(k + 1):
                break
        out.append(k)
    return out


def binomials(rng: random.Random, counts: Sequence[int], p: float) -> list[int]:
    """A binomial draw of each count, by geometric skips between successes (cost proportional to n*p)."""
    if p <= 0:
        return [0] * len(counts)
    if p >= 1:
        return [max(n, 0) for n in counts]
    if p > 0.5:
        return [n - k if n > 0 else 0 for n, k in zip(counts, binomials(rng, counts, 1 - p))]
    uniform, log, log_q = rng.random, math.log, math.log1p(-p)
    out = []
    for n in counts:
        count = 0
        if n > 0:
            position = int(log(1.0 - uniform()) / log_q) + 1
            while position <= n:
                count += 1
                position += int(log(1.0 - uniform()) / log_q) + 1
        out.append(count)
    return out


@mypyc_attr(native_class=False)  # a tuple subclass: a Python class in the native build too
class Counts(tuple[float, ...]):
    """Running totals of whole counts: Python ints where a double holds every one exactly (the rules compute
    with them to the same doubles as with floats: differences, true divisions and products with floats of
    exact integers round once, the same way), else floats."""

    whole: bool  # the totals are ints (written as they are in the notation of the samples)
    text: str | None = None  # their notation, once written (the flows of a test file are shared by its groups)


def cumulative(counts: Sequence[int]) -> Counts:
    """The running totals of counts (never negative, so the last total is the largest)."""
    whole = list(itertools.accumulate(counts))
    if not whole or whole[-1] < _EXACT:
        out = Counts(whole)
        out.whole = True
    else:
        out = Counts(map(float, whole))
        out.whole = False
    return out


# --------------------------------------------------------------------------- input series

Labels = tuple[tuple[str, str], ...]  # sorted by name, no empty values; __name__ included for raw series
Values = list[Union[float, None]]  # one per scrape or evaluation; None: no sample


@dataclass
class Inputs:
    """What one test group feeds Prometheus: per variant a flow (None: no series at all), per custom gate values."""

    steps: int
    flows: dict[str, Flow | None]
    custom: dict[str, list[float]] = field(default_factory=dict)  # gate name -> value per scrape
    buckets: tuple[float, float] = (0.1, 1.0)  # seconds: fast requests <= [0], slow ones <= [1]
    _series: dict[object, list[InputSeries]] = field(default_factory=dict, repr=False, compare=False)


class InputSeries(NamedTuple):  # a tuple: made by the thousand, and cheaper to make than a frozen dataclass
    name: str
    labels: Labels  # without __name__
    values: tuple[float | None, ...]  # per scrape

    @property
    def text(self) -> str:
        return _series_text(self.name, self.labels)

    def promtool(self) -> dict[str, str]:
        return {"series": _series_text(self.name, self.labels), "values": _values_text(self.values)}


@lru_cache(maxsize=1024)
def _series_text(name: str, labels: Labels) -> str:
    return name + "{" + ",".join(f"{k}={string(v)}" for k, v in labels) + "}"


def _values_text(values: tuple[float | None, ...]) -> str:
    """promtool's notation of samples (``_``: none)."""
    if isinstance(values, Counts):
        if values.text is None:
            values.text = (_expanding_whole(values) if values.whole  # type: ignore[arg-type]  # ints
                           else _sampled_text(values))
        return values.text
    return _sampled_text(values)


@lru_cache(maxsize=128)
def _sampled_text(values: tuple[float | None, ...]) -> str:
    """:func:`_values_text` of other samples: series of a test file repeat between its groups."""
    if None not in values:
        return expanding(values)  # type: ignore[arg-type]  # no None left
    return " ".join("_" if v is None or math.isnan(v) else _num(v) for v in values)


def _labels(pairs: Sequence[tuple[str, str]]) -> Labels:
    return tuple(sorted((k, v) for k, v in dict(pairs).items() if v != ""))


@lru_cache(maxsize=4096)
def _rule_labels(pairs: tuple[tuple[str, str], ...]) -> Labels:
    """:func:`_labels` of a rule's labels (asked for again at every test group)."""
    return _labels(pairs)


def _equalities(matchers: Sequence[Matcher]) -> list[tuple[str, str]]:
    return [(name, value) for name, op, value in matchers if op == "="]


def bucket_bounds(buckets: tuple[float, float], unit: float) -> list[tuple[str, float]]:
    """(``le`` label, bound) of the three buckets, in the histogram's unit."""
    fast, slow = (b * unit for b in buckets)
    return [(number(fast), fast), (number(slow), slow), ("+Inf", math.inf)]


def _counter_series(counters: Counters, f: Flow, only: Needs | None = None) -> list[InputSeries]:
    """The source's two counter series (those ``only`` needs): good and failed, or all and failed requests."""
    first, second = _counter_labels(counters)
    if counters.error_label is not None:
        wanted = ((counters.metric, first, "total_ok"), (counters.metric, second, "total_errors"))
    else:
        assert counters.error_metric is not None
        wanted = ((counters.metric, first, "total_requests"), (counters.error_metric, second, "total_errors"))
    return [InputSeries(name, labels, getattr(f, totals)) for name, labels, totals in wanted
            if only is None or only.reads(name, labels)]  # a counter nobody reads is never totalled


@lru_cache(maxsize=256)
def _counter_labels(counters: Counters) -> tuple[Labels, Labels]:
    """The labels of a source's two counter series: good and failed requests, or all and failed requests."""
    base = _equalities(counters.labels)
    if counters.error_label is not None:
        label: ErrorLabel = counters.error_label
        return _labels(base + [(label.label, label.ok)]), _labels(base + [(label.label, label.failed)])
    return _labels(base), _labels(_equalities(counters.error_labels))


def _bucket_series(histogram: Histogram, f: Flow, buckets: tuple[float, float],
                   only: Needs | None = None) -> list[InputSeries]:
    name = histogram.metric
    return [InputSeries(name, labels, getattr(f, totals))
            for labels, totals in zip(_bucket_labels(histogram, buckets), ("total_fast", "total_requests",
                                                                            "total_requests"))
            if only is None or only.reads(name, labels)]


@lru_cache(maxsize=256)
def _bucket_labels(histogram: Histogram, buckets: tuple[float, float]) -> tuple[Labels, ...]:
    """The labels of a source's three bucket series."""
    base = _equalities(histogram.labels)
    return tuple(_labels(base + [("le", le)]) for le, _ in bucket_bounds(buckets, histogram.unit))


#: Stand-in counters for sources whose queries are the user's own (``custom``): their recorded series are fed,
#: computed by the same rules over these.
STAND_IN = "rollout_simulated"


def _stand_in(role: str, metrics: VariantMetrics) -> VariantMetrics:
    labels: tuple[Matcher, ...] = (("variant", "=", role),)
    histogram = Histogram(f"{STAND_IN}_request_duration_seconds_bucket", labels, 1.0) if metrics.has_latency else None
    counters = Counters(f"{STAND_IN}_requests_total", labels, ErrorLabel("code", "5..", "500", "200"))
    return VariantMetrics(counters, histogram, quantile_levels=metrics.latency_takes_a_level())


def uses_templates(plan: Plan) -> bool:
    """The queries are the user's own (the ``custom`` source)."""
    return plan.metrics.canary.templates is not None


def feeds_records(plan: Plan) -> bool:
    """The tests feed the series the source's queries record, not the series they read: the queries are the
    user's own, or a custom gate's query reads the source's series (fed, they would make its value in promtool
    beside the value the test feeds)."""
    found = plan.memo.get("feeds records")
    if found is None:
        found = plan.memo["feeds records"] = uses_templates(plan) or any(
            alerts.reads_inputs(plan, gate) for gate in plan.current.gates
        )
    assert isinstance(found, bool)
    return found


def fed(plan: Plan, record: alerts.Record) -> bool:
    """A recording rule whose series the tests feed rather than let promtool compute: the user's PromQL, or,
    where :func:`feeds_records`, a rule reading the source's own series."""
    if isinstance(record.expr, Text):
        return True
    if not feeds_records(plan):
        return False
    source = alerts.source_metrics(plan)
    return any(s.metric in source for s in selectors(record.expr))


def measured_plan(plan: Plan) -> Plan:
    """The plan with stand-in counters where the queries are the user's own."""
    if not uses_templates(plan):
        return plan
    found = plan.memo.get("measured")
    if found is None:
        m = plan.metrics
        found = plan.memo["measured"] = replace(plan, metrics=replace(m, stable=_stand_in("stable", m.stable),
                                                                      canary=_stand_in("canary", m.canary)))
    assert isinstance(found, Plan)
    return found


def exporter_series(plan: Plan, inputs: Inputs) -> list[InputSeries]:
    """The series the metrics source reads."""
    key = ("exporter", id(plan))
    found = inputs._series.get(key)
    if found is None:
        found = inputs._series[key] = _exporter_series(plan, inputs)
    return found


def _exporter_series(plan: Plan, inputs: Inputs, only: Needs | None = None) -> list[InputSeries]:
    out: list[InputSeries] = []
    for role in c.ROLES:
        f = inputs.flows.get(role)
        if f is None:
            continue
        metrics = c.variant_metrics(plan, role)
        assert metrics.counters is not None
        out += _counter_series(metrics.counters, f, only)
        if metrics.histogram is not None:
            out += _bucket_series(metrics.histogram, f, inputs.buckets, only)
    return out


def custom_series(plan: Plan, inputs: Inputs) -> list[InputSeries]:
    out = []
    for gate, values in sorted(inputs.custom.items()):
        labels = _labels(list({**c.variant_labels(plan, "canary"), "gate": gate}.items()))
        out.append(InputSeries(c.CUSTOM_RECORD, labels, tuple(values)))
    return out


@dataclass(frozen=True)
class Needs:
    """What some rules read: input series (by selector) and recorded series (by name and labels)."""

    raw: tuple[Selector, ...]
    records: frozenset[tuple[str, Labels]]
    _read: dict[tuple[str, Labels], bool] = field(default_factory=dict, compare=False, repr=False)  # answers

    def reads(self, name: str, labels: Labels) -> bool:
        key = (name, labels)
        found = self._read.get(key)
        if found is None:
            found = self._read[key] = key in self.records or any(_selects(s, name, labels) for s in self.raw)
        return found


def needs(plan: Plan, rules: Sequence[alerts.AlertRule], records: Sequence[alerts.Record]) -> Needs:
    """Every series ``rules`` of ``plan`` read, directly or through the recording rules they select."""
    by_name: dict[str, list[tuple[alerts.Record, Labels]]] = {}
    for record in records:
        by_name.setdefault(record.name, []).append((record, _rule_labels(record.labels)))
    raw: dict[str, Selector] = {}
    read: set[tuple[str, Labels]] = set()
    todo: list[Expr] = [rule.expr for rule in rules]
    while todo:
        for selector in selectors(todo.pop()):
            matched = [
                (r, labels) for r, labels in by_name.get(selector.metric, []) if _selects(selector, r.name, labels)
            ]
            if not matched:
                raw.setdefault(str(selector), selector)
            for record, labels in matched:
                key = (record.name, labels)
                if key not in read:
                    read.add(key)
                    if not fed(plan, record):
                        todo.append(record.expr)
    return Needs(tuple(raw[k] for k in sorted(raw)), frozenset(read))


def fed_records(plan: Plan, inputs: Inputs, only: Needs | None = None,
                records: Sequence[alerts.Record] | None = None) -> list[InputSeries]:
    """The series of the rules the tests feed (:func:`fed`), as the same rules compute them over the source's
    counters, or stand-ins for the user's PromQL (those ``only`` needs, or all)."""
    measured = measured_plan(plan)
    scrapes = [i * STEP for i in range(inputs.steps)]
    world = World(measured, exporter_series(measured, inputs), scrapes)
    out = []
    for record in records if records is not None else alerts.records(plan):
        labels = dict(record.labels)
        if (
            not fed(plan, record)
            or record.name == c.CUSTOM_RECORD
            or inputs.flows.get(labels["variant"]) is None
        ):
            continue
        if only is not None and (record.name, _rule_labels(record.labels)) not in only.records:
            continue
        vector = world.record(record.name, record.labels)
        values = next(iter(vector.values())) if vector else [None] * len(scrapes)
        sampled = tuple([None if v is None or v != v else v for v in values])  # NaN: no sample, as promtool reads "_"
        out.append(InputSeries(record.name, _rule_labels(record.labels), sampled))
    return out


def series_of(plan: Plan, inputs: Inputs, only: Needs | None = None,
              records: Sequence[alerts.Record] | None = None) -> list[InputSeries]:
    """The series a test group feeds: the source's exporter series (or the recorded series of the user's
    queries) and the custom gates' values; with ``only``, those that some rules read."""
    key = (id(plan), only)  # the same needs (the same selectors) read the same series
    found = inputs._series.get(key)
    if found is None:
        custom = [s for s in custom_series(plan, inputs) if only is None or only.reads(s.name, s.labels)]
        if feeds_records(plan):  # only the records needed are computed
            found = fed_records(plan, inputs, only, records) + custom
        elif only is None:
            found = exporter_series(plan, inputs) + custom
        else:  # a counter nobody reads is never totalled
            found = _exporter_series(plan, inputs, only) + custom
        inputs._series[key] = found
    return found


def input_series(plan: Plan, inputs: Inputs, only: Needs | None = None,
                 records: Sequence[alerts.Record] | None = None) -> list[dict[str, str]]:
    """promtool ``input_series`` for one test group."""
    return [s.promtool() for s in series_of(plan, inputs, only, records)]


def expanding(values: Sequence[float]) -> str:
    """promtool's expanding notation: runs of a constant step as ``a+bxn``."""
    n = len(values)
    whole = _as_whole(values) if n else None
    if whole is not None:
        return _expanding_whole(whole)
    steps = list(map(operator.sub, itertools.islice(values, 1, None), values))
    parts, i = [], 0
    while i < n:
        if i + 1 < n:
            step = steps[i]
            if step == 0 or (float(values[i]).is_integer() and float(values[i + 1]).is_integer()):
                j = i + 1  # a run: every following step equal to its first
                while j + 1 < n and steps[j] == step:
                    j += 1
                sign = "+" if step >= 0 else "-"
                parts.append(f"{_num(values[i])}{sign}{_num(abs(step))}x{j - i}")
                i = j + 1
                continue
        parts.append(_num(values[i]))
        i += 1
    return " ".join(parts)


_EXACT = float(2**53)


def _as_whole(values: Sequence[float]) -> list[int] | None:
    """The values as ints, when every one is a float holding a whole number that a float holds exactly."""
    if set(map(type, values)) != {float} or not (-_EXACT < min(values) and max(values) < _EXACT):
        return None
    try:
        whole = list(map(int, values))
    except ValueError:  # NaN, which min and max may pass over
        return None
    return whole if whole == list(values) else None


def _expanding_whole(values: Sequence[int]) -> str:
    """:func:`expanding` of whole numbers: every pair of samples starts a run, which takes every step equal to
    its first; the step from a run's last sample to the next run's first is not written."""
    n = len(values)
    steps = list(map(operator.sub, values[1:], values))
    parts: list[str] = []
    i = 0
    while i < n - 1:
        step, j = steps[i], i + 1
        while j < n - 1 and steps[j] == step:
            j += 1
        parts.append(f"{values[i]}+{step}x{j - i}" if step >= 0 else f"{values[i]}-{-step}x{j - i}")
        i = j + 1
    if i < n:
        parts.append(str(values[i]))
    return " ".join(parts)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


# --------------------------------------------------------------------------- Prometheus, in Python


def rates(values: Sequence[float | None], every: int, count: int, seconds: int) -> Values:
    """``rate(x[seconds])`` at times ``0, every, 2 * every, ...`` (``count`` of them) as Prometheus 2.x computes
    it (range closed at both ends), over samples every ``STEP`` seconds from 0 that never decrease (no counter
    resets).

    Where the window holds every sample of its range, the rate is a plain difference (taken over slices);
    elsewhere (the first windows, samples missing at an end) it is extrapolated as Prometheus does.
    """
    out: Values = [None] * count
    last = len(values) - 1
    partial: Iterable[int] = range(count)
    if seconds % STEP == 0 and every % STEP == 0 and every > 0:
        r, span = every // STEP, seconds // STEP
        first = -(-span // r)  # the first evaluation whose window starts at or after the first sample
        final = min(count - 1, last // r)  # the last one with a sample at its end
        if first <= final:
            ends = values[first * r:final * r + 1:r]
            starts = values[first * r - span:final * r - span + 1:r]
            out[first:final + 1] = [None if a is None or b is None else (b - a) / seconds
                                    for a, b in zip(starts, ends)]
        _leading(out, values, every, min(first, final + 1), seconds)
        partial = range(final + 1, count)
    for k in partial:
        out[k] = _extrapolated(values, k * every, seconds, last)
    return out


def _leading(out: Values, values: Sequence[float | None], every: int, count: int, seconds: int) -> None:
    """:func:`rates` at the first ``count`` evaluations, whose windows start before the first sample (from 0,
    every a multiple of ``STEP``, each ending at a sample).

    A counter from zero (every flow's) is reached back to: an increase is taken over the time sampled alone
    (the extrapolation's interval / sampled is exactly 1.0), so its rate is the increase over the window,
    in one loop; anything else is extrapolated evaluation by evaluation.
    """
    last = len(values) - 1
    if count <= 0 or values[0] != 0:
        for k in range(max(count, 0)):
            out[k] = _extrapolated(values, k * every, seconds, last)
        return
    first_v = values[0]
    r = every // STEP
    out[:count] = [None if k == 0 or v is None
                   else (v - first_v) * 1.0 / seconds if v - first_v > 0
                   else _extrapolated(values, k * every, seconds, last)
                   for k, v in enumerate(values[:count * r:r])]


def _extrapolated(values: Sequence[float | None], t: int, seconds: int, last: int) -> float | None:
    """:func:`rates` at ``t`` from the samples in its window, extrapolated to the window's ends."""
    i = t // STEP
    last_index = i if i < last else last
    first_index = max(0, -(-(t - seconds) // STEP))
    if last_index - first_index < 1:
        return None
    first_v, last_v = values[first_index], values[last_index]
    if first_v is None or last_v is None:
        return None
    first_t, last_t = first_index * STEP, last_index * STEP
    result = last_v - first_v
    to_start = float(first_t - (t - seconds))
    to_end = float(t - last_t)
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
    return result * (interval / sampled) / seconds


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` over (upper bound, cumulative rate) pairs."""
    ordered = sorted(buckets)
    return _quantiles([q], [bound for bound, _ in ordered], [[count for _, count in ordered]])[0]


def _quantiles(qs: Sequence[float], bounds: Sequence[float], columns: list[list[float]]) -> list[float]:
    """:func:`histogram_quantile` at each (q, counts) of ``qs`` and ``columns``: the counts of buckets whose bounds
    are ``bounds``, ascending (each column is made monotonic in place)."""
    n = len(bounds)
    usable = n >= 2 and math.isinf(bounds[-1])
    out: list[float] = []
    for q, counts in zip(qs, columns):
        if math.isnan(q):
            out.append(math.nan)
            continue
        if q < 0 or q > 1:
            out.append(-math.inf if q < 0 else math.inf)
            continue
        if not usable:
            out.append(math.nan)
            continue
        for i in range(1, n):  # ensureMonotonic
            if counts[i] < counts[i - 1]:
                counts[i] = counts[i - 1]
        observations = counts[-1]
        if observations == 0:
            out.append(math.nan)
            continue
        rank = q * observations
        b = 0
        while b < n - 1 and counts[b] < rank:
            b += 1
        if b == n - 1:
            out.append(bounds[-2])
            continue
        if b == 0 and bounds[0] <= 0:
            out.append(bounds[0])
            continue
        start, end, count = 0.0, bounds[b], counts[b]
        if b > 0:
            start = bounds[b - 1]
            count -= counts[b - 1]
            rank -= counts[b - 1]
        out.append(start + (end - start) * (rank / count))
    return out


Vector = dict[Labels, Values]  # an instant vector at every evaluation: label set -> value (None: no sample)
Scalar = list[float]


def _matches(op: str, pattern: str, value: str) -> bool:
    if op == "=":
        return value == pattern
    if op == "!=":
        return value != pattern
    hit = _regex(pattern).fullmatch(value) is not None
    return hit if op == "=~" else not hit


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _selects(node: Selector, name: str, labels: Labels) -> bool:
    return node.metric == name and _matched(node.matchers, name, labels)


@lru_cache(maxsize=8192)  # the same selectors meet the same series in every run of a test file
def _matched(matchers: tuple[Matcher, ...], name: str, labels: Labels) -> bool:
    found = dict(labels)
    for label, op, pattern in matchers:
        value = name if label == "__name__" else found.get(label, "")
        if op == "=":
            if value != pattern:
                return False
        elif not _matches(op, pattern, value):
            return False
    return True


@lru_cache(maxsize=4096)
def _without_name(labels: Labels) -> Labels:
    """The labels but ``__name__`` (label sets recur at every evaluation of every group)."""
    return tuple(pair for pair in labels if pair[0] != "__name__")


def _key(labels: Labels, on: bool | None, names: tuple[str, ...]) -> Labels:
    if on:
        return tuple(pair for pair in labels if pair[0] in names)
    return tuple(pair for pair in labels if pair[0] != "__name__" and pair[0] not in names)


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": divide,
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}


class World:
    """Input series and the rules of a plan, evaluated at a list of times (seconds from the first scrape)."""

    def __init__(self, plan: Plan, raw: list[InputSeries], times: Sequence[int],
                 records: list[alerts.Record] | None = None, inputs: frozenset[int] = frozenset()):
        """``inputs``: the indices of the recording rules whose series are among ``raw`` (fed, not computed)."""
        self.plan = plan
        self.inputs = inputs
        self.times = list(times)
        self.every = self.times[1] - self.times[0] if len(self.times) > 1 else STEP
        if self.times != list(range(0, self.every * len(self.times), self.every)):
            raise ValueError("evaluations are at 0, every, 2 * every, ...")
        self.raw = raw
        self.rules = records if records is not None else alerts.records(plan)
        self.raw_by_name: dict[str, list[InputSeries]] = {}
        for series in raw:
            self.raw_by_name.setdefault(series.name, []).append(series)
        self.rules_by_name = _rules_by_name(plan, self.rules)
        self._selected: dict[tuple[str, tuple[Matcher, ...]], Vector] = {}
        self._records: dict[int, Vector] = {}
        self._memo: dict[int, object] = {}
        self._keep: list[Expr] = []

    # ---- selection

    def _instant(self, series: InputSeries) -> Values:
        """The value an instant selector returns at each time: the latest sample within the look-back."""
        out: Values = []
        values = series.values
        for t in self.times:
            i = min(t // STEP, len(values) - 1)
            found = None
            while i >= 0 and t - i * STEP <= LOOKBACK:
                v = values[i]
                if v is not None:
                    found = v
                    break
                i -= 1
            out.append(found)
        return out

    def select(self, node: Selector) -> Vector:
        key = (node.metric, node.matchers)
        if key not in self._selected:
            self._selected[key] = self._select(node)
        return self._selected[key]

    def _select(self, node: Selector) -> Vector:
        out: Vector = {}
        for series in self.raw_by_name.get(node.metric, ()):
            labels = series.labels
            if _selects(node, series.name, labels):
                out[tuple(sorted(labels + (("__name__", series.name),)))] = self._instant(series)
        for index, rule_labels in self.rules_by_name.get(node.metric, ()):
            rule = self.rules[index]
            if isinstance(rule.expr, Text) or index in self.inputs or not _selects(node, rule.name, rule_labels):
                continue  # the user's query reads series nobody feeds; its value, if any, is an input series
            for labels, values in self._rule(index).items():
                if _selects(node, rule.name, _without_name(labels)):
                    out[labels] = values
        return out

    def record(self, name: str, labels: Sequence[tuple[str, str]]) -> Vector:
        """The series a recording rule of this name and these labels records."""
        want = _labels(list(labels))
        for index, rule_labels in self.rules_by_name.get(name, ()):
            if rule_labels == want and not isinstance(self.rules[index].expr, Text):
                return self._rule(index)
        return {}

    def _rule(self, index: int) -> Vector:
        if index not in self._records:
            rule = self.rules[index]
            result = self.vector(rule.expr)
            out: Vector = {}
            for labels, values in result.items():
                merged = dict(_without_name(labels))
                merged.update(dict(rule.labels))
                merged["__name__"] = rule.name
                out[tuple(sorted((k, v) for k, v in merged.items() if v != ""))] = values
            self._records[index] = out
        return self._records[index]

    # ---- evaluation

    def vector(self, node: Expr) -> Vector:
        value = self.evaluate(node)
        if not isinstance(value, dict):
            raise TypeError(f"expected an instant vector: {node}")
        return value

    def scalar(self, node: Expr) -> Scalar:
        value = self.evaluate(node)
        if isinstance(value, dict):
            raise TypeError(f"expected a scalar: {node}")
        return value

    def evaluate(self, node: Expr) -> Vector | Scalar:
        key = id(node)
        found = self._memo.get(key)
        if found is None:
            self._keep.append(node)  # ids stay unique while the node lives
            how = _EVALUATE.get(type(node))
            if how is None:
                raise TypeError(f"cannot evaluate {type(node).__name__}: {node}")
            found = self._memo[key] = (self._fused(node) if how in _FUSABLE else None) or how(self, node)
        return found  # type: ignore[return-value]

    def _fused(self, node: Expr) -> Vector | None:
        """The arithmetic under ``node`` in one loop, where every series it reads is one and the same labels
        (see :mod:`compiler.gates.fusion`); None where it is evaluated node by node."""
        found = _region(self.plan, node)
        if found is None:
            return None
        leaves = [self.evaluate(leaf) for leaf in found.leaves]
        key = None
        for leaf in leaves:
            if not isinstance(leaf, dict) or len(leaf) != 1:
                return None
            labels = _without_name(next(iter(leaf)))
            if key is None:
                key = labels
            elif labels != key:
                return None
        assert key is not None
        series = [next(iter(leaf.values())) for leaf in leaves]  # type: ignore[union-attr]  # vectors, checked above
        return {key: found.values(series)}

    def _number(self, node: Number) -> Scalar:
        return [node.value] * len(self.times)

    def _paren(self, node: Paren) -> Vector | Scalar:
        return self.evaluate(node.expr)

    def _rate(self, node: Range) -> Vector:
        out: Vector = {}
        for series in self.raw:
            if _selects(node.selector, series.name, series.labels):
                out[series.labels] = rates(series.values, self.every, len(self.times), node.seconds)
        return out

    def _call(self, node: Call) -> Vector | Scalar:
        f, args = node.function, node.args
        if f == "rate":
            assert isinstance(args[0], Range)
            return self._rate(args[0])
        if f == "vector":
            return {(): list(self.scalar(args[0]))}
        if f == "scalar":
            v = self.vector(args[0])
            out: Scalar = []
            for i in range(len(self.times)):
                present = [x for vals in v.values() if (x := vals[i]) is not None]
                out.append(present[0] if len(present) == 1 else math.nan)
            return out
        if f == "absent":
            arg = args[0]
            v = self.vector(arg)
            labels = _labels(_equalities(arg.matchers)) if isinstance(arg, Selector) else ()
            values: Values = [None if any(vals[i] is not None for vals in v.values()) else 1.0
                              for i in range(len(self.times))]
            return {labels: values}
        if f == "histogram_quantile":
            return self._quantile(self.scalar(args[0]), self.vector(args[1]))
        v = self.vector(args[0])
        unary: Callable[[float], float]
        if f == "sqrt":
            unary = lambda x: math.sqrt(x) if x >= 0 else math.nan  # noqa: E731
        elif f in ("clamp_min", "clamp_max"):
            bound = self.scalar(args[1])[0]
            pick = max if f == "clamp_min" else min
            unary = lambda x: x if math.isnan(x) else pick(x, bound)  # noqa: E731
        else:
            raise TypeError(f"the simulator has no function {f}")
        return {_without_name(k): [None if x is None else unary(x) for x in vals] for k, vals in v.items()}

    def _quantile(self, q: Scalar, v: Vector) -> Vector:
        groups: dict[Labels, list[tuple[float, Values]]] = {}
        for labels, series in v.items():
            le = dict(labels).get("le")
            if le is None:
                continue
            rest = tuple(p for p in labels if p[0] not in ("le", "__name__"))
            groups.setdefault(rest, []).append((float(le), series))
        out: Vector = {}
        for labels, buckets in groups.items():
            buckets.sort(key=lambda bucket: bucket[0])
            bounds = [bound for bound, _ in buckets]
            columns = [list(column) for column in zip(*(vals for _, vals in buckets))]
            values: Values = [None] * len(columns)
            # Evaluations where every bucket has a sample, in one loop (buckets of one bound are ordered by their
            # values: those take the general way, as do evaluations where samples are missing).
            distinct = len(set(bounds)) == len(bounds)
            whole = [i for i, column in enumerate(columns) if distinct and None not in column]
            for i, value in zip(whole, _quantiles([q[i] for i in whole], bounds, [columns[i] for i in whole])):
                values[i] = value
            done = set(whole)
            for i, column in enumerate(columns):
                if i not in done:
                    present = [(bound, x) for bound, x in zip(bounds, column) if x is not None]
                    values[i] = histogram_quantile(q[i], present) if present else None
            out[labels] = values
        return out

    def _aggregate(self, node: Aggregate) -> Vector:
        assert node.op == "sum"
        v = self.vector(node.expr)
        groups: dict[Labels, list[Values]] = {}
        for labels in sorted(v):
            key = tuple(p for p in labels if node.by is not None and p[0] in node.by)
            groups.setdefault(key, []).append(v[labels])
        out: Vector = {}
        for key, members in groups.items():
            if len(members) == 1:
                out[key] = list(members[0])
                continue
            values: Values = []
            for column in zip(*members):
                total: float | None = None
                for x in column:
                    if x is not None:
                        total = x if total is None else total + x
                values.append(total)
            out[key] = values
        return out

    def _binary(self, node: Binary) -> Vector | Scalar:
        if node.op in ("and", "or", "unless"):
            return self._set(node)
        lhs, rhs = self.evaluate(node.lhs), self.evaluate(node.rhs)
        op = node.op
        compare = op in COMPARISONS
        f = _COMPARE[op] if compare else _ARITHMETIC[op]
        if not isinstance(lhs, dict) and not isinstance(rhs, dict):
            if compare:
                return [float(f(a, b)) for a, b in zip(lhs, rhs)]
            return [f(a, b) for a, b in zip(lhs, rhs)]
        out: Vector = {}
        drop = not compare or node.bool_
        if isinstance(lhs, dict) and isinstance(rhs, dict):
            for labels, a_vals, b_vals in self._match(node, lhs, rhs):
                out[_without_name(labels) if drop else labels] = _combine(f, compare, node.bool_, a_vals, b_vals, True)
            return out
        vector_left = isinstance(lhs, dict)
        vector = lhs if vector_left else rhs
        scalar = rhs if vector_left else lhs
        assert isinstance(vector, dict) and isinstance(scalar, list)
        constant = scalar[0] if scalar and scalar.count(scalar[0]) == len(scalar) else None
        for labels, vals in vector.items():
            key = _without_name(labels) if drop else labels
            if constant is not None and not compare:
                b = constant
                out[key] = ([None if a is None else f(a, b) for a in vals] if vector_left
                            else [None if a is None else f(b, a) for a in vals])
            elif vector_left:
                out[key] = _combine(f, compare, node.bool_, vals, scalar, True)
            else:
                out[key] = _combine(f, compare, node.bool_, scalar, vals, False)
        return out

    def _match(self, node: Binary, lhs: Vector, rhs: Vector) -> list[tuple[Labels, Values, Values]]:
        m = node.matching
        on, names = (m.on, m.labels) if m is not None else (None, ())
        right = {_key(k, on, names): vals for k, vals in rhs.items()}
        out = []
        for labels, vals in lhs.items():
            other = right.get(_key(labels, on, names))
            if other is not None:
                out.append((labels, vals, other))
        return out

    def _set(self, node: Binary) -> Vector:
        lhs, rhs = self.vector(node.lhs), self.vector(node.rhs)
        m = node.matching
        on, names = (m.on, m.labels) if m is not None else (None, ())
        n = len(self.times)
        present: dict[Labels, list[bool]] = {}
        for k, vals in rhs.items():
            key = _key(k, on, names)
            mine = [x is not None for x in vals]
            flags = present.get(key)
            present[key] = mine if flags is None else list(map(operator.or_, flags, mine))
        none = [False] * n
        if node.op == "and":
            return {k: [x if p else None for x, p in zip(vals, present.get(_key(k, on, names), none))]
                    for k, vals in lhs.items()}
        if node.op == "unless":
            return {k: [None if p else x for x, p in zip(vals, present.get(_key(k, on, names), none))]
                    for k, vals in lhs.items()}
        taken: dict[Labels, list[bool]] = {}
        for k, vals in lhs.items():
            flags = taken.setdefault(_key(k, None, ()), [False] * n)
            for i, x in enumerate(vals):
                flags[i] = flags[i] or x is not None
        out: Vector = dict(lhs)
        for k, vals in rhs.items():
            flags = taken.get(_key(k, None, ()), [False] * n)
            extra = [None if flags[i] else x for i, x in enumerate(vals)]
            out[k] = extra if k not in out else [a if a is not None else b for a, b in zip(out[k], extra)]
        return out


def _rules_by_name(plan: Plan, records: list[alerts.Record]) -> dict[str, list[tuple[int, Labels]]]:
    """Rule name -> (index, labels) of each recording rule of that name (the same for every run of a plan)."""
    known: dict[tuple[int, ...], tuple[list[alerts.Record], dict[str, list[tuple[int, Labels]]]]]
    known = plan.memo.setdefault("records by name", {})
    key = tuple(map(id, records))
    found = known.get(key)
    if found is None:
        by_name: dict[str, list[tuple[int, Labels]]] = {}
        for index, rule in enumerate(records):
            by_name.setdefault(rule.name, []).append((index, _rule_labels(rule.labels)))
        found = known[key] = (records, by_name)  # the records kept: their ids are not reused
    return found[1]


def _region(plan: Plan, node: Expr) -> fusion.Region | None:
    """:func:`compiler.gates.fusion.region` of a node of the plan's rules, found once per plan."""
    regions: dict[int, tuple[Expr, fusion.Region | None]] = plan.memo.setdefault("fused regions", {})
    found = regions.get(id(node))
    if found is None:
        found = regions[id(node)] = (node, fusion.region(node))  # the node kept: its id is not reused
    return found[1]


#: How each kind of node is evaluated.
_EVALUATE: dict[type[Expr], Callable[[World, Any], Vector | Scalar]] = {
    Number: World._number, Selector: World.select, Paren: World._paren, Call: World._call,
    Aggregate: World._aggregate, Binary: World._binary,
}
_FUSABLE = (World._binary, World._call, World._paren)


def _combine(f: Callable[[float, float], Any], compare: bool, as_bool: bool, a_vals: Sequence[float | None],
             b_vals: Sequence[float | None], keep_left: bool) -> Values:
    """An operator applied sample by sample; a comparison keeps the vector's sample (or 0/1 with ``bool``)."""
    if not compare:
        return [None if a is None or b is None else f(a, b) for a, b in zip(a_vals, b_vals)]
    if as_bool:
        return [None if a is None or b is None else float(f(a, b)) for a, b in zip(a_vals, b_vals)]
    if keep_left:
        return [a if a is not None and b is not None and f(a, b) else None for a, b in zip(a_vals, b_vals)]
    return [b if a is not None and b is not None and f(a, b) else None for a, b in zip(a_vals, b_vals)]


# --------------------------------------------------------------------------- alerts over time


@dataclass(frozen=True)
class Timeline:
    """One alert rule's series over a test group: its ``$value`` at each evaluation where it fires."""

    rule: alerts.AlertRule
    every: int
    firing: tuple[float | None, ...]
    labels: Labels = ()  # the alert's labels: the series' and the rule's

    def first_firing(self, start: int = 0) -> int | None:
        return next((i for i in range(start, len(self.firing)) if self.firing[i] is not None), None)

    def first_clear(self, start: int) -> int | None:
        return next((i for i in range(start, len(self.firing)) if self.firing[i] is None), None)


def simulate(plan: Plan, rules: Sequence[alerts.AlertRule], inputs: Inputs, every: int = c.EVALUATION_INTERVAL,
             records: Sequence[alerts.Record] | None = None, read: Needs | None = None) -> list[Timeline]:
    """When each rule fires, evaluated every ``every`` seconds from 0 (pending for its ``for``), fed what the
    rules read.

    A rule that yields no series at any evaluation gets one timeline of its own that never fires.
    ``read`` is :func:`needs` of the rules, when the caller has it.
    """
    if every % STEP:
        raise ValueError(f"evaluations every {every}s do not line up with scrapes every {STEP}s")
    evaluations = ((inputs.steps - 1) * STEP) // every + 1
    records = list(records) if records is not None else alerts.records(plan)
    fed_series = series_of(plan, inputs, read if read is not None else needs(plan, rules, records), records)
    given = frozenset(i for i, record in enumerate(records) if fed(plan, record))
    world = World(plan, fed_series, [k * every for k in range(evaluations)], records, given)
    out = []
    for rule in rules:
        result = world.vector(rule.expr)
        found = False
        for labels, values in sorted(result.items()):
            if all(v is None for v in values):
                continue
            found = True
            out.append(Timeline(rule, every, _pending(values, rule.for_, every), _alert_labels(labels, rule)))
        if not found:
            out.append(Timeline(rule, every, (None,) * evaluations, _alert_labels((), rule)))
    return out


def _alert_labels(labels: Labels, rule: alerts.AlertRule) -> Labels:
    merged = dict(_without_name(labels))
    merged.update(dict(rule.labels))
    return tuple(sorted((k, v) for k, v in merged.items() if v != ""))


def _pending(values: Values, for_: int, every: int) -> tuple[float | None, ...]:
    active_since: int | None = None
    firing: list[float | None] = []
    for k, value in enumerate(values):
        if value is None:
            active_since = None
            firing.append(None)
            continue
        if active_since is None:
            active_since = k
        firing.append(value if (k - active_since) * every >= for_ else None)
    return tuple(firing)
