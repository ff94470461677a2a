"""plan: a validated spec -> the normalized IR every target reads.

Everything a target needs is decided here, once: stage shares as exact
fractions, which stage is in effect, gates with their thresholds, windows and
alert labels, PromQL templates of the metrics source, flag states per stage,
and the names of every generated object.  Targets never look at the spec.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from mypy_extensions import mypyc_attr

from compiler.gates import presets  # the metrics' types (the native build resolves the fields' types on import)
from compiler.spec.units import format_duration, format_percent

Loc = tuple[Any, ...]  # a place in the spec: keys and list indices

ROLLBACK = "rollback"
ACTIONS = {"rollback": "rollback", "hold": "hold", "alert": "notify"}
SEVERITIES = {"rollback": "critical", "hold": "warning", "alert": "warning"}
DEFAULT_FOR = 60  # custom gates: their query has no statistical guard against noise
JUDGED_FOR = 0  # error-rate, latency and ratio gates: their confidence bound is the guard; a pending period only delays
PRESETS: dict[str, tuple[tuple[int, ...], int]] = {
    "safe": ((5, 10, 25, 50, 75, 100), 300),
    "fast": ((25, 50, 100), 300),
    "instant": ((100,), 60),
}


@dataclass(frozen=True)
class Source:
    path: str  # as the user named it, e.g. specs/checkout.yaml
    sha256: str

    @property
    def short(self) -> str:
        return self.sha256[:12]


@dataclass(frozen=True)
class ServerPlan:
    address: str  # HOST:PORT
    host: str
    port: int
    backup: bool


@dataclass(frozen=True)
class VariantPlan:
    role: str  # "stable" | "canary"
    version: str
    backend: str  # Kubernetes Service / router backend name
    port: int
    servers: tuple[ServerPlan, ...]
    color: str | None  # blue-green: this variant's colour


@dataclass(frozen=True)
class HealthPlan:
    path: str
    interval: int
    timeout: int
    expect_status: int
    fall: int
    rise: int


@dataclass(frozen=True)
class GatePlan:
    name: str  # error_rate | p95_latency | p99_latency | error_rate_vs_stable | a custom gate's name
    kind: str  # "error_rate" | "latency" | "ratio" | "custom"
    threshold: Fraction  # error_rate: a fraction; latency: seconds; ratio: a factor; custom: a value
    bound: str  # "max": breach above; "min": breach below
    quantile: Fraction | None  # latency gates
    window: int  # seconds
    for_: int  # seconds
    severity: str  # critical | warning | info
    on_breach: str  # rollback | hold | alert: the gate's own, else its stage's
    action: str  # rollback | hold | notify (the alert's `action` label)
    query: str | None  # custom gates: PromQL for the canary, with $window left in
    description: str  # "error rate < 1%"
    loc: Loc


@dataclass(frozen=True)
class StagePlan:
    index: int  # position in Plan.stages; -1 for the rollback state
    name: str
    kind: str  # "shadow" | "canary" | "full" | "preview" | "switch" | "rollback"
    weight: Fraction  # share of live traffic served by the new version
    route_weight: Fraction  # share routers send to the canary backend (blue-green: 0 once switched)
    mirror: Fraction  # share of traffic mirrored to the canary
    hold: int | None  # seconds
    gates: tuple[GatePlan, ...]
    on_breach: str  # rollback | hold | alert (as written)
    action: str  # rollback | hold | notify (the alerts' `action` label)
    severity: str  # default severity of this stage's gate alerts
    testers: bool  # the tester header reaches the canary
    active_color: str | None  # blue-green: the colour the main Service selects
    loc: Loc
    approve: bool = False  # a person approves the stage before it may advance

    @property
    def is_shadow(self) -> bool:
        return self.mirror > 0

    def hold_text(self, none: str = "") -> str:
        """How long the stage holds before it may advance, and whether a person approves it."""
        hold = format_duration(self.hold) if self.hold else ""
        if self.approve:
            return f"{hold} + approval" if hold else "approval"
        return hold or none

    def gate_text(self, gate: GatePlan) -> str:
        """A gate in words, with its breach action when it differs from the stage's."""
        own = f" (on breach: {gate.on_breach})" if gate.on_breach != self.on_breach else ""
        return gate.description + own


@dataclass(frozen=True)
class StickyPlan:
    kind: str  # "header" | "cookie"
    name: str


@dataclass(frozen=True)
class TestersPlan:
    header: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class BlueGreenPlan:
    selector: tuple[tuple[str, str], ...]
    color_label: str
    old_color: str  # serves users before the switch (the stable variant)
    new_color: str  # the release (the canary variant)


@dataclass(frozen=True)
class FlagPlan:
    name: str
    kind: str  # "release" | "kill_switch"
    follows_stage: bool
    shares: tuple[tuple[str, Fraction], ...]  # stage name (and "rollback") -> share of keys on
    engaged: tuple[tuple[str, bool], ...]  # kill switches: stage name (and "rollback") -> pulled
    allow: tuple[str, ...]
    requires: tuple[str, ...]
    kills: tuple[str, ...]  # kill switches: the flags forced off when engaged
    env: str | None
    description: str | None
    loc: Loc


