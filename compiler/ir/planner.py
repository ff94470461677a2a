"""planner: a validated spec -> its :class:`~compiler.ir.plan.Plan`.

Everything a target needs is decided here, once: stage shares as exact
fractions, which stage is in effect, gates with their thresholds, windows and
alert labels, the metrics source's queries, flag states per stage, and the
names of every generated object.  The plan holds no pydantic object: targets
never look at the spec.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

from compiler.gates import presets
from compiler.ir.plan import (
    ApprovalPlan,
    HAProxyPlan,
    MonitorPlan,
    ACTIONS,
    DEFAULT_FOR,
    JUDGED_FOR,
    PRESETS,
    ROLLBACK,
    SEVERITIES,
    AlertingPlan,
    ArgoCDPlan,
    BlueGreenPlan,
    EmailPlan,
    FlagPlan,
    FluxPlan,
    GatePlan,
    GatewayPlan,
    GitOpsPlan,
    HealthPlan,
    Loc,
    MetricsPlan,
    Names,
    PagerDutyPlan,
    Plan,
    ReceiverPlan,
    SecretPlan,
    ServerPlan,
    SlackPlan,
    Source,
    StagePlan,
    StickyPlan,
    TestersPlan,
    VariantPlan,
    WebhookPlan,
    flag_states,
)
from compiler.spec import model, names
from compiler.spec.units import format_decimal, format_latency, format_percent


# --------------------------------------------------------------------------- construction


def _gate_plans(gates: model.Gates | None, loc: Loc, spec: model.RolloutSpec, on_breach: str) -> tuple[GatePlan, ...]:
    if gates is None:
        return ()
    window = spec.metrics.window
    out: list[GatePlan] = []

    def common(g: model._Gate) -> dict[str, Any]:
        default_for = DEFAULT_FOR if isinstance(g, model.CustomGate) else JUDGED_FOR
        breach = g.on_breach or on_breach
        return {"window": g.window or window, "for_": g.for_ or default_for,
                "severity": g.severity or SEVERITIES[breach], "on_breach": breach, "action": ACTIONS[breach]}

    error = gates.error_rate
    if error is not None:
        out.append(GatePlan("error_rate", "error_rate", error.max, "max", None, query=None,
                            description=f"error rate < {format_percent(error.max)}", loc=loc + ("error_rate",),
                            **common(error)))
    for key, quantile in (("p95_latency", Fraction(95, 100)), ("p99_latency", Fraction(99, 100))):
        latency: model.LatencyGate | None = getattr(gates, key)
        if latency is not None:
            out.append(GatePlan(key, "latency", latency.max, "max", quantile, query=None,
                                description=f"p{int(quantile * 100)} latency < {format_latency(latency.max)}",
                                loc=loc + (key,), **common(latency)))
    ratio = gates.error_rate_vs_stable
    if ratio is not None:
        out.append(GatePlan("error_rate_vs_stable", "ratio", ratio.max, "max", None, query=None,
                            description=f"canary error rate <= {format_decimal(ratio.max)}x stable",
                            loc=loc + ("error_rate_vs_stable",), **common(ratio)))
    for name in sorted(gates.custom):
        custom = gates.custom[name]
        bound = "max" if custom.max is not None else "min"
        threshold = custom.max if custom.max is not None else custom.min
        assert threshold is not None  # the model requires exactly one of them
        sign = "<=" if bound == "max" else ">="
        out.append(GatePlan(name, "custom", threshold, bound, None, query=custom.query,
                            description=custom.description or f"{name} {sign} {format_decimal(threshold)}",
                            loc=loc + ("custom", name), **common(custom)))
    return tuple(out)


def _stage(index: int, name: str, kind: str, weight: Fraction, mirror: Fraction, hold: int | None,
           gates: tuple[GatePlan, ...], on_breach: str, testers: bool, loc: Loc,
           route_weight: Fraction | None = None, active_color: str | None = None) -> StagePlan:
    return StagePlan(
        index=index, name=name, kind=kind, weight=weight,
        route_weight=weight if route_weight is None else route_weight, mirror=mirror, hold=hold, gates=gates,
        on_breach=on_breach, action=ACTIONS[on_breach], severity=SEVERITIES[on_breach], testers=testers,
        active_color=active_color, loc=loc,
    )


def step_name(share: Fraction) -> str:
    if share == 1:
        return "full"
    text = format_decimal(share * 100, 6).replace(".", "p")
    return f"canary-{text}"


def _kind(weight: Fraction, mirror: Fraction) -> str:
    if mirror > 0:
        return "shadow"
    return "full" if weight == 1 else "canary"


def stages_of(spec: model.RolloutSpec) -> tuple[StagePlan, ...]:
    """The stages of a spec: its own, or those its strategy expands into."""
    return _approvals(spec, _stages(spec, spec.traffic.testers is not None))


def _approvals(spec: model.RolloutSpec, stages: tuple[StagePlan, ...]) -> tuple[StagePlan, ...]:
    """The stages a person approves: `approve: manual` on a stage, or named in the strategy's `approve`."""
    if spec.stages is not None:
        wanted = {s.name for s in spec.stages if s.approve == "manual"}
    elif isinstance(spec.strategy, model.PresetStrategy):
        wanted = set(spec.strategy.approve)
    elif isinstance(spec.strategy, model.BlueGreenStrategy):
        wanted = set(spec.strategy.blue_green.approve)
    else:
        wanted = set()
    return tuple(dataclasses.replace(s, approve=True) if s.name in wanted else s for s in stages)


