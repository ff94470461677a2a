"""What each ``metrics.source`` reads, as data: the counters and histogram of one variant.

A preset names the metric an exporter publishes, the label matchers that
select one variant's requests, how a failed request is told apart (a label
matching a pattern, or a counter of its own) and the latency histogram with its
unit.  :class:`VariantMetrics` prints the queries from that data
(``sum(rate(...[5m]))``, ``histogram_quantile(...)``) as trees of
:mod:`compiler.gates.algebra`; the simulator writes input series from the same
data (an ``ok`` and a ``failed`` sample value per error label), so nothing is
parsed back from text.

- generic: ``http_requests_total{service, version, code}`` and
  ``http_request_duration_seconds_bucket{service, version, le}``;
- ingress-nginx: ``nginx_ingress_controller_requests`` and
  ``nginx_ingress_controller_request_duration_seconds_bucket`` with
  ``namespace``, ``ingress`` (the main Ingress), ``status`` and ``canary``
  (``<namespace>-<canary service>-<port>`` for canary traffic, empty for stable);
- istio: ``istio_requests_total`` and ``istio_request_duration_milliseconds_bucket``
  (``reporter="destination"``, ``destination_service_namespace``,
  ``destination_service_name``, ``destination_version``, ``response_code``);
- haproxy: ``haproxy_backend_http_requests_total`` and
  ``haproxy_backend_http_responses_total{code="5xx"}`` per ``proxy`` (backend);
  no latency histogram;
- custom: the spec's PromQL templates (``$variant``, ``$version``,
  ``$backend``, ``$namespace``, ``$window``, ``$quantile``), kept as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import promql_parser

from compiler.gates.algebra import Call, Expr, Matcher, Selector, label_value, rate, text, total, window


@dataclass(frozen=True)
class ErrorLabel:
    """A failed request is one whose ``label`` matches ``pattern``; sample values of each kind for made-up series."""

    label: str
    pattern: str
    failed: str
    ok: str

    @property
    def matcher(self) -> Matcher:
        return (self.label, "=~", self.pattern)


@dataclass(frozen=True)
class Counters:
    """Where one variant's requests are counted, and its failed requests among them."""

    metric: str
    labels: tuple[Matcher, ...]  # equality matchers selecting the variant
    error_label: ErrorLabel | None = None  # failed requests: the same counter, told apart by a label
    error_metric: str | None = None  # ... or a counter of its own,
    error_labels: tuple[Matcher, ...] = ()  # selected with these matchers

    def requests(self) -> Selector:
        return Selector(self.metric, self.labels)

    def errors(self) -> Selector:
        if self.error_label is not None:
            return Selector(self.metric, self.labels + (self.error_label.matcher,))
        assert self.error_metric is not None
        return Selector(self.error_metric, self.error_labels)


@dataclass(frozen=True)
class Histogram:
    metric: str  # ..._bucket
    labels: tuple[Matcher, ...]
    unit: float  # bucket bounds are seconds times this (1000: milliseconds)


@dataclass(frozen=True)
class Templates:
    """The ``custom`` source: one variant's PromQL templates, placeholders of the variant filled in."""

    requests: str
    errors: str
    latency: str | None


@dataclass(frozen=True)
class VariantLabels:
    """What a preset needs to know about one variant."""

    role: str  # stable | canary
    version: str
    backend: str
    port: int
    namespace: str = ""


@dataclass(frozen=True)
class VariantMetrics:
    """The queries of one variant: from exporter counters and a histogram, or from templates."""

    counters: Counters | None
    histogram: Histogram | None
    templates: Templates | None = None
    quantile_levels: bool = True  # the latency can be asked at any quantile level

    @property
    def has_latency(self) -> bool:
        return self.histogram is not None or (self.templates is not None and self.templates.latency is not None)

    def requests(self, seconds: int) -> Expr:
        """Requests per second over the window."""
        if self.templates is not None:
            return text(substitute(self.templates.requests, window=window(seconds)))
        assert self.counters is not None
        return total(rate(self.counters.requests(), seconds))

    def errors(self, seconds: int) -> Expr:
        """Failed requests per second over the window."""
        if self.templates is not None:
            return text(substitute(self.templates.errors, window=window(seconds)))
        assert self.counters is not None
        return total(rate(self.counters.errors(), seconds))

    def latency(self, quantile: Expr, seconds: int) -> Expr:
        """The latency (seconds) at a quantile level (a number, or ``scalar(...)`` of an expression)."""
        if self.templates is not None:
            assert self.templates.latency is not None
            return text(substitute(self.templates.latency, window=window(seconds)), {"$quantile": quantile})
        h = self.histogram
        assert h is not None
        value: Expr = Call(
            "histogram_quantile", (quantile, total(rate(Selector(h.metric, h.labels), seconds), ("le",)))
        )
        return value / h.unit if h.unit != 1 else value

    def latency_takes_a_level(self) -> bool:
        """The latency query can be asked at any quantile level (``$quantile`` used as a number)."""
        if self.templates is None or self.templates.latency is None:
            return self.quantile_levels
        return quantile_is_scalar(self.templates.latency)


STATUS_5XX = "5.."


