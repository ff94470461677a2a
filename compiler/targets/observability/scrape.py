"""prometheus/scrape-*: what makes the series the gates read exist, for Prometheus as it runs.

- ``prometheus/scrape-config.yaml``: a ``scrape_configs`` fragment for a Prometheus configured by hand
  (``scrape_config_files`` needs Prometheus 2.43, so merge it into ``prometheus.yml``), one job per
  exporter the metrics source reads, every ``metrics.scrape_interval``:
  - ``haproxy``: HAProxy's exporter on every ``traffic.haproxy.hosts`` at ``traffic.haproxy.exporter_port``;
  - ``generic``: the application on each variant's servers, labelled as the generic source selects it
    (``namespace``, the workload label and ``version``);
- ``prometheus/scrape-targets.json``: the same targets for file-based discovery (``file_sd_configs``), for
  a Prometheus whose jobs read a folder of such files;
- ``prometheus/monitor.yaml`` with ``metrics.monitor``: a Prometheus Operator ServiceMonitor or PodMonitor
  for the application's pods in the rollout's namespace.

The ingress-nginx controller and Istio's proxies are scraped as their installations set up (their own
ServiceMonitors or scrape jobs): nothing is written for them. None of these files depends on the stage.
"""

from __future__ import annotations

from typing import Any

from compiler import serialize
from compiler.gates import conventions
from compiler.ir.plan import Plan
from compiler.spec.units import format_duration
from compiler.targets import kube
from compiler.targets.base import CONFIG, MANIFEST, Target

NAME = "scrape"
SNIPPET = "prometheus/scrape-config.yaml"
TARGETS = "prometheus/scrape-targets.json"
MONITOR = "prometheus/monitor.yaml"


def groups(plan: Plan) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(job suffix, metrics path, file_sd target groups) of each exporter the metrics source reads."""
    identity = conventions.identity(plan)
    out = []
    if plan.metrics.source == "haproxy" and "haproxy" in plan.targets:
        targets = [f"{host}:{plan.haproxy.exporter_port}" for host in plan.haproxy.hosts]
        out.append(("haproxy", "/metrics", [{"targets": targets, "labels": dict(identity)}]))
    if plan.metrics.source == "generic":
        found = []
        for variant in (plan.stable, plan.canary):
            counters = plan.metrics.queries(variant.role).counters
            if variant.servers and counters is not None:
                labels = {name: value for name, op, value in counters.labels if op == "="}
                found.append({"targets": [server.address for server in variant.servers], "labels": labels})
        if found:
            out.append(("generic", "/metrics", found))
    return out


def _job(plan: Plan, suffix: str) -> str:
    return f"rollout-{plan.out.replace('/', '-')}-{suffix}"


def snippet(plan: Plan, found: list[tuple[str, str, list[dict[str, Any]]]] | None = None) -> dict[str, Any]:
    """The scrape jobs of the exporters :func:`groups` finds (or found already)."""
    found = groups(plan) if found is None else found
    interval = format_duration(plan.metrics.scrape_interval)
    return {"scrape_configs": [
        {"job_name": _job(plan, suffix), "scrape_interval": interval, "metrics_path": path,
         "honor_labels": False, "static_configs": targets}
        for suffix, path, targets in found
    ]}


def monitor(plan: Plan) -> dict[str, Any]:
    spec = plan.metrics.monitor
    assert spec is not None
    endpoint = {"port": spec.port, "path": spec.path, "interval": format_duration(plan.metrics.scrape_interval)}
    service = spec.kind == "ServiceMonitor"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": spec.kind,
        "metadata": kube.metadata(plan, f"{plan.name}-rollout", {"app.kubernetes.io/component": "monitoring"}),
        "spec": {
            "selector": {"matchLabels": dict(spec.selector)},
            "namespaceSelector": {"matchNames": [plan.namespace]},
            ("endpoints" if service else "podMetricsEndpoints"): [endpoint],
        },
    }


def render(plan: Plan) -> dict[str, str]:
    files: dict[str, str] = {}
    found = groups(plan)
    if found:
        header = serialize.header(plan.source.path) + (
            "\nA scrape_configs fragment for prometheus.yml (Prometheus 2.42 has no scrape_config_files): the "
            "exporters whose series the gates read.")
        files[SNIPPET] = serialize.yaml_text(snippet(plan, found), header)
        files[TARGETS] = serialize.json_text([group for _, _, groups_ in found for group in groups_])
    if plan.metrics.monitor is not None:
        files[MONITOR] = kube.manifest(plan, monitor(plan))
    return files


TARGET: Target = Target(NAME, render, kinds={SNIPPET: CONFIG, TARGETS: CONFIG, MONITOR: MANIFEST})
