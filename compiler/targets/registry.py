"""The registry: every target, summary and fleet target, in the order they run."""

from __future__ import annotations

from compiler.targets import fleets, flagd, gitops, kustomize, plan_md, rollback
from compiler.targets.base import FleetTarget, Summary, Target
from compiler.targets.observability import alertmanager, grafana, prometheus, scrape
from compiler.targets.routers import gateway_api, haproxy, ingress_nginx, istio, kube_service, nginx

REGISTRY: tuple[Target, ...] = (
    gateway_api.TARGET,
    ingress_nginx.TARGET,
    istio.TARGET,
    kube_service.TARGET,
    haproxy.TARGET,
    nginx.TARGET,
    prometheus.TARGET,
    scrape.TARGET,
    alertmanager.TARGET,
    grafana.TARGET,
    flagd.TARGET,
    rollback.TARGET,
    gitops.TARGET,
)
SUMMARIES: tuple[Summary, ...] = (
    kustomize.SUMMARY,
    plan_md.SUMMARY,
)
FLEET: tuple[FleetTarget, ...] = fleets.FLEET