def _stages(spec: model.RolloutSpec, testers: bool) -> tuple[StagePlan, ...]:
    stages: list[StagePlan] = []
    if spec.stages is not None:
        for i, s in enumerate(spec.stages):
            weight = s.weight or Fraction(0)
            mirror = s.mirror or Fraction(0)
            loc = ("stages", i)
            gates = _gate_plans(s.gates, loc + ("gates",), spec, s.on_breach)
            stages.append(
                _stage(i, s.name, _kind(weight, mirror), weight, mirror, s.hold, gates, s.on_breach, testers, loc)
            )
        return tuple(stages)
    strategy = spec.strategy
    if isinstance(strategy, model.PresetStrategy):
        steps: list[tuple[Fraction, int, Loc]]
        if strategy.preset == "custom":
            hold = strategy.hold or 300
            steps = [(s.weight, s.hold or hold, ("strategy", "steps", i)) for i, s in enumerate(strategy.steps or [])]
        else:
            weights, default_hold = PRESETS[strategy.preset]
            hold = strategy.hold or default_hold
            steps = [(Fraction(w, 100), hold, ("strategy", "preset")) for w in weights]
        if strategy.shadow:
            stages.append(
                _stage(
                    0,
                    "shadow",
                    "shadow",
                    Fraction(0),
                    Fraction(1),
                    strategy.shadow,
                    (),
                    strategy.on_breach,
                    testers,
                    ("strategy", "shadow"),
                )
            )
        for i, (weight, step_hold, step_loc) in enumerate(steps):
            last = i == len(steps) - 1
            on_breach = (strategy.final_on_breach or strategy.on_breach) if last else strategy.on_breach
            gates = _gate_plans(strategy.gates, ("strategy", "gates"), spec, on_breach)
            stages.append(_stage(len(stages), step_name(weight), _kind(weight, Fraction(0)), weight, Fraction(0),
                                 step_hold, gates, on_breach, testers, step_loc))
        return tuple(stages)
    bg = strategy.blue_green  # type: ignore[union-attr]
    old, new = bg.active, ("green" if bg.active == "blue" else "blue")
    gates = _gate_plans(bg.gates, ("strategy", "blue-green", "gates"), spec, bg.on_breach)
    stages.append(_stage(0, "preview", "preview", Fraction(0), Fraction(0), bg.preview, gates, bg.on_breach, True,
                         ("strategy", "blue-green", "preview"), active_color=old))
    for i, step in enumerate(bg.steps):
        stages.append(_stage(len(stages), step_name(step.weight), "canary", step.weight, Fraction(0),
                             step.hold or bg.hold or 300, gates, bg.on_breach, True,
                             ("strategy", "blue-green", "steps", i), active_color=old))
    stages.append(_stage(len(stages), "switch", "switch", Fraction(1), Fraction(0), bg.switch_hold, gates, bg.on_breach,
                         True, ("strategy", "blue-green", "switch_hold"), route_weight=Fraction(0), active_color=new))
    return tuple(stages)


def _rollback_stage(blue_green: BlueGreenPlan | None) -> StagePlan:
    return _stage(-1, ROLLBACK, "rollback", Fraction(0), Fraction(0), None, (), "rollback", False, ("current",),
                  active_color=blue_green.old_color if blue_green else None)