@dataclass(frozen=True)
class FlagState:
    """A flag at the stage in effect."""

    name: str
    share: Fraction  # share of targeting keys on (a kill switch: 1 when engaged)
    engaged: bool  # kill switches only
    killed: bool  # an engaged kill switch forces this flag off
    allow: tuple[str, ...]  # targeting keys on whatever the share; a rollback sends testers back too


@dataclass(frozen=True)
class MonitorPlan:
    kind: str  # ServiceMonitor | PodMonitor
    selector: tuple[tuple[str, str], ...]
    port: str
    path: str


@dataclass(frozen=True)
class HAProxyPlan:
    exporter_port: int
    admin_socket: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class MetricsPlan:
    source: str
    min_requests: int
    expected_rps: float | None
    window: int
    stable: presets.VariantMetrics
    canary: presets.VariantMetrics
    scrape_interval: int = 15  # seconds
    evaluation_interval: int = 15
    monitor: MonitorPlan | None = None
    #: (stable, canary) queries once a blue-green switch has made the active Service serve the new colour, where
    #: the source tells the variants apart by the route or Service a request took (None: the same as before).
    after_switch: tuple[presets.VariantMetrics, presets.VariantMetrics] | None = None

    def queries(self, role: str) -> presets.VariantMetrics:
        return self.stable if role == "stable" else self.canary


@dataclass(frozen=True)
class SecretPlan:
    """A key of a Kubernetes Secret in the rollout's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class PagerDutyPlan:
    routing_key_file: str
    routing_key_secret: SecretPlan | None = None


@dataclass(frozen=True)
class SlackPlan:
    channel: str
    api_url_file: str
    api_url_secret: SecretPlan | None = None


@dataclass(frozen=True)
class EmailPlan:
    to: str
    from_: str | None
    smarthost: str | None
    auth_username: str | None
    auth_password_file: str | None
    auth_password_secret: SecretPlan | None = None


@dataclass(frozen=True)
class WebhookPlan:
    url: str | None
    url_file: str | None
    url_secret: SecretPlan | None = None
    bearer_token_file: str | None = None
    bearer_token_secret: SecretPlan | None = None


@dataclass(frozen=True)
class ReceiverPlan:
    """One receiver of the spec: the integrations it notifies (secrets by file only)."""

    pagerduty: PagerDutyPlan | None = None
    slack: SlackPlan | None = None
    email: EmailPlan | None = None
    webhook: WebhookPlan | None = None


@dataclass(frozen=True)
class GatewayPlan:
    name: str
    namespace: str | None
    section: str | None


@dataclass(frozen=True)
class ArgoCDPlan:
    repo_url: str
    target_revision: str
    project: str
    namespace: str
    destination_server: str
    automated: bool


@dataclass(frozen=True)
class FluxPlan:
    source: str
    source_namespace: str
    namespace: str
    interval: int
    prune: bool


@dataclass(frozen=True)
class GitOpsPlan:
    path: str
    argocd: ArgoCDPlan | None
    flux: FluxPlan | None


@dataclass(frozen=True)
class AlertingPlan:
    receivers: tuple[tuple[str, ReceiverPlan], ...]
    routes: tuple[tuple[str, tuple[str, ...]], ...]  # critical / warning / info / rollback -> receivers
    grafana_url: str | None
    operator: bool = False  # also an AlertmanagerConfig for the Prometheus Operator
    _key: list[str] = field(default_factory=list, init=False, compare=False, repr=False)  # once made

    def route(self, key: str) -> tuple[str, ...]:
        return dict(self.routes).get(key, ())

    @property
    def key(self) -> str:
        """What names this set of receivers and routes: rollouts with the same share one subtree of the fleet's
        Alertmanager configuration (the ``rollout_route`` label of their alerts)."""
        if not self._key:
            self._key.append(self._digest())
        return self._key[0]

    def _digest(self) -> str:
        import hashlib
        import json
        from dataclasses import asdict

        data = {"receivers": [[name, asdict(r)] for name, r in self.receivers], "routes": self.routes}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return "route-" + hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Names:
    """Every generated object's name, decided once."""

    ingress: str  # the main (stable) Ingress; ingress-nginx metrics' `ingress` label
    canary_ingress: str
    http_route: str
    virtual_service: str
    destination_rule: str  # Istio: the stable Service's DestinationRule
    canary_destination_rule: str  # Istio: the canary Service's DestinationRule
    active_service: str  # blue-green: the Service users reach (selector switches)
    preview_service: str  # blue-green: the Service testers reach (always the new colour)
    haproxy_configmap: str
    nginx_configmap: str
    flags_configmap: str
    dashboard_configmap: str
    prometheus_rule: str
    alertmanager_configmap: str
    dashboard_uid: str
    alert_prefix: str  # CamelCase, e.g. "Checkout"
    rule_group: str  # Prometheus rule group prefix, e.g. "rollout.shop.checkout"
    rollback_guard_alert: str  # fires while the canary still gets traffic after a rollback
    argo_application: str  # Argo CD Application / Flux Kustomization name


