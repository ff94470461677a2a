"""What every router target shares: the capability table's lint, the split of a stage, path scope, notes.

A router module (:mod:`.gateway_api`, :mod:`.ingress_nginx`, :mod:`.istio`,
:mod:`.haproxy`, :mod:`.nginx`) holds its syntax and escaping: how it writes a
share (its ``split`` function), a mirror, testers and the path.  What it can do
is one row of :data:`compiler.spec.routers.ROUTERS`; :func:`capability_findings`
turns that row into lint, so a stage a router cannot realise is reported the
same way for each.

A file's notes (the comment at its top) describe what the file does, never the
stage's name: a stage that does not change a router's configuration does not
change its file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from compiler.diagnostics import Severity
from compiler.ir import shares
from compiler.ir.plan import Plan, StagePlan
from compiler.ir.shares import Split
from compiler.ir.plan import Loc
from compiler.spec.routers import ROUTERS, Capabilities
from compiler.spec.units import format_percent
from compiler.targets.base import Finding

# Where the haproxy target writes its Runtime API rollback and where HAProxy listens for it; the
# rollback runbook names both.
HAPROXY_RUNTIME_ROLLBACK = "haproxy/runtime-rollback.txt"
HAPROXY_ADMIN_SOCKET = "/run/haproxy/admin.sock"
MAX_RELATIVE_WEIGHT = 1_000_000


def capabilities(name: str) -> Capabilities:
    return ROUTERS[name]


# --------------------------------------------------------------------------- the stage, as a router sees it


def relative_split(stage: StagePlan) -> Split:
    """The router share as relative weights (Gateway API backendRefs, Istio destinations)."""
    return shares.relative(stage.route_weight, MAX_RELATIVE_WEIGHT)


def percent_split(stage: StagePlan) -> Split:
    """Weights out of 100 where the share is a whole percent (what every Istio release accepts), else the
    smallest exact relative weights (which releases whose validation demands a sum of 100 refuse)."""
    percent = stage.route_weight * 100
    if percent.denominator == 1:
        return shares.Split(int(percent), 100, stage.route_weight)
    return relative_split(stage)


def testers_reach_canary(plan: Plan, stage: StagePlan) -> bool:
    return plan.testers is not None and stage.testers


@dataclass(frozen=True)
class PathScope:
    """``service.path`` as whole segments: the path itself and everything below it (``/`` is everything)."""

    path: str

    @property
    def everything(self) -> bool:
        return self.path == "/"

    @property
    def stem(self) -> str:
        """``/api/`` and ``/api`` -> ``/api``."""
        return self.path.rstrip("/")

    @property
    def below(self) -> str:
        """The prefix of what lies below the path: ``/api/``."""
        return self.stem + "/"


def scope(plan: Plan) -> PathScope:
    return PathScope(plan.path)


# --------------------------------------------------------------------------- notes


def note(plan: Plan, what: str, split: Split, weights: str, mirror: str, stage: StagePlan | None = None) -> str:
    """The comment at the top of a Kubernetes router's file: the share it realises, its error against the
    spec, the mirror and the testers."""
    stage = stage or plan.current
    lines = [
        f"{what}.",
        f"Router share to {plan.canary.backend}: {split.describe()}; {weights}.",
        f"Mirror: {mirror}." if stage.mirror > 0 else "Mirror: none.",
    ]
    if testers_reach_canary(plan, stage):
        assert plan.testers is not None
        lines.append(f"Testers ({plan.testers.header}: {', '.join(plan.testers.values)}) reach {plan.canary.backend}.")
    else:
        lines.append("Testers: none reach the canary.")
    return "\n".join(lines)


def share_notes(plan: Plan, stage: StagePlan, partial: Callable[[Fraction], list[str]]) -> list[str]:
    """The split of a configuration-file router (HAProxy, nginx) in words; ``partial`` describes a share
    between 0 and 100% in the router's own terms."""
    share = stage.weight
    if share == 0:
        notes = ["Canary share 0%: users stay on stable (exact)."]
    elif share == 1:
        notes = ["Canary share 100%: every request goes to the canary backend while it has a usable server (exact)."]
    else:
        notes = partial(share)
    if testers_reach_canary(plan, stage):
        assert plan.testers is not None
        notes.append(f"Testers ({plan.testers.header}: {', '.join(plan.testers.values)}) reach the canary.")
    else:
        notes.append("Testers: none reach the canary.")
    return notes