def _flags(spec: model.RolloutSpec, stages: tuple[StagePlan, ...], rollback: StagePlan) -> tuple[FlagPlan, ...]:
    ordinary = [name for name, f in spec.flags.items() if not f.kill_switch]
    out = []
    for name in sorted(spec.flags):
        flag = spec.flags[name]
        all_stages = stages + (rollback,)
        if flag.kill_switch:
            engaged = tuple(
                (s.name, flag.engaged or (s.kind == "rollback" and flag.engage_on_rollback)) for s in all_stages
            )
            shares = tuple((s.name, Fraction(int(e))) for s, (_, e) in zip(all_stages, engaged))
            kills = tuple(sorted(flag.kills if flag.kills is not None else ordinary))
        else:
            engaged = tuple((s.name, False) for s in all_stages)
            if flag.rollout == "follow-stage":
                shares = tuple((s.name, s.weight) for s in all_stages)
            else:
                fixed = flag.rollout if flag.rollout is not None else Fraction(0)
                shares = tuple((s.name, fixed) for s in all_stages)
            kills = ()
        out.append(FlagPlan(
            name=name, kind="kill_switch" if flag.kill_switch else "release",
            follows_stage=flag.rollout == "follow-stage", shares=shares, engaged=engaged,
            allow=tuple(flag.allow), requires=tuple(flag.requires), kills=kills, env=flag.env,
            description=flag.description, loc=("flags", name),
        ))
    return tuple(out)


def _names(spec: model.RolloutSpec, environment: str | None) -> Names:
    n = spec.metadata.name
    camel = "".join(part.capitalize() for part in n.split("-"))
    scope = ".".join(p for p in (environment, spec.metadata.namespace, n) if p)
    return Names(
        ingress=n, canary_ingress=f"{n}-canary", http_route=n, virtual_service=n, destination_rule=n,
        canary_destination_rule=f"{n}-canary",
        active_service=spec.service.stable.backend, preview_service=spec.service.canary.backend,
        haproxy_configmap=f"{n}-haproxy", nginx_configmap=f"{n}-nginx", flags_configmap=f"{n}-flags",
        dashboard_configmap=f"{n}-dashboard", prometheus_rule=f"{n}-rollout",
        alertmanager_configmap=f"{n}-alertmanager",
        dashboard_uid="rollout-" + names.short_hash(environment or "", spec.metadata.namespace, n, length=20),
        alert_prefix=camel, rule_group=f"rollout.{scope}",
        rollback_guard_alert=f"{camel}CanaryTrafficAfterRollback",
        argo_application=names.controller_name(environment, spec.metadata.namespace, n),
    )


def _variant(role: str, v: model.Variant, port: int, color: str | None) -> VariantPlan:
    servers = []
    for s in v.servers:
        host, number = names.check_server_address(s.address)
        servers.append(ServerPlan(s.address, host, number, s.backup))
    return VariantPlan(role, v.version, v.backend, v.port or port, tuple(servers), color)


def _metrics(spec: model.RolloutSpec, stable: VariantPlan, canary: VariantPlan, ingress: str,
             blue_green: bool) -> MetricsPlan:
    m = spec.metrics
    scrape = presets.Scrape(m.namespace_label, m.workload_label, m.workload)

    def queries(variant: VariantPlan, backend: str) -> presets.VariantMetrics:
        labels = presets.VariantLabels(variant.role, variant.version, backend, variant.port, spec.metadata.namespace)
        if m.source == "custom":
            custom = m.custom
            assert custom is not None  # checked by the rules
            return presets.from_templates(custom.requests, custom.errors, custom.latency, labels)
        return presets.preset(m.source, spec.metadata.name, spec.metadata.namespace, ingress, labels, scrape)

    before = (queries(stable, stable.backend), queries(canary, canary.backend))
    after_switch = None
    if blue_green and m.source == "ingress-nginx":
        # ingress-nginx tells the variants apart by the Ingress a request took: after the switch the main
        # Ingress (to the active Service) carries the new colour's users, the canary Ingress its testers.
        after_switch = (before[1], before[0])
    elif blue_green and m.source == "istio":
        # Istio names the Service a request was sent to: users now reach the new version through the active one.
        after_switch = (before[0], queries(canary, stable.backend))
    monitor = (MonitorPlan(m.monitor.kind, tuple(sorted(m.monitor.selector.items())), m.monitor.port, m.monitor.path)
               if m.monitor else None)
    return MetricsPlan(m.source, m.min_requests, m.expected_rps, m.window, before[0], before[1],
                       m.scrape_interval, m.evaluation_interval, monitor, after_switch)


def _secret(ref: model.SecretRef | None) -> SecretPlan | None:
    return SecretPlan(ref.name, ref.key) if ref else None


