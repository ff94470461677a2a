"""The routers a spec can name in ``traffic.targets``, and what each can do: one table.

The spec language reads it (which names exist, which targets can mirror), the
routers' lint reads it (a share or a mirror it cannot realise, stickiness it
cannot keep) and the docs' matrix is printed from it (:func:`matrix`).  Each
router module under :mod:`compiler.targets.routers` holds only its syntax and
its escaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MirrorKind = Literal["any share", "every request", "none"]
#: What a host and path are routed within, shared by every rollout that routes through it (None: the router's
#: configuration is the rollout's own, not one shared with other rollouts).
SharedBy = Literal["ingress class", "gateway", "mesh"]


@dataclass(frozen=True)
class Capabilities:
    name: str
    split: str  # how a share is realised
    mirror: MirrorKind  # what a shadow stage can copy to the canary
    mirror_detail: str
    testers: str  # how testers are recognised
    regex: bool  # tester values are matched with a regular expression (escaped: values still match exactly)
    sticky: bool  # a sticky header or cookie keeps a client on one version
    sticky_detail: str
    path: str  # how service.path scopes the split
    blue_green: str  # what the router does for a blue-green rollout
    kubernetes: bool  # writes Kubernetes objects (else a configuration file, also wrapped in a ConfigMap)
    shared_by: SharedBy | None  # where two rollouts routing one host and path would take it from each other

    @property
    def mirrors(self) -> bool:
        return self.mirror != "none"


ROUTERS: dict[str, Capabilities] = {
    "gateway-api": Capabilities(
        "gateway-api",
        split="relative backendRef weights, each at most 1,000,000: exact for any share with such a denominator",
        mirror="any share",
        mirror_detail="RequestMirror filter with percent, or fraction for a share that is not a whole percent",
        testers="header, exact value (one match per value, at most 64)",
        regex=False,
        sticky=False,
        sticky_detail="backendRef weights split each request on its own",
        path="PathPrefix: whole path segments",
        blue_green="routes the weighted steps and testers to the preview Service",
        kubernetes=True,
        shared_by="gateway",
    ),
    "istio": Capabilities(
        "istio",
        split="relative destination weights, each at most 1,000,000",
        mirror="any share",
        mirror_detail="mirror and mirrorPercentage (a double, so a third is not exact)",
        testers="header, exact value (header names of letters, digits, '-' and '_')",
        regex=False,
        sticky=False,
        sticky_detail="the weighted split picks a version for each request, and consistent hashing keeps "
        "a client on one pod of the version it gets",
        path="exact path or path + '/' prefix: whole path segments",
        blue_green="routes to the Services, which select pods by colour",
        kubernetes=True,
        shared_by="mesh",
    ),
    "ingress-nginx": Capabilities(
        "ingress-nginx",
        split="canary-weight out of 100, or out of canary-weight-total (up to 1,000,000) for a share that is not a "
        "whole percent",
        mirror="every request",
        mirror_detail="mirror-target on the main Ingress copies every request: only `mirror: 100%`",
        testers="header: canary-by-header-value for one value, canary-by-header-pattern for several",
        regex=True,
        sticky=False,
        sticky_detail="canary-weight picks each request at random",
        path="Prefix: whole path segments",
        blue_green="routes the weighted steps and testers to the preview Service",
        kubernetes=True,
        shared_by="ingress class",
    ),
    "haproxy": Capabilities(
        "haproxy",
        split="xxh32 of the sticky key (or rand) modulo N buckets, N a multiple of 100 up to 1,000,000 shared by every "
        "stage",
        mirror="none",
        mirror_detail="HAProxy 2.6 cannot mirror: a shadow stage keeps every user on stable",
        testers="header, exact values",
        regex=False,
        sticky=True,
        sticky_detail="the same key lands in the same bucket, and a canary bucket stays canary as the share grows",
        path="path equal to service.path or below it",
        blue_green="sends the steps and testers to the new colour's servers",
        kubernetes=False,
        shared_by=None,
    ),
    "nginx": Capabilities(
        "nginx",
        split="split_clients in hundredths of a percent (MurmurHash2 of the sticky key, or $request_id)",
        mirror="any share",
        mirror_detail="mirror of a split_clients sample, in hundredths of a percent",
        testers="header, exact values (map of escaped regular expressions)",
        regex=True,
        sticky=True,
        sticky_detail="split_clients on the sticky key; a key on the canary stays there as the share grows",
        path="location of service.path and below it",
        blue_green="sends the steps and testers to the new colour's servers",
        kubernetes=False,
        shared_by=None,
    ),
}

Router = Literal["ingress-nginx", "gateway-api", "istio", "haproxy", "nginx"]
NAMES: tuple[str, ...] = tuple(ROUTERS)
MIRRORING: tuple[str, ...] = tuple(name for name, c in ROUTERS.items() if c.mirrors)


def matrix() -> str:
    """The capability table as Markdown (docs/routers.md holds it)."""
    rows = [
        "| router | split | mirror | testers | sticky | path | blue-green |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in ROUTERS.values():
        sticky = f"yes: {c.sticky_detail}" if c.sticky else f"no: {c.sticky_detail}"
        rows.append(f"| `{c.name}` | {c.split} | {c.mirror}: {c.mirror_detail} | {c.testers} | {sticky} | {c.path} | "
                    f"{c.blue_green} |")
    return "\n".join(rows) + "\n"