@dataclass(frozen=True)
class ApprovalPlan:
    stage: str
    by: str
    at: str  # RFC 3339


@dataclass(frozen=True)
@mypyc_attr(native_class=False)  # pickled (by ``compile -j``) without its memo: see __getstate__
class Plan:
    source: Source
    environment: str | None
    name: str
    namespace: str
    owner: str
    runbook: str | None
    labels: tuple[tuple[str, str], ...]
    out: str  # the rollout's folder in the output tree: "[env/]namespace/name"
    host: str
    path: str
    port: int
    target_port: int  # the pods' port, for generated Services
    health: HealthPlan | None
    stable: VariantPlan
    canary: VariantPlan
    targets: tuple[str, ...]
    sticky: StickyPlan | None
    testers: TestersPlan | None
    gateway: GatewayPlan | None
    ingress_class: str
    strategy: str  # "canary" | "blue-green"
    blue_green: BlueGreenPlan | None
    stages: tuple[StagePlan, ...]
    rollback_stage: StagePlan
    current: StagePlan  # the stage in effect (may be rollback_stage)
    flags: tuple[FlagPlan, ...]
    flag_states: tuple[FlagState, ...]
    metrics: MetricsPlan
    alerting: AlertingPlan | None
    rollback_within: int
    preserve: tuple[str, ...]
    gitops: GitOpsPlan | None
    names: Names
    approved: ApprovalPlan | None = None  # the last approval recorded in the spec
    haproxy: HAProxyPlan = HAProxyPlan(8405, "/run/haproxy/admin.sock", ("localhost",))
    istio_gateways: tuple[str, ...] = ()  # Istio Gateways whose traffic for `host` the istio target splits too
    # What is derived from this plan alone (its rules, itself at other stages), kept once made: neither compared,
    # nor copied by ``replace`` (a new plan starts empty), nor pickled.
    memo: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    # ---- navigation

    @property
    def awaits_approval(self) -> bool:
        """The stage in effect needs a person's approval that the spec does not record yet."""
        stage = self.current
        return stage.approve and not (self.approved is not None and self.approved.stage == stage.name)

    @property
    def id(self) -> str:
        return self.out

    @property
    def is_rollback(self) -> bool:
        return self.current.kind == "rollback"

    def stage(self, name: str) -> StagePlan:
        if name == ROLLBACK:
            return self.rollback_stage
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def next_stage(self) -> StagePlan | None:
        if self.is_rollback:
            return None
        index = self.current.index + 1
        return self.stages[index] if index < len(self.stages) else None

    def variant(self, role: str) -> VariantPlan:
        return self.stable if role == "stable" else self.canary

    def at(self, stage_name: str) -> Plan:
        """This plan with another stage in effect (the same object each time it is asked for)."""
        key = f"at:{stage_name}"
        found = self.memo.get(key)
        if found is None:
            stage = self.stage(stage_name)
            found = self.memo[key] = replace(self, current=stage, flag_states=flag_states(self.flags, stage.name))
        return found

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("memo", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, memo={})

    def flag_state(self, name: str) -> FlagState:
        return next(s for s in self.flag_states if s.name == name)

    def traffic(self, stage: StagePlan) -> str:
        """What a stage does with live traffic, in words: ``1%``, ``testers only``, ``all on stable``."""
        if stage.kind == "rollback":
            return "all on stable"
        if stage.kind == "preview":
            return "testers only" if self.testers is not None else "preview Service only"
        if stage.kind == "shadow":
            return "mirrored only"
        if stage.kind == "switch" and self.blue_green is not None:
            return f"100% ({self.blue_green.new_color} colour)"
        if stage.weight == 0:
            return "testers only" if stage.testers and self.testers is not None else "none (0%)"
        return format_percent(stage.weight)

    def label(self, stage: StagePlan) -> str:
        """``canary 1%``, ``preview (testers only)``, ``rollback (all on stable)``."""
        traffic = self.traffic(stage)
        return f"{stage.name} {traffic}" if traffic.endswith("%") else f"{stage.name} ({traffic})"

    # ---- how people reach this rollout

    def command(self, verb: str) -> str:
        """The command line running ``rollout VERB`` on this rollout's spec (path shell-quoted)."""
        env = f" --env {self.environment}" if self.environment else ""
        return f"rollout {verb} {shlex.quote(self.source.path)}{env}"

    @property
    def dashboard_url(self) -> str:
        """The rollout's Grafana dashboard (a relative link without ``alerting.grafana_url``)."""
        base = self.alerting.grafana_url.rstrip("/") if self.alerting and self.alerting.grafana_url else ""
        return f"{base}/d/{self.names.dashboard_uid}"


def flag_states(flags: tuple[FlagPlan, ...], stage: str) -> tuple[FlagState, ...]:
    engaged = {f.name for f in flags if f.kind == "kill_switch" and dict(f.engaged)[stage]}
    killed = {k for f in flags if f.name in engaged for k in f.kills}
    return tuple(
        FlagState(f.name, dict(f.shares)[stage], f.name in engaged, f.name in killed,
                  () if f.follows_stage and stage == ROLLBACK else f.allow)
        for f in flags
    )
