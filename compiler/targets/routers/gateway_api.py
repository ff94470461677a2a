"""gateway-api: one HTTPRoute (``gateway.networking.k8s.io/v1``) realising the stage in effect.

The route attaches to ``traffic.gateway`` (or to the Gateway named
``gateway`` in the rollout's namespace, with a lint warning) and matches
``service.host`` and ``service.path`` (``PathPrefix``, which matches whole
path segments).  Its rules:

1. testers: one match per tester value (``Exact`` header match); sends
   everything to the canary Service.  A match with header conditions takes
   precedence over one without on the same path, and the rule comes first.
2. split: the stage's router share as relative backendRef weights (integers up
   to 1,000,000 per backend, so 0.1% is exactly 1 : 999), plus a
   ``RequestMirror`` filter to the canary Service in a shadow stage (no
   ``percent``/``fraction`` field means 100%; a partial mirror uses
   ``percent``, or ``fraction`` when the share is not a whole percent:
   standard since Gateway API v1.3).

Limits of the API respected here: at most 16 rules and 16 backendRefs per
rule (this route has 2 rules and 2 backendRefs), 64 matches per rule (the
tester rule has one per value: checked by :func:`lint`), and every Service
reference has a port.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from compiler.ir.plan import Plan, StagePlan, VariantPlan
from compiler.spec.units import format_percent
from compiler.targets import kube
from compiler.targets.base import MANIFEST, Finding, Target
from compiler.targets.routers import base as routing
from compiler.targets.routers.base import relative_split as route_split, testers_reach_canary

NAME = "gateway-api"
API_VERSION = "gateway.networking.k8s.io/v1"
DEFAULT_GATEWAY = "gateway"
MAX_MATCHES_PER_RULE = 64
MAX_INT32 = 2**31 - 1


# --------------------------------------------------------------------------- render


ROUTE = f"{NAME}/httproute.yaml"


def render(plan: Plan) -> dict[str, str]:
    if NAME not in plan.targets:
        return {}
    return {ROUTE: kube.manifest(plan, http_route(plan), _note(plan))}


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    if NAME not in plan.targets:
        return {}
    split = route_split(stage)
    return {ROUTE: (split.canary, split.total, stage.mirror, testers_reach_canary(plan, stage))}


def http_route(plan: Plan) -> dict[str, Any]:
    rules = []
    if testers_reach_canary(plan, plan.current):
        rules.append(tester_rule(plan))
    rules.append(split_rule(plan))
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": kube.metadata(plan, plan.names.http_route),
        "spec": {
            "parentRefs": [parent_ref(plan)],
            "hostnames": [plan.host],
            "rules": rules,
        },
    }


def parent_ref(plan: Plan) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
    gateway = plan.gateway
    if gateway is None:
        ref["name"] = DEFAULT_GATEWAY
        return ref
    ref["name"] = gateway.name
    if gateway.namespace:
        ref["namespace"] = gateway.namespace
    if gateway.section:
        ref["sectionName"] = gateway.section
    return ref


def _path_match(plan: Plan) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": plan.path}}


def _service_ref(variant: VariantPlan) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": variant.backend, "port": variant.port}


def tester_rule(plan: Plan) -> dict[str, Any]:
    assert plan.testers is not None
    matches = [
        {**_path_match(plan), "headers": [{"type": "Exact", "name": plan.testers.header, "value": value}]}
        for value in plan.testers.values
    ]
    return {"matches": matches, "backendRefs": [{**_service_ref(plan.canary), "weight": 1}]}


def split_rule(plan: Plan) -> dict[str, Any]:
    split = route_split(plan.current)
    rule: dict[str, Any] = {
        "matches": [_path_match(plan)],
        "backendRefs": [
            {**_service_ref(plan.stable), "weight": split.stable},
            {**_service_ref(plan.canary), "weight": split.canary},
        ],
    }
    if plan.current.mirror > 0:
        rule["filters"] = [mirror_filter(plan)]
    return rule


def mirror_filter(plan: Plan) -> dict[str, Any]:
    mirror: dict[str, Any] = {"backendRef": _service_ref(plan.canary)}
    mirror.update(mirror_share_fields(plan.current.mirror))
    return {"type": "RequestMirror", "requestMirror": mirror}


def mirror_share_fields(share: Fraction) -> dict[str, Any]:
    """``percent`` or ``fraction`` of a RequestMirror filter (nothing: 100%)."""
    if share >= 1:
        return {}
    percent = share * 100
    if percent.denominator == 1:
        return {"percent": percent.numerator}
    exact = share.limit_denominator(MAX_INT32)
    return {"fraction": {"numerator": exact.numerator, "denominator": exact.denominator}}


def mirror_realised(share: Fraction) -> Fraction:
    fields = mirror_share_fields(share)
    if "percent" in fields:
        return Fraction(fields["percent"], 100)
    if "fraction" in fields:
        return Fraction(fields["fraction"]["numerator"], fields["fraction"]["denominator"])
    return Fraction(1)


def _note(plan: Plan) -> str:
    stage = plan.current
    split = route_split(stage)
    weights = f"backendRef weights {plan.stable.backend} {split.stable} : {plan.canary.backend} {split.canary}"
    realised = mirror_realised(stage.mirror)
    error = "exact" if realised == stage.mirror else f"error {format_percent(realised - stage.mirror)}"
    mirror = (f"{format_percent(realised)} of requests copied to {plan.canary.backend} "
              f"(spec {format_percent(stage.mirror)}, {error})")
    return routing.note(plan, "gateway-api HTTPRoute", split, weights, mirror)


# --------------------------------------------------------------------------- lint


def lint(plan: Plan) -> list[Finding]:
    if NAME not in plan.targets:
        return []
    out: list[Finding] = []
    target_loc = ("traffic", "targets", plan.targets.index(NAME))
    if plan.gateway is None:
        out.append(Finding(
            target_loc,
            f"gateway-api: traffic.gateway is not set, so the HTTPRoute attaches to the Gateway "
            f"'{DEFAULT_GATEWAY}' in namespace '{plan.namespace}'; set traffic.gateway "
            "{name, namespace, section} to attach it elsewhere",
            "warning", NAME,
        ))
    if plan.testers is not None and len(plan.testers.values) > MAX_MATCHES_PER_RULE:
        out.append(Finding(
            ("traffic", "testers", "values", MAX_MATCHES_PER_RULE),
            f"gateway-api: an HTTPRoute rule holds at most {MAX_MATCHES_PER_RULE} matches; "
            f"give at most {MAX_MATCHES_PER_RULE} tester values",
            "error", NAME,
        ))
    return out + routing.capability_findings(plan, NAME, route_split, mirror_of=mirror_realised)


TARGET: Target = Target(NAME, render, lint, rollback=True, kinds={ROUTE: MANIFEST}, stage_keys=stage_keys)
