"""haproxy/: HAProxy 2.6+ configuration of the stage in effect, its ConfigMap, and Runtime API rollback commands.

- ``haproxy/haproxy.cfg``: a complete configuration.  One frontend takes the
  service's traffic; the backends are named exactly ``service.stable.backend``
  and ``service.canary.backend`` (the ``haproxy`` metrics preset queries
  ``haproxy_backend_*{proxy="<backend>"}``).  Another frontend serves the
  built-in Prometheus exporter on ``/metrics``; the admin socket takes Runtime
  API commands.
- ``haproxy/configmap.yaml``: the same file in a ConfigMap, for HAProxy in a cluster.
- ``haproxy/runtime-rollback.txt``: Runtime API commands that send every
  request to stable without a reload.

The split.  Server weights are integers 0-256 and cannot express 0.1%, so the
frontend buckets requests instead: the sticky key hashed with ``xxh32`` modulo
``N`` buckets (a fresh ``rand(N)`` for requests without a key, or when nothing
is sticky), and buckets ``0 .. C-1`` go to the canary.  ``N`` is one number for
every stage of the rollout (a multiple of 100 that every stage's share divides
exactly), and ``C`` grows with the share, so a key on the canary at 1% is still
on it at 10%.  The canary is used only while it has a usable server
(``nbsrv``): when every canary server is down, or put in maintenance by the
rollback commands, its users go to stable.

HAProxy 2.6 cannot mirror traffic: a shadow stage keeps every user on stable
(testers still reach the canary), which the file and ``rollout lint`` say.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from fractions import Fraction

from compiler import templating
from compiler.ir import shares
from compiler.ir.plan import Plan, StagePlan, VariantPlan
from compiler.spec.units import format_decimal, format_percent
from compiler.targets import kube
from compiler.targets.base import CARRIED, MANIFEST, OTHER, Files, Finding, Target
from compiler.targets.routers import base as routing, escaping
from compiler.targets.routers.base import testers_reach_canary

NAME = "haproxy"
CONFIG = "haproxy/haproxy.cfg"
CONFIGMAP = "haproxy/configmap.yaml"
RUNTIME_ROLLBACK = routing.HAPROXY_RUNTIME_ROLLBACK
CONFIGMAP_KEY = "haproxy.cfg"

TRAFFIC_FRONTEND = "rollout_traffic"  # '_' keeps these apart from backends, which are DNS-1035 names
METRICS_FRONTEND = "rollout_metrics"
RESOLVERS = "rollout_dns"
BUCKET_VAR = "txn.rollout_bucket"

HASH_RANGE = 2**32  # xxh32 values
MAX_BUCKETS = 1_000_000


@dataclass(frozen=True)
class Runtime:
    """Where HAProxy listens and keeps its admin socket (production defaults; tests move them)."""

    bind_address: str = ""  # "" binds every address
    metrics_port: int = 8405
    admin_socket: str = routing.HAPROXY_ADMIN_SOCKET


def runtime_of(plan: Plan) -> Runtime:
    """The exporter port and admin socket the spec sets (traffic.haproxy)."""
    return Runtime("", plan.haproxy.exporter_port, plan.haproxy.admin_socket)


# --------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class Bucketing:
    """Canary buckets ``0 .. split.canary - 1`` of ``split.total`` for one stage."""

    split: shares.Split

    @property
    def buckets(self) -> int:
        return self.split.total

    @property
    def threshold(self) -> int:
        return self.split.canary

    @property
    def hash_values(self) -> int:
        """How many of the 2^32 xxh32 values fall into canary buckets (``mod`` favours low buckets slightly)."""
        quotient, remainder = divmod(HASH_RANGE, self.buckets)
        return self.threshold * quotient + min(self.threshold, remainder)

    @property
    def hash_share(self) -> Fraction:
        return Fraction(self.hash_values, HASH_RANGE)


def bucket_count(plan: Plan) -> int:
    """One bucket count for every stage: a multiple of 100 that each partial share divides, at most 10^6."""
    count = 100
    for stage in plan.stages:
        if 0 < stage.weight < 1:
            count = math.lcm(count, stage.weight.denominator)
    return count if count <= MAX_BUCKETS else MAX_BUCKETS


def bucketing(plan: Plan, stage: StagePlan) -> Bucketing:
    """The canary buckets of ``stage`` (nearest when the share needs more than 10^6 buckets)."""
    return Bucketing(shares.split(stage.weight, bucket_count(plan)))


def thresholds(plan: Plan) -> list[tuple[str, int, int]]:
    """``(stage, canary buckets, bucket count)`` for every stage with a partial share, in stage order."""
    out = []
    for stage in plan.stages:
        if 0 < stage.weight < 1:
            b = bucketing(plan, stage)
            out.append((stage.name, b.threshold, b.buckets))
    return out


def _share_notes(plan: Plan, stage: StagePlan) -> list[str]:
    def partial(share: Fraction) -> list[str]:
        b = bucketing(plan, stage)
        notes = [f"Buckets 0-{b.threshold - 1} of {b.buckets} go to the canary: {b.split.describe()}."]
        if plan.sticky:
            error = b.hash_share - share
            notes += [
                f"Bucket = xxh32 of the sticky {plan.sticky.kind} '{plan.sticky.name}' mod {b.buckets}; "
                f"requests without it draw rand({b.buckets}).",
                f"Over the 2^32 xxh32 values: {b.hash_values}/{HASH_RANGE} = {format_decimal(b.hash_share * 100, 10)}% "
                f"(error {format_decimal(error * 100, 10)} percentage points against the spec, from mod).",
            ]
        else:
            notes.append(f"Bucket = rand({b.buckets}) for every request: nothing is sticky.")
        return notes

    return routing.share_notes(plan, stage, partial)


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    if NAME not in plan.targets:
        return {}
    key = (stage.weight, testers_reach_canary(plan, stage))
    return {CONFIG: key, CONFIGMAP: key}


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Server:
    name: str  # <backend>-<position>, unique in its backend
    host: str
    port: int
    backup: bool


def _servers(variant: VariantPlan) -> list[Server]:
    return [Server(f"{variant.backend}-{i}", s.host, s.port, s.backup) for i, s in enumerate(variant.servers, 1)]



def _bind(address: str) -> str:
    if address:
        ipaddress.ip_address(address)  # only literal addresses
    return address


def _health_host(host: str) -> str:
    return host[2:] if host.startswith("*.") else host


def config(plan: Plan, runtime: Runtime = Runtime()) -> str:
    stage = plan.current
    share = stage.weight
    split = bucketing(plan, stage) if 0 < share < 1 else None
    return templating.render(
        "haproxy.cfg.j2",
        filters=escaping.HAPROXY_FILTERS,
        header_lines=kube.header(plan).splitlines(),
        plan=plan,
        notes=_share_notes(plan, stage),
        runtime=runtime,
        bind=_bind(runtime.bind_address),
        frontend=TRAFFIC_FRONTEND,
        metrics_frontend=METRICS_FRONTEND,
        resolvers=RESOLVERS
        if any(escaping.is_host_name(s.host) for v in (plan.stable, plan.canary) for s in v.servers)
        else None,
        bucket_var=BUCKET_VAR,
        split=split,
        canary_all=share == 1,
        testers=plan.testers if testers_reach_canary(plan, stage) else None,
        health_host=_health_host(plan.host),
        path_stem=routing.scope(plan).stem,
        variants=[(plan.stable, _servers(plan.stable)), (plan.canary, _servers(plan.canary))],
    )


def runtime_rollback(plan: Plan, runtime: Runtime = Runtime()) -> str:
    lines = [
        kube.header(plan),
        "",
        f"HAProxy Runtime API commands: every request of {plan.out} to stable, without a reload.",
        "Every canary server goes into maintenance: the frontend then sends canary buckets and",
        "testers to stable (nbsrv of the canary is 0), and no connection, sticky or not, reaches it.",
        "One command per line; lines starting with '#' are comments. Apply with:",
        f"  grep -v '^#' {RUNTIME_ROLLBACK.split('/')[-1]} | while read -r cmd; do",
        f"    echo \"$cmd\" | socat stdio unix-connect:{runtime.admin_socket}; done",
        "Undo with 'set server <backend>/<server> state ready'; the next reload of haproxy.cfg",
        "also restores the stage in the file.",
    ]
    text = "".join(f"# {line}".rstrip() + "\n" for line in "\n".join(lines).splitlines())
    backend = escaping.haproxy_name(plan.canary.backend)
    for server in _servers(plan.canary):
        text += f"set server {backend}/{escaping.haproxy_name(server.name)} state maint\n"
    return text


def render(plan: Plan) -> Files:
    if NAME not in plan.targets:
        return {}
    runtime = runtime_of(plan)
    text = config(plan, runtime)
    configmap = kube.config_map(plan, plan.names.haproxy_configmap, {CONFIGMAP_KEY: text},
                                {"app.kubernetes.io/component": "haproxy"})
    return {
        CONFIG: text,
        CONFIGMAP: kube.manifest(plan, configmap),
        RUNTIME_ROLLBACK: runtime_rollback(plan, runtime),
    }


# --------------------------------------------------------------------------- lint


def lint(plan: Plan) -> list[Finding]:
    if NAME not in plan.targets:
        return []
    found = [Finding(loc, message) for loc, message in
             escaping.name_problems(plan, escaping.haproxy_header_problem, escaping.haproxy_cookie_problem)]
    if plan.port == plan.haproxy.exporter_port:
        found.append(Finding(
            ("service", "port"),
            f"haproxy: service.port {plan.port} is the port of HAProxy's Prometheus exporter frontend "
            "in the generated configuration; the two frontends would share it: choose another port",
        ))
    total = bucket_count(plan)

    def inexact(stage: StagePlan, split: shares.Split) -> str:
        return (f"stage '{stage.name}': HAProxy realises {format_percent(stage.weight)} with {total} buckets "
                f"only approximately ({split.describe()})")

    return found + routing.capability_findings(plan, NAME, lambda stage: bucketing(plan, stage).split, inexact)


TARGET: Target = Target(
    NAME,
    render,
    lint,
    rollback=True,
    kinds={CONFIG: CARRIED, CONFIGMAP: MANIFEST, RUNTIME_ROLLBACK: OTHER},
    stage_keys=stage_keys,
)
