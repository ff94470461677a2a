"""nginx/: open-source nginx configuration of the stage in effect (an ``http``-level include) and its ConfigMap.

- ``nginx/nginx.conf``: upstreams of both variants, the split, the testers'
  override, the shadow mirror and one ``server`` for ``service.host``.  It is
  included from the ``http`` block of the main configuration (e.g. from
  ``conf.d/``); every upstream and variable name carries the rollout's id, so
  several rollouts can share one nginx.
- ``nginx/configmap.yaml``: the same file in a ConfigMap (key
  ``<[env-]namespace-name>.conf``), for nginx in a cluster.

The split is ``split_clients`` over the sticky key (a request without one uses
its ``$request_id``, so key-less requests are split one by one rather than all
landing in one bucket); the canary takes the first bucket, so a key on the
canary at 1% stays on it at 10%.  ``split_clients`` reads percentages with two
decimals: shares are realised exactly in steps of 0.01%, and each file states
the share it realises.  Shadow stages mirror a ``split_clients`` sample of the
requests (testers excepted) to the canary with ``mirror``; the copies carry
``X-Rollout-Mirror: 1`` and their responses are discarded.

Health: open-source nginx has no active health checks (``health_check`` is NGINX
Plus).  Servers are checked passively: after ``max_fails`` (``health.fall``)
failed requests (connection errors, timeouts, 502/503/504) within
``fail_timeout`` (``health.interval``) a server gets no requests for
``fail_timeout``; the failed requests are retried on another server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fractions import Fraction

from compiler import templating
from compiler.ir import shares
from compiler.ir.plan import Plan, StagePlan, VariantPlan
from compiler.spec import names
from compiler.spec.units import format_decimal, format_percent
from compiler.targets import kube
from compiler.targets.base import CARRIED, MANIFEST, Files, Finding, Target
from compiler.targets.routers import base as routing, escaping
from compiler.targets.routers.base import testers_reach_canary

NAME = "nginx"
CONFIG = "nginx/nginx.conf"
CONFIGMAP = "nginx/configmap.yaml"

PERCENT_UNITS = 10_000  # split_clients parses "12.34%": hundredths of a percent
HASH_RANGE = 2**32  # MurmurHash2 values
MIRROR_HEADER = "X-Rollout-Mirror"


@dataclass(frozen=True)
class Listen:
    """Where the server block listens (production: every address; tests: 127.0.0.1)."""

    address: str = ""


# --------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class Percent:
    """A share as ``split_clients`` realises it: hundredths of a percent, then a MurmurHash2 threshold."""

    split: shares.Split  # out of PERCENT_UNITS

    @property
    def text(self) -> str:
        return f"{self.split.canary // 100}.{self.split.canary % 100:02d}%"

    @property
    def threshold(self) -> int:
        """Hashes below this take the first bucket (nginx: percent * 0xffffffff / 10000)."""
        return self.split.canary * 0xFFFFFFFF // PERCENT_UNITS

    @property
    def hash_share(self) -> Fraction:
        return Fraction(self.threshold, HASH_RANGE)

    def describe(self) -> str:
        error = self.hash_share - self.split.share
        return (
            f"split_clients {self.text} ({self.split.describe()}); over the 2^32 MurmurHash2 values "
            f"{self.threshold}/{HASH_RANGE} = {format_decimal(self.hash_share * 100, 10)}% "
            f"(error {format_decimal(error * 100, 10)} percentage points against the spec)"
        )


def percent(share: Fraction) -> Percent:
    return Percent(shares.split(share, PERCENT_UNITS))


def thresholds(plan: Plan) -> list[tuple[str, int]]:
    """``(stage, MurmurHash2 threshold of the canary bucket)`` for every stage with a partial share."""
    return [(s.name, percent(s.weight).threshold) for s in plan.stages if 0 < s.weight < 1]


# --------------------------------------------------------------------------- names


# nginx keeps variable names (and server names) in hashes whose buckets (64 bytes by default)
# hold names of at most 46 characters: longer variable prefixes become a hash of the rollout.
MAX_VARIABLE = 46
LONGEST_SUFFIX = "_upstream"


@dataclass(frozen=True)
class Ids:
    """Names of everything this rollout adds to nginx's http context (unique per rollout)."""

    prefix: str

    @classmethod
    def of(cls, plan: Plan) -> Ids:
        readable = "rollout_" + "__".join(part.replace("-", "_") for part in plan.out.split("/"))
        if len(readable) + len(LONGEST_SUFFIX) <= MAX_VARIABLE:
            return cls(readable)
        return cls("rollout_" + names.short_hash(plan.out, length=16))

    def upstream(self, role: str) -> str:
        return f"{self.prefix}_{role}"

    def var(self, what: str) -> str:
        return f"${self.prefix}_{what}"

    def braced(self, what: str) -> str:
        """The variable inside a string, delimited: ``${name}``."""
        return "${" + f"{self.prefix}_{what}" + "}"


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Upstream:
    name: str
    variant: VariantPlan



def _listen(address: str, port: int) -> str:
    port_text = escaping.port(port)
    if not address:
        return port_text
    ipaddress.ip_address(address)
    return f"{address}:{port_text}"