def _receiver(r: model.Receiver) -> ReceiverPlan:
    e, w = r.email, r.webhook
    return ReceiverPlan(
        pagerduty=PagerDutyPlan(r.pagerduty.routing_key_file, _secret(r.pagerduty.routing_key_secret))
        if r.pagerduty else None,
        slack=SlackPlan(r.slack.channel, r.slack.api_url_file, _secret(r.slack.api_url_secret)) if r.slack else None,
        email=EmailPlan(e.to, e.from_, e.smarthost, e.auth_username, e.auth_password_file,
                        _secret(e.auth_password_secret)) if e else None,
        webhook=WebhookPlan(w.url, w.url_file, _secret(w.url_secret), w.bearer_token_file,
                            _secret(w.bearer_token_secret)) if w else None,
    )


def _gateway(g: model.GatewayRef | None) -> GatewayPlan | None:
    return GatewayPlan(g.name, g.namespace, g.section) if g else None


def _gitops(g: model.GitOps | None) -> GitOpsPlan | None:
    if g is None:
        return None
    a, f = g.argocd, g.flux
    return GitOpsPlan(
        g.path,
        ArgoCDPlan(a.repo_url, a.target_revision, a.project, a.namespace, a.destination_server, a.automated)
        if a
        else None,
        FluxPlan(f.source, f.source_namespace, f.namespace, f.interval, f.prune) if f else None,
    )


def build(spec: model.RolloutSpec, source: Source, environment: str | None = None) -> Plan:
    """A plan of a spec that passed ``compiler.rules``."""
    meta = spec.metadata
    bg_spec = spec.strategy.blue_green if isinstance(spec.strategy, model.BlueGreenStrategy) else None
    blue_green = None
    if bg_spec is not None:
        new = "green" if bg_spec.active == "blue" else "blue"
        blue_green = BlueGreenPlan(tuple(sorted(bg_spec.selector.items())), bg_spec.color_label, bg_spec.active, new)
    stable = _variant("stable", spec.service.stable, spec.service.port, blue_green.old_color if blue_green else None)
    canary = _variant("canary", spec.service.canary, spec.service.port, blue_green.new_color if blue_green else None)
    testers = spec.traffic.testers
    stages = _approvals(spec, _stages(spec, testers is not None))
    rollback = _rollback_stage(blue_green)
    current = rollback if spec.current == ROLLBACK else next(s for s in stages if s.name == spec.current)
    flags = _flags(spec, stages, rollback)
    plan_names = _names(spec, environment)
    health = spec.service.health
    alerting = None
    if spec.alerting is not None:
        r = spec.alerting.routes
        alerting = AlertingPlan(
            receivers=tuple((name, _receiver(r)) for name, r in sorted(spec.alerting.receivers.items())),
            routes=(("critical", tuple(r.critical)), ("warning", tuple(r.warning)), ("info", tuple(r.info)),
                    ("rollback", tuple(r.rollback))),
            grafana_url=spec.alerting.grafana_url,
            operator=spec.alerting.operator,
        )
    sticky = spec.traffic.sticky
    return Plan(
        source=source, environment=environment, name=meta.name, namespace=meta.namespace, owner=meta.owner,
        runbook=meta.runbook, labels=tuple(sorted(meta.labels.items())),
        out="/".join(p for p in (environment, meta.namespace, meta.name) if p),
        host=spec.service.host, path=spec.service.path, port=spec.service.port,
        target_port=spec.service.target_port or spec.service.port,
        health=HealthPlan(health.path, health.interval, health.timeout or min(health.interval, 5), health.expect_status,
                          health.fall, health.rise) if health else None,
        stable=stable, canary=canary, targets=tuple(spec.traffic.targets),
        sticky=StickyPlan("header", sticky.header) if sticky and sticky.header else (
            StickyPlan("cookie", sticky.cookie) if sticky and sticky.cookie else None),
        testers=TestersPlan(testers.header, tuple(testers.values)) if testers else None,
        gateway=_gateway(spec.traffic.gateway), ingress_class=spec.traffic.ingress_class,
        strategy="blue-green" if blue_green else "canary", blue_green=blue_green,
        stages=stages, rollback_stage=rollback, current=current,
        flags=flags, flag_states=flag_states(flags, current.name),
        metrics=_metrics(spec, stable, canary, plan_names.ingress, blue_green is not None),
        alerting=alerting, rollback_within=spec.rollback.within, preserve=tuple(spec.rollback.preserve),
        gitops=_gitops(spec.gitops), names=plan_names,
        approved=ApprovalPlan(spec.approved.stage, spec.approved.by, spec.approved.at) if spec.approved else None,
        haproxy=HAProxyPlan(spec.traffic.haproxy.exporter_port, spec.traffic.haproxy.admin_socket,
                            tuple(spec.traffic.haproxy.hosts)),
        istio_gateways=tuple(spec.traffic.istio.gateways),
    )