# --------------------------------------------------------------------------- lint from the capability table


def weight_loc(stage: StagePlan) -> Loc:
    return stage.loc + ("weight",) if stage.loc[:1] == ("stages",) else stage.loc


def mirror_loc(stage: StagePlan) -> Loc:
    return stage.loc + ("mirror",) if stage.loc[:1] == ("stages",) else stage.loc


#: A split off by more than this share of what a stage asks for (for the canary or for stable) is refused.
FAR_OFF = Fraction(1, 10)


def far_off(split: Split) -> bool:
    """The canary's (or stable's) realised share is more than FAR_OFF away from the spec's, relatively."""
    for asked, got in ((split.share, split.realised), (1 - split.share, 1 - split.realised)):
        if asked > 0 and abs(got - asked) > asked * FAR_OFF:
            return True
    return False


def capability_findings(plan: Plan, name: str, split_of: Callable[[StagePlan], Split],
                        inexact: Callable[[StagePlan, Split], str] | None = None,
                        mirror_of: Callable[[Fraction], Fraction] | None = None,
                        inexact_mirror: Callable[[StagePlan, Fraction], str] | None = None) -> list[Finding]:
    """What the router's row of the capability table says about the plan's stages.

    ``split_of`` gives the router's split of a stage; ``inexact`` words a split that is not exact
    (default: the split's description); ``mirror_of`` the share a partial mirror is realised as, and
    ``inexact_mirror`` words it.
    """
    can = capabilities(name)
    out: list[Finding] = []
    for stage in plan.stages:
        split = split_of(stage)
        if not split.exact:
            message = inexact(stage, split) if inexact else f"{name}: {split.describe()}"
            severity: Severity = "warning"
            if far_off(split):
                severity = "error"
                message += (f": more than {format_percent(FAR_OFF)} away from the share the stage asks for, finer "
                            f"than {name} can split; use a share it can realise")
            out.append(Finding(weight_loc(stage) if inexact is None else stage.loc, message, severity, name))
    for stage in plan.stages:
        if not stage.is_shadow:
            continue
        if can.mirror == "none":
            out.append(Finding(
                stage.loc,
                f"stage '{stage.name}' mirrors {format_percent(stage.mirror)} of traffic, which HAProxy 2.6 cannot do: "
                f"the {name} target keeps every user on stable during this stage (testers still reach the canary)",
                "warning",
            ))
        elif can.mirror == "every request" and stage.mirror < 1:
            out.append(Finding(
                mirror_loc(stage),
                f"{name}: stage '{stage.name}' mirrors {format_percent(stage.mirror)}, but mirror-target "
                f"copies every request: use `mirror: 100%` or drop {name} from traffic.targets",
                "error", name,
            ))
        elif mirror_of is not None and mirror_of(stage.mirror) != stage.mirror:
            realised = mirror_of(stage.mirror)
            if inexact_mirror is not None:
                out.append(Finding(stage.loc, inexact_mirror(stage, realised), "warning", name))
            else:
                out.append(Finding(mirror_loc(stage), f"{name}: mirror {format_percent(stage.mirror)} is realised as "
                                   f"{format_percent(realised)}", "warning", name))
    if not can.sticky and plan.sticky is not None and any(0 < s.route_weight < 1 for s in plan.stages):
        out.append(Finding(
            ("traffic", "sticky"),
            f"{name}: {can.sticky_detail}; the sticky {plan.sticky.kind} '{plan.sticky.name}' does not keep a "
            "client on one version",
            "warning", name,
        ))
    return out
