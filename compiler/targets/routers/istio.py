"""istio: a VirtualService and two DestinationRules (``networking.istio.io/v1``) for mesh traffic.

Hosts.  The VirtualService takes the traffic mesh clients send to the stable
Service (``service.stable.backend``, the name they already call) and routes it
to two hosts: the stable Service and the canary Service
(``service.canary.backend``).  It binds to the mesh only (no ``gateways``).
With ``traffic.istio.gateways``, a second VirtualService binds those Istio
Gateways and splits their traffic for ``service.host`` the same way, on
``service.path`` only (the host's other paths may belong to other services);
without it, north-south traffic is routed by the gateway-api or ingress-nginx
target.  Short Service names resolve in the rollout's namespace, where every
object is.

Subsets.  Each host has a DestinationRule with one subset, ``stable`` or
``canary``, selecting the pods labelled ``version: <service.<variant>.version>``:
the label Istio reports as ``destination_version``, which the ``istio``
metrics source queries.  Pods must carry it.  A blue-green rollout has no
version subsets: its Services select pods by colour, and the active
Service's selector changes at the switch, so its rules route to the Services.

Routes, in order: testers (one match per tester value, header name in lower
case, ``exact`` value), the split (weights out of 100 for a whole percent,
which every Istio release accepts; else relative weights, which Istio divides
by their sum, so 0.1% is exactly 1 : 999; a share of 0 or 100% is one destination),
with ``mirror`` and ``mirrorPercentage`` in a shadow stage, and, when
``service.path`` is not ``/``, a last route that keeps every other path on
stable.  A path matches whole segments (``exact: /api`` or ``prefix: /api/``).
``traffic.sticky`` becomes a consistent-hash load balancer (header or cookie).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from compiler.ir.plan import Plan, StagePlan, VariantPlan
from compiler.spec.units import format_percent
from compiler.targets import kube
from compiler.targets.base import MANIFEST, Finding, Target
from compiler.targets.routers import base as routing
from compiler.targets.routers.base import percent_split as route_split, testers_reach_canary

NAME = "istio"
API_VERSION = "networking.istio.io/v1"
VERSION_LABEL = "version"


# --------------------------------------------------------------------------- render


VIRTUAL_SERVICE = f"{NAME}/virtualservice.yaml"
GATEWAY_SERVICE = f"{NAME}/virtualservice-gateway.yaml"
STABLE_RULE = f"{NAME}/destinationrule-stable.yaml"
CANARY_RULE = f"{NAME}/destinationrule-canary.yaml"


def render(plan: Plan) -> dict[str, str]:
    if NAME not in plan.targets:
        return {}
    # The split lives in the VirtualServices; the DestinationRules are the same at every stage.
    out = {
        VIRTUAL_SERVICE: kube.manifest(plan, virtual_service(plan), _note(plan)),
        STABLE_RULE: kube.manifest(plan, destination_rule(plan, plan.names.destination_rule, plan.stable)),
        CANARY_RULE: kube.manifest(plan, destination_rule(plan, plan.names.canary_destination_rule, plan.canary)),
    }
    if plan.istio_gateways:
        out[GATEWAY_SERVICE] = kube.manifest(plan, gateway_service(plan), _note(plan))
    return out


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    if NAME not in plan.targets:
        return {}
    split = route_split(stage)
    key = (split.canary, split.total, stage.mirror, testers_reach_canary(plan, stage))
    return {VIRTUAL_SERVICE: key, **({GATEWAY_SERVICE: key} if plan.istio_gateways else {})}


def uses_subsets(plan: Plan) -> bool:
    return plan.blue_green is None


def destination(plan: Plan, variant: VariantPlan, weight: int | None = None) -> dict[str, Any]:
    target: dict[str, Any] = {"host": variant.backend, "port": {"number": variant.port}}
    if uses_subsets(plan):
        target["subset"] = variant.role
    out: dict[str, Any] = {"destination": target}
    if weight is not None:
        out["weight"] = weight
    return out


def uri_matches(path: str) -> list[dict[str, Any]]:
    """Matches of ``path`` as whole segments; ``[]`` for ``/`` (everything)."""
    scope = routing.PathScope(path)
    if scope.everything:
        return []
    return [{"uri": {"exact": scope.stem}}, {"uri": {"prefix": scope.below}}]


def tester_route(plan: Plan) -> dict[str, Any]:
    assert plan.testers is not None
    header = plan.testers.header.lower()
    uris = uri_matches(plan.path) or [{}]
    matches = [
        {**uri, "headers": {header: {"exact": value}}}
        for value in plan.testers.values
        for uri in uris
    ]
    return {"name": "testers", "match": matches, "route": [destination(plan, plan.canary)]}


def split_route(plan: Plan) -> dict[str, Any]:
    stage = plan.current
    split = route_split(stage)
    if split.canary == 0:
        route = [destination(plan, plan.stable)]
    elif split.stable == 0:
        route = [destination(plan, plan.canary)]
    else:
        route = [destination(plan, plan.stable, split.stable), destination(plan, plan.canary, split.canary)]
    out: dict[str, Any] = {"name": "split"}
    matches = uri_matches(plan.path)
    if matches:
        out["match"] = matches
    out["route"] = route
    if stage.mirror > 0:
        mirror = destination(plan, plan.canary)["destination"]
        out["mirror"] = mirror
        out["mirrorPercentage"] = {"value": mirror_percentage(stage.mirror)}
    return out


def virtual_service(plan: Plan) -> dict[str, Any]:
    routes = []
    if testers_reach_canary(plan, plan.current):
        routes.append(tester_route(plan))
    routes.append(split_route(plan))
    if uri_matches(plan.path):
        routes.append({"name": "other-paths", "route": [destination(plan, plan.stable)]})
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": kube.metadata(plan, plan.names.virtual_service),
        "spec": {"hosts": [plan.stable.backend], "http": routes},
    }


def gateway_service(plan: Plan) -> dict[str, Any]:
    """The VirtualService of the Istio Gateways: ``service.host`` on ``service.path``, split as in the mesh."""
    routes = []
    if testers_reach_canary(plan, plan.current):
        routes.append(tester_route(plan))
    routes.append(split_route(plan))
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": kube.metadata(plan, f"{plan.names.virtual_service}-gateway"),
        "spec": {"hosts": [plan.host], "gateways": list(plan.istio_gateways), "http": routes},
    }


def destination_rule(plan: Plan, name: str, variant: VariantPlan) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": variant.backend}
    policy = traffic_policy(plan)
    if policy:
        spec["trafficPolicy"] = policy
    if uses_subsets(plan):
        spec["subsets"] = [{"name": variant.role, "labels": {VERSION_LABEL: variant.version}}]
    return {
        "apiVersion": API_VERSION,
        "kind": "DestinationRule",
        "metadata": kube.metadata(plan, name),
        "spec": spec,
    }


def traffic_policy(plan: Plan) -> dict[str, Any]:
    sticky = plan.sticky
    if sticky is None:
        return {}
    if sticky.kind == "header":
        hash_on: dict[str, Any] = {"httpHeaderName": sticky.name.lower()}
    else:
        # Istio's webhook refuses an httpCookie without a ttl; 0s makes the cookie Envoy sets for a client that
        # has none a session cookie (it hashes the application's own cookie where the client sends one).
        hash_on = {"httpCookie": {"name": sticky.name, "ttl": "0s"}}
    return {"loadBalancer": {"consistentHash": hash_on}}


def mirror_percentage(share: Fraction) -> float:
    return float(share * 100)


def _note(plan: Plan) -> str:
    stage = plan.current
    split = route_split(stage)
    weights = f"weights {plan.stable.backend} {split.stable} : {plan.canary.backend} {split.canary}"
    value = mirror_percentage(stage.mirror)
    error = Fraction(value) / 100 - stage.mirror
    exact = "exact" if error == 0 else "the nearest double"
    mirror = f"mirrorPercentage {value!r} to {plan.canary.backend} (spec {format_percent(stage.mirror)}, {exact})"
    return routing.note(plan, "istio VirtualService", split, weights, mirror)


# --------------------------------------------------------------------------- lint


# Istio's validating webhook takes header match keys of letters, digits, '-' and '_' only
# (pkg/config/validation: validHeaderRegex), although HTTP allows more in a header name.
MATCH_HEADER = re.compile(r"^[-_A-Za-z0-9]+$")


def lint(plan: Plan) -> list[Finding]:
    if NAME not in plan.targets:
        if plan.istio_gateways:
            return [Finding(("traffic", "istio", "gateways"), "traffic.istio.gateways is read by the istio target "
                            "only, which `traffic.targets` does not list: no VirtualService binds these Gateways",
                            "warning", NAME)]
        return []
    out: list[Finding] = []
    if plan.testers is not None and not MATCH_HEADER.fullmatch(plan.testers.header):
        out.append(Finding(
            ("traffic", "testers", "header"),
            f"istio: header '{plan.testers.header}' cannot be matched: Istio accepts header match keys of "
            "letters, digits, '-' and '_' only",
            "error", NAME,
        ))
    return out + routing.capability_findings(plan, NAME, route_split)


TARGET: Target = Target(NAME, render, lint, rollback=True,
                kinds={VIRTUAL_SERVICE: MANIFEST, GATEWAY_SERVICE: MANIFEST, STABLE_RULE: MANIFEST,
                       CANARY_RULE: MANIFEST}, stage_keys=stage_keys)
