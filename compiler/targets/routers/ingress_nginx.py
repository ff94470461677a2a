"""ingress-nginx: the stable Ingress and one canary Ingress for ``service.host`` and ``service.path``.

The controller (maintenance ended in March 2026; still widely run) splits
traffic between an Ingress and at most one canary Ingress per host and path,
configured by ``nginx.ingress.kubernetes.io/canary*`` annotations:

- ``canary-weight`` out of 100, or out of ``canary-weight-total`` for shares
  that are not whole percents.  The controller honours a total only above
  100 (``math.random(total) <= weight`` in its balancer), so 0.1% is weight 1
  of total 1000, never a rounded 0.
- testers: ``canary-by-header`` with ``canary-by-header-value`` (one value) or
  ``canary-by-header-pattern`` (several values, each regex-escaped, anchored).
  The controller drops, with only a log line, any header name or value
  outside ``^[/\\-._~a-zA-Z0-9:]*$`` and any weight that is not an integer;
  nginx itself ignores request headers whose names hold anything but
  letters, digits and ``-`` (``ignore-invalid-headers``,
  ``enable-underscores-in-headers: false``).  :func:`lint` reports these as
  errors at the spec node.
- shadow stages: ``mirror-target`` on the stable Ingress (annotations on a
  canary Ingress other than ``canary*`` are ignored).  The mirror copies every
  request; a partial mirror is an error for this target.

The canary Ingress's backend is ``<canary backend>:<port number>``, so the
controller's metrics label canary traffic ``canary="<namespace>-<backend>-<port>"``,
which is what the ``ingress-nginx`` metrics source queries.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from compiler.ir import shares
from compiler.ir.plan import Plan, StagePlan, VariantPlan
from compiler.targets import kube
from compiler.targets.base import MANIFEST, Finding, Target
from compiler.targets.routers import base as routing, escaping
from compiler.targets.routers.base import testers_reach_canary

NAME = "ingress-nginx"
API_VERSION = "networking.k8s.io/v1"
PREFIX = "nginx.ingress.kubernetes.io/"
CLUSTER_DOMAIN = "cluster.local"
DEFAULT_TOTAL = 100
MAX_TOTAL = 1_000_000

#: The controller's validator of canary-by-header, -value and -cookie (parser.BasicCharsRegex).
BASIC_CHARS = re.compile(r"^[/\-._~a-zA-Z0-9:]*$")
#: The controller's validator of canary-by-header-pattern and mirror-target (parser.IsValidRegex).
REGEX_CHARS = re.compile(r"^[/\-._~a-zA-Z0-9:^$\[\](){}*+?|&=\\]*$")
_PCRE_SPECIAL = set("\\^$.|?*+()[]{}")


# --------------------------------------------------------------------------- render


MAIN = f"{NAME}/ingress.yaml"
CANARY = f"{NAME}/ingress-canary.yaml"


def render(plan: Plan) -> dict[str, str]:
    if NAME not in plan.targets:
        return {}
    return {
        MAIN: kube.manifest(plan, stable_ingress(plan), _main_note(plan)),
        CANARY: kube.manifest(plan, canary_ingress(plan), _canary_note(plan)),
    }


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    if NAME not in plan.targets:
        return {}
    split, with_total = canary_weight(stage.route_weight)
    return {MAIN: stage.mirror > 0, CANARY: (split.canary, split.total, with_total, testers_reach_canary(plan, stage))}


def stable_ingress(plan: Plan) -> dict[str, Any]:
    annotations = mirror_annotations(plan) if plan.current.mirror > 0 else {}
    return _ingress(plan, plan.names.ingress, plan.stable, annotations)


def canary_ingress(plan: Plan) -> dict[str, Any]:
    return _ingress(plan, plan.names.canary_ingress, plan.canary, canary_annotations(plan))


def _ingress(plan: Plan, name: str, variant: VariantPlan, annotations: dict[str, str]) -> dict[str, Any]:
    backend = {"service": {"name": variant.backend, "port": {"number": variant.port}}}
    return {
        "apiVersion": API_VERSION,
        "kind": "Ingress",
        "metadata": kube.metadata(plan, name, annotations=annotations),
        "spec": {
            "ingressClassName": plan.ingress_class,
            "rules": [{
                "host": plan.host,
                "http": {"paths": [{"path": plan.path, "pathType": "Prefix", "backend": backend}]},
            }],
        },
    }


def canary_weight(share: Fraction) -> tuple[shares.Split, bool]:
    """The split out of 100, or out of a total above 100 (then ``True``: write canary-weight-total)."""
    weight = share * DEFAULT_TOTAL
    if weight.denominator == 1:
        return shares.Split(weight.numerator, DEFAULT_TOTAL, share), False
    return shares.exact_split(share, DEFAULT_TOTAL + 1, MAX_TOTAL), True


def canary_annotations(plan: Plan) -> dict[str, str]:
    split, with_total = canary_weight(plan.current.route_weight)
    out = {PREFIX + "canary": "true", PREFIX + "canary-weight": str(split.canary)}
    if with_total:
        out[PREFIX + "canary-weight-total"] = str(split.total)
    if plan.testers is not None and testers_reach_canary(plan, plan.current):
        out[PREFIX + "canary-by-header"] = plan.testers.header
        values = plan.testers.values
        if len(values) == 1:
            out[PREFIX + "canary-by-header-value"] = values[0]
        else:
            out[PREFIX + "canary-by-header-pattern"] = header_pattern(values)
    return out


def pcre_escape(value: str) -> str:
    return "".join("\\" + ch if ch in _PCRE_SPECIAL else ch for ch in value)


def header_pattern(values: tuple[str, ...]) -> str:
    """A PCRE matching exactly one of ``values`` (the controller's match is unanchored)."""
    return "^(" + "|".join(pcre_escape(v) for v in values) + ")$"


def mirror_target(plan: Plan) -> str:
    variant = plan.canary
    return f"http://{variant.backend}.{plan.namespace}.svc.{CLUSTER_DOMAIN}:{variant.port}$request_uri"


def mirror_annotations(plan: Plan) -> dict[str, str]:
    out = {PREFIX + "mirror-target": mirror_target(plan), PREFIX + "mirror-request-body": "on"}
    if not plan.host.startswith("*."):
        out[PREFIX + "mirror-host"] = plan.host  # the copy carries the Host users sent
    return out


def _main_note(plan: Plan) -> str:
    if plan.current.mirror == 0:
        return (
            "ingress-nginx main Ingress: every request the canary Ingress does not take goes to stable.\nMirror: none."
        )
    return ("ingress-nginx main Ingress: every request the canary Ingress does not take goes to stable.\n"
            f"Mirror: every request copied to {plan.canary.backend} (ingress-nginx mirrors all or nothing).")


def _canary_note(plan: Plan) -> str:
    split, with_total = canary_weight(plan.current.route_weight)
    total = f"canary-weight-total {split.total}" if with_total else "no canary-weight-total (100)"
    lines = ["ingress-nginx canary Ingress.",
             f"Router share to {plan.canary.backend}: {split.describe()}; canary-weight {split.canary}, {total}."]
    if testers_reach_canary(plan, plan.current):
        assert plan.testers is not None
        lines.append(f"Testers ({plan.testers.header}: {', '.join(plan.testers.values)}) reach {plan.canary.backend}.")
    else:
        lines.append("Testers: none reach the canary.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- lint


def lint(plan: Plan) -> list[Finding]:
    if NAME not in plan.targets:
        return []
    split_of = lambda stage: canary_weight(stage.route_weight)[0]  # noqa: E731
    return _tester_findings(plan) + routing.capability_findings(plan, NAME, split_of)


def _tester_findings(plan: Plan) -> list[Finding]:
    testers = plan.testers
    if testers is None:
        return []
    out = []
    if not escaping.NGINX_HEADER.fullmatch(testers.header):  # nginx drops other request headers by default
        out.append(Finding(
            ("traffic", "testers", "header"),
            f"ingress-nginx: header '{testers.header}' would be dropped (nginx ignores request headers "
            "whose names hold anything but letters, digits and '-'): use letters, digits and '-' only",
            "error", NAME,
        ))
    for i, value in enumerate(testers.values):
        if not BASIC_CHARS.fullmatch(value):
            out.append(Finding(
                ("traffic", "testers", "values", i),
                f"ingress-nginx: tester value '{value}' would be dropped by the controller "
                "(canary-by-header values allow only letters, digits and / - . _ ~ :)",
                "error", NAME,
            ))
    return out


TARGET: Target = Target(NAME, render, lint, rollback=True,
                        kinds={MAIN: MANIFEST, CANARY: MANIFEST}, stage_keys=stage_keys)
