"""What the router targets share: the stage's traffic told in a file's header comment, and the
spec locations and warnings about shares and stickiness a router cannot honour.

Router targets (gateway-api, ingress-nginx, istio) call these; no target imports another.
"""

from __future__ import annotations

from compiler.spec.load import Loc
from compiler.ir.plan import Plan, StagePlan
from compiler.ir.shares import Split
from compiler.targets.base import Finding
from compiler.spec.units import format_percent


# Where the haproxy target writes its Runtime API rollback and where HAProxy listens for it; the
# rollback runbook names both.
HAPROXY_RUNTIME_ROLLBACK = "haproxy/runtime-rollback.txt"
HAPROXY_ADMIN_SOCKET = "/run/haproxy/admin.sock"


def note(plan: Plan, what: str, split: Split, weights: str, mirror: str) -> str:
    """The comment at the top of a router's file: the share it realises and its error against the spec."""
    stage = plan.current
    lines = [
        f"{what} at stage '{stage.name}' ({stage.kind}).",
        f"Router share to {plan.canary.backend}: {split.describe()}; {weights}.",
    ]
    if plan.blue_green is not None:
        bg = plan.blue_green
        serving = plan.canary if stage.active_color == bg.new_color else plan.stable
        lines.append(f"Blue-green: {plan.names.active_service} selects {bg.color_label}={stage.active_color} "
                     f"({serving.version}); users on the new version: {format_percent(stage.weight)}.")
    lines.append(f"Mirror: {mirror}." if stage.mirror > 0 else "Mirror: none.")
    if plan.testers is not None and stage.testers:
        lines.append(f"Testers ({plan.testers.header}: {', '.join(plan.testers.values)}) reach {plan.canary.backend}.")
    return "\n".join(lines)


def weight_loc(stage: StagePlan) -> Loc:
    return stage.loc + ("weight",) if stage.loc[:1] == ("stages",) else stage.loc


def mirror_loc(stage: StagePlan) -> Loc:
    return stage.loc + ("mirror",) if stage.loc[:1] == ("stages",) else stage.loc


def inexact_splits(plan: Plan, target: str, split_of) -> list[Finding]:
    """A warning at each stage whose share ``split_of(stage)`` cannot realise exactly."""
    out = []
    for stage in plan.stages:
        split = split_of(stage)
        if not split.exact:
            out.append(Finding(weight_loc(stage), f"{target}: {split.describe()}", "warning", target))
    return out


def unsticky(plan: Plan, target: str, how: str) -> list[Finding]:
    """A warning when ``traffic.sticky`` is set but the router splits each request on its own (``how``)."""
    if plan.sticky is None or not any(0 < s.route_weight < 1 for s in plan.stages):
        return []
    return [Finding(
        ("traffic", "sticky"),
        f"{target}: {how}; the sticky {plan.sticky.kind} '{plan.sticky.name}' does not keep a client on one version",
        "warning", target,
    )]