def _locations(plan: Plan) -> list[str]:
    """``/`` -> ``location /``; ``/api`` -> ``location = /api`` and ``location /api/``."""
    scope = routing.scope(plan)
    return ["/"] if scope.everything else [f"= {scope.stem}", scope.below]


def _notes(plan: Plan, stage: StagePlan) -> list[str]:
    def partial(share: Fraction) -> list[str]:
        key = (
            f"the sticky {plan.sticky.kind} '{plan.sticky.name}' ($request_id without it)"
            if plan.sticky
            else "$request_id"
        )
        return [f"Canary: {percent(share).describe()}.", f"Split key: {key}."]

    notes = routing.share_notes(plan, stage, partial)
    if stage.mirror > 0:
        notes.append(f"Shadow: mirror {percent(stage.mirror).describe() if stage.mirror < 1 else 'every request'}, "
                     "testers excepted.")
    return notes


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    if NAME not in plan.targets:
        return {}
    key = (stage.weight, stage.mirror, testers_reach_canary(plan, stage))
    return {CONFIG: key, CONFIGMAP: key}


def config(plan: Plan, listen: Listen = Listen()) -> str:
    stage = plan.current
    share, mirror = stage.weight, stage.mirror
    testers = plan.testers if testers_reach_canary(plan, stage) else None
    ids = Ids.of(plan)
    stable, canary = ids.upstream("stable"), ids.upstream("canary")
    split = percent(share) if 0 < share < 1 else None
    fixed = canary if share == 1 else stable  # the upstream when nothing splits
    if testers:
        target = ids.var("upstream")
    elif split:
        target = ids.var("split")
    else:
        target = fixed
    sticky_var = None
    if plan.sticky is not None:
        sticky_var = (escaping.nginx_header_variable(plan.sticky.name) if plan.sticky.kind == "header"
                      else escaping.nginx_cookie_variable(plan.sticky.name))
    return templating.render(
        "nginx.conf.j2",
        filters=escaping.NGINX_FILTERS,
        header_lines=kube.header(plan).splitlines(),
        plan=plan,
        notes=_notes(plan, stage),
        ids=ids,
        upstreams=[Upstream(stable, plan.stable), Upstream(canary, plan.canary)],
        stable=stable,
        canary=canary,
        split=split,
        sticky_var=sticky_var,
        split_input=ids.braced("key") if sticky_var else "${request_id}",
        fixed=fixed,
        testers=testers,
        target=target,
        mirror=percent(mirror) if 0 < mirror < 1 else None,
        mirror_all=mirror == 1,
        mirror_uri=f"/_rollout_mirror/{plan.out}",
        mirror_header=MIRROR_HEADER,
        listen=_listen(listen.address, plan.port),
        locations=_locations(plan),
    )


def configmap_key(plan: Plan) -> str:
    return "-".join(plan.out.split("/")) + ".conf"


def render(plan: Plan) -> Files:
    if NAME not in plan.targets:
        return {}
    text = config(plan)
    configmap = kube.config_map(plan, plan.names.nginx_configmap, {configmap_key(plan): text},
                                {"app.kubernetes.io/component": "nginx"})
    return {CONFIG: text, CONFIGMAP: kube.manifest(plan, configmap)}


# --------------------------------------------------------------------------- lint


def lint(plan: Plan) -> list[Finding]:
    if NAME not in plan.targets:
        return []
    found = [Finding(loc, message) for loc, message in
             escaping.name_problems(plan, escaping.nginx_header_problem, escaping.nginx_cookie_problem)]
    if len(plan.host) > MAX_VARIABLE:  # server names share the bucket size of variable names
        found.append(Finding(
            ("service", "host"),
            f"nginx: the host is {len(plan.host)} characters; with nginx's default server_names_hash_bucket_size "
            f"(64) a server name longer than {MAX_VARIABLE} stops nginx from loading the configuration once the "
            "http context has another server: set `server_names_hash_bucket_size 128;` in the http context",
            "warning",
        ))
    for role in ("stable", "canary"):
        for i, server in enumerate(plan.variant(role).servers):
            if escaping.is_host_name(server.host):
                found.append(Finding(
                    ("service", role, "servers", i),
                    f"nginx resolves the upstream host '{server.host}' once, when it loads the configuration: "
                    "a name that does not resolve then stops nginx from loading it, and later DNS changes are not seen",
                    "warning",
                ))

    def words(what: str, stage: StagePlan, share: Fraction) -> str:
        return (f"stage '{stage.name}': nginx split_clients takes percentages with two decimals, so the {what} "
                f"{format_percent(share)} becomes {percent(share).text}")

    return found + routing.capability_findings(
        plan,
        NAME,
        lambda stage: percent(stage.weight).split,
        lambda stage, split: words("weight", stage, stage.weight),
        mirror_of=lambda share: percent(share).split.realised,
        inexact_mirror=lambda stage, realised: words("mirror", stage, stage.mirror),
    )


TARGET: Target = Target(NAME, render, lint, rollback=True,
                        kinds={CONFIG: CARRIED, CONFIGMAP: MANIFEST}, stage_keys=stage_keys)
