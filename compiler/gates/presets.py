"""The ``metrics.source`` presets: PromQL templates for one variant's traffic.

Each preset gives, per variant, three templates:

- ``requests``: requests per second over ``$window``;
- ``errors``: failed (5xx) requests per second over ``$window``;
- ``latency``: the ``$quantile`` latency in seconds over ``$window``, or
  ``None`` when the exporter publishes no latency histogram (HAProxy).

Metric and label names are those the exporters publish:

- generic: ``http_requests_total{service, version, code}`` and
  ``http_request_duration_seconds_bucket{service, version, le}``;
- ingress-nginx: ``nginx_ingress_controller_requests`` and
  ``nginx_ingress_controller_request_duration_seconds_bucket`` with
  ``namespace``, ``ingress`` (the main Ingress), ``status`` and ``canary``
  (``<namespace>-<canary service>-<port>`` for canary traffic, empty for stable);
- istio: ``istio_requests_total`` and ``istio_request_duration_milliseconds_bucket``
  (``reporter="destination"``, ``destination_service_namespace``,
  ``destination_version``, ``response_code``);
- haproxy: ``haproxy_backend_http_requests_total`` and
  ``haproxy_backend_http_responses_total{code="5xx"}`` per ``proxy`` (backend);
  no latency histogram.
"""

from __future__ import annotations

from dataclasses import dataclass

import promql_parser


@dataclass(frozen=True)
class VariantQueries:
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


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal (Go escaping)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def selector(labels: list[tuple[str, str, str]]) -> str:
    """``[("service", "=", "checkout")]`` -> ``{service="checkout"}``."""
    return "{" + ",".join(f"{name}{op}{promql_string(value)}" for name, op, value in labels) + "}"


def _rate(metric: str, labels: list[tuple[str, str, str]]) -> str:
    return f"sum(rate({metric}{selector(labels)}[$window]))"


def _quantile(metric: str, labels: list[tuple[str, str, str]], scale: str = "") -> str:
    return f"histogram_quantile($quantile, sum by (le) (rate({metric}{selector(labels)}[$window]))){scale}"


def preset(source: str, name: str, namespace: str, main_ingress: str, variant: VariantLabels,
           namespace_label: str = "namespace") -> VariantQueries:
    if source == "generic":
        labels = [("service", "=", name), ("version", "=", variant.version)]
        errors = labels + [("code", "=~", "5..")]
        return VariantQueries(
            _rate("http_requests_total", labels),
            _rate("http_requests_total", errors),
            _quantile("http_request_duration_seconds_bucket", labels),
        )
    if source == "ingress-nginx":
        canary = f"{namespace}-{variant.backend}-{variant.port}" if variant.role == "canary" else ""
        labels = [(namespace_label, "=", namespace), ("ingress", "=", main_ingress), ("canary", "=", canary)]
        errors = labels + [("status", "=~", "5..")]
        return VariantQueries(
            _rate("nginx_ingress_controller_requests", labels),
            _rate("nginx_ingress_controller_requests", errors),
            _quantile("nginx_ingress_controller_request_duration_seconds_bucket", labels),
        )
    if source == "istio":
        labels = [
            ("reporter", "=", "destination"),
            ("destination_service_namespace", "=", namespace),
            ("destination_service_name", "=", variant.backend),  # the variant's Service: no other workload's
            ("destination_version", "=", variant.version),
        ]
        errors = labels + [("response_code", "=~", "5..")]
        return VariantQueries(
            _rate("istio_requests_total", labels),
            _rate("istio_requests_total", errors),
            _quantile("istio_request_duration_milliseconds_bucket", labels, " / 1000"),
        )
    if source == "haproxy":
        labels = [("proxy", "=", variant.backend)]
        return VariantQueries(
            _rate("haproxy_backend_http_requests_total", labels),
            _rate("haproxy_backend_http_responses_total", labels + [("code", "=", "5xx")]),
            None,
        )
    raise ValueError(f"unknown metrics source {source!r}")


def substitute(template: str, variant: VariantLabels | None = None, window: str | None = None, quantile: str | None = None) -> str:
    text = template
    if variant is not None:
        text = (
            text.replace("$variant", promql_label_safe(variant.role))
            .replace("$version", promql_label_safe(variant.version))
            .replace("$backend", promql_label_safe(variant.backend))
        )
    if window is not None:
        text = text.replace("$window", window)
    if quantile is not None:
        text = text.replace("$quantile", quantile)
    return text


def promql_label_safe(value: str) -> str:
    """A value substituted inside a template's quotes: validated label-safe already, escaped anyway."""
    return promql_string(value)[1:-1]


def parse_error(expression: str) -> str | None:
    """``None`` when ``expression`` parses as PromQL, else the parser's message."""
    try:
        promql_parser.parse(expression)
    except Exception as exc:  # the parser raises ValueError, and others for some inputs
        return str(exc) or type(exc).__name__
    return None


def check_template(template: str) -> str | None:
    """Parse a template with sample values in every placeholder."""
    sample = VariantLabels("canary", "v1", "backend", 80)
    return parse_error(substitute(template, sample, "5m", "0.99"))