def _histogram(metric: str, labels: list[Matcher], unit: float = 1.0) -> Histogram:
    return Histogram(metric, tuple(labels), unit)


@dataclass(frozen=True)
class Scrape:
    """How the series of a rollout are labelled where they are scraped (``metrics.*`` of the spec)."""

    namespace_label: str = "namespace"
    workload_label: str = "service"
    workload: str = "name"  # name: the rollout's name and a version label; backend: each variant's Service


def preset(source: str, name: str, namespace: str, main_ingress: str, variant: VariantLabels,
           scrape: Scrape = Scrape()) -> VariantMetrics:
    namespace_label = scrape.namespace_label
    if source == "generic":
        labels: list[Matcher] = [(namespace_label, "=", namespace)]
        if scrape.workload == "backend":
            labels.append((scrape.workload_label, "=", variant.backend))
        else:
            labels += [(scrape.workload_label, "=", name), ("version", "=", variant.version)]
        return VariantMetrics(
            Counters("http_requests_total", tuple(labels), ErrorLabel("code", STATUS_5XX, "500", "200")),
            _histogram("http_request_duration_seconds_bucket", labels),
        )
    if source == "ingress-nginx":
        canary = f"{namespace}-{variant.backend}-{variant.port}" if variant.role == "canary" else ""
        labels = [(namespace_label, "=", namespace), ("ingress", "=", main_ingress), ("canary", "=", canary)]
        return VariantMetrics(
            Counters(
                "nginx_ingress_controller_requests", tuple(labels), ErrorLabel("status", STATUS_5XX, "500", "200")
            ),
            _histogram("nginx_ingress_controller_request_duration_seconds_bucket", labels),
        )
    if source == "istio":
        labels = [
            ("reporter", "=", "destination"),
            ("destination_service_namespace", "=", namespace),
            ("destination_service_name", "=", variant.backend),  # the variant's Service: no other workload's
            ("destination_version", "=", variant.version),
        ]
        return VariantMetrics(
            Counters("istio_requests_total", tuple(labels), ErrorLabel("response_code", STATUS_5XX, "500", "200")),
            _histogram("istio_request_duration_milliseconds_bucket", labels, 1000.0),
        )
    if source == "haproxy":
        labels = [(namespace_label, "=", namespace), ("proxy", "=", variant.backend)]
        return VariantMetrics(
            Counters("haproxy_backend_http_requests_total", tuple(labels),
                     error_metric="haproxy_backend_http_responses_total", error_labels=(*labels, ("code", "=", "5xx"))),
            None,
        )
    raise ValueError(f"unknown metrics source {source!r}")


def from_templates(requests: str, errors: str, latency: str | None, variant: VariantLabels) -> VariantMetrics:
    return VariantMetrics(None, None, Templates(substitute(requests, variant), substitute(errors, variant),
                                                substitute(latency, variant) if latency else None))


# --------------------------------------------------------------------------- templates


def substitute(template: str, variant: VariantLabels | None = None, window: str | None = None,
               quantile: str | None = None) -> str:
    text = template
    if variant is not None:
        text = (
            text.replace("$variant", label_safe(variant.role))
            .replace("$version", label_safe(variant.version))
            .replace("$backend", label_safe(variant.backend))
            .replace("$namespace", label_safe(variant.namespace))
        )
    if window is not None:
        text = text.replace("$window", window)
    if quantile is not None:
        text = text.replace("$quantile", quantile)
    return text


def label_safe(value: str) -> str:
    """A value substituted inside a template's quotes: validated label-safe already, escaped anyway."""
    return label_value(value)


_QUOTED_QUANTILE = re.compile(r"""(["'`])[^"'`]*\$quantile[^"'`]*\1""")


def quantile_is_scalar(template: str) -> bool:
    """``$quantile`` is used as a number (``histogram_quantile($quantile, ...)``), not inside a label value."""
    return not _QUOTED_QUANTILE.search(template)


def parse_error(expression: str) -> str | None:
    """``None`` when ``expression`` parses as PromQL, else the parser's message."""
    try:
        promql_parser.parse(expression)
    except Exception as exc:  # the parser raises ValueError, and others for some inputs
        return str(exc) or type(exc).__name__
    return None


SAMPLE = VariantLabels("canary", "v1", "backend", 80, "namespace")


def check_template(template: str) -> str | None:
    """Parse a template with sample values in every placeholder."""
    return parse_error(substitute(template, SAMPLE, "5m", "0.99"))


def yields_a_number(query: str) -> bool:
    """A query that is a number literal once its placeholders are filled (it needs no series)."""
    try:
        return isinstance(promql_parser.parse(substitute(query, SAMPLE, "5m", "0.99")), promql_parser.NumberLiteral)
    except Exception:  # an unparsable query is a lint error of its own
        return False


def selected_metrics(query: str) -> frozenset[str]:
    """The metric names a query's selectors read once its placeholders are filled ("" for a selector without
    a plain name, such as ``{__name__=~"..."}``); none for a query that does not parse (a lint error of its own)."""
    try:
        tree = promql_parser.parse(substitute(query, SAMPLE, "5m", "0.99"))
    except Exception:  # the parser raises ValueError, and others for some inputs
        return frozenset()
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name or "")

    promql_parser.walk(tree, visit)
    return frozenset(names)
