"""Blue-green: the Services switch colour at the switch stage (and back on rollback); the routers
send testers and the weighted steps to the preview Service.  Checked at every stage of every
blue-green spec: which version a user and a tester end up on, through each router and Service."""

from __future__ import annotations

from fractions import Fraction

import pytest
import yaml

from compiler.gates import conventions as c
from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets.routers import gateway_api
from compiler.targets.routers import ingress_nginx
from compiler.targets.routers import istio
from compiler.targets.routers import kube_service
from conftest import GOLDEN, SPECS, compile_files, plan_of
from kubecheck import Outcome, Request, route_http_route, route_ingress_nginx, route_istio

BLUE_GREEN = [
    (GOLDEN / "in-blue-green.yaml", None),
    (SPECS / "ai-orchestra.yaml", "production"),
    (SPECS / "ai-orchestra.yaml", "staging"),
]


def blue_green_plans() -> list[Plan]:
    return [plan_of(path, env) for path, env in BLUE_GREEN]


def stages(plan: Plan) -> list[str]:
    return [s.name for s in plan.stages] + [ROLLBACK]


def services(plan: Plan) -> dict[str, dict]:
    docs = [yaml.safe_load(text) for text in kube_service.render(plan).values()]
    return {d["metadata"]["name"]: d for d in docs}


def routed(plan: Plan, target: str, request: Request) -> Outcome:
    """Where ``target`` sends ``request``: {Service name: share}."""
    if target == "gateway-api":
        outcome = route_http_route(gateway_api.http_route(plan), request)
    elif target == "ingress-nginx":
        outcome = route_ingress_nginx(ingress_nginx.stable_ingress(plan), ingress_nginx.canary_ingress(plan), request)
    else:
        outcome = route_istio(istio.virtual_service(plan), plan.stable.backend,
                              Request(plan.stable.backend, request.path, request.headers))
    assert outcome is not None
    return outcome


def new_version_share(plan: Plan, outcome: Outcome, by_name: dict[str, dict]) -> Fraction:
    """The share of requests that reach pods of the new colour."""
    bg = plan.blue_green
    assert bg is not None
    share = Fraction(0)
    for service, part in outcome.shares.items():
        if by_name[service]["spec"]["selector"][bg.color_label] == bg.new_color:
            share += part
    return share


ROUTERS = ("gateway-api", "ingress-nginx", "istio")


@pytest.mark.parametrize("plan", blue_green_plans(), ids=lambda p: p.id)
def test_the_active_service_switches_colour_at_the_switch_and_back_on_rollback(plan: Plan):
    bg = plan.blue_green
    assert bg is not None
    switched = False
    for name in stages(plan):
        by_name = services(plan.at(name))
        assert set(by_name) == {plan.names.active_service, plan.names.preview_service}
        switched = switched or name == "switch"
        colour = bg.new_color if switched and name != ROLLBACK else bg.old_color
        assert by_name[plan.names.active_service]["spec"]["selector"] == {**dict(bg.selector), bg.color_label: colour}
        assert by_name[plan.names.preview_service]["spec"]["selector"] == {
            **dict(bg.selector),
            bg.color_label: bg.new_color,
        }
        for service in by_name.values():
            assert service["spec"]["ports"] == [
                {"name": "http", "protocol": "TCP", "port": plan.port, "targetPort": plan.target_port}]


@pytest.mark.parametrize("plan", blue_green_plans(), ids=lambda p: p.id)
def test_users_and_testers_reach_the_new_version_as_each_stage_says(plan: Plan):
    assert plan.testers is not None
    routers = [t for t in ROUTERS if t in plan.targets]
    assert routers
    for name in stages(plan):
        at = plan.at(name)
        by_name = services(at)
        for target in routers:
            users = routed(at, target, Request(plan.host, plan.path))
            assert new_version_share(at, users, by_name) == at.current.weight, (name, target)
            assert users.shares.get(plan.names.preview_service, Fraction(0)) == at.current.route_weight
            for value in plan.testers.values:
                testers = routed(at, target, Request(plan.host, plan.path, ((plan.testers.header, value),)))
                expected = Fraction(0) if name == ROLLBACK else Fraction(1)
                assert new_version_share(at, testers, by_name) == expected, (name, target, value)
                if name != ROLLBACK:
                    assert testers.shares == {plan.names.preview_service: 1}, (name, target)


def test_ai_orchestra_production_walks_preview_steps_and_switch():
    plan = plan_of(SPECS / "ai-orchestra.yaml", "production")
    assert stages(plan) == [
        "preview",
        "canary-5",
        "canary-10",
        "canary-25",
        "canary-50",
        "canary-75",
        "switch",
        ROLLBACK,
    ]
    assert plan.target_port == 8000 and plan.port == 80
    assert plan.names.active_service == "ai-orchestra" and plan.names.preview_service == "ai-orchestra-preview"


def test_the_staging_environment_switches_without_steps():
    plan = plan_of(SPECS / "ai-orchestra.yaml", "staging")
    assert stages(plan) == ["preview", "switch", ROLLBACK] and plan.current.name == "switch"
    assert services(plan)["ai-orchestra"]["spec"]["selector"]["version"] == "green"
    assert plan.namespace == "staging"


def test_a_canary_rollout_has_no_generated_services():
    assert kube_service.render(plan_of(GOLDEN / "in-tiny-canary.yaml")) == {}


def test_the_comment_says_which_colour_each_service_selects():
    plan = plan_of(GOLDEN / "in-blue-green.yaml")
    switched = kube_service.render(plan.at("switch"))
    assert "# Blue-green: orchestra, the Service users reach, selects version=green (v2.0.0)." in \
        switched["kube-service/service-active.yaml"]
    before = kube_service.render(plan.at("preview"))
    assert "selects version=blue (v1.9.0)." in before["kube-service/service-active.yaml"]
    assert before["kube-service/service-preview.yaml"] == switched["kube-service/service-preview.yaml"]


def test_routers_that_address_servers_send_the_switch_to_the_new_colour():
    """HAProxy and nginx route to each colour's servers, not to a Service whose selector flips."""
    from compiler.targets.routers import haproxy
    from compiler.targets.routers import nginx

    plan = plan_of(GOLDEN / "in-blue-green.yaml")
    new, old = plan.canary.backend, plan.stable.backend
    switch = haproxy.render(plan.at("switch"))["haproxy/haproxy.cfg"]
    assert f"    use_backend {new} if rollout_canary_usable\n" in switch
    rolled = haproxy.render(plan.at("rollback"))["haproxy/haproxy.cfg"]
    assert f"use_backend {new}" not in rolled and f"default_backend {old}" in rolled
    conf = nginx.render(plan.at("switch"))["nginx/nginx.conf"]
    assert "every request goes to the canary" in conf
    assert "default rollout_production__orchestra_canary;" in conf


SERVICES_ONLY = """apiVersion: rollout-compiler/v1
kind: Rollout
metadata: {name: web, namespace: shop, owner: web-team}
service:
  host: web.example.com
  port: 80
  target_port: 8080
  stable: {version: v1, backend: web-active}
  canary: {version: v2, backend: web-preview}
traffic: {targets: []}
strategy:
  blue-green: {selector: {app: web}, color_label: color, preview: 1h, switch_hold: 10m, gates: {error_rate: "< 1%"}}
current: preview
"""


def test_a_blue_green_of_services_alone_switches_without_a_router(tmp_path):
    """Argo Rollouts' activeService/previewService: no router, no testers header; the Services do it all."""
    from compiler import pipeline

    spec = tmp_path / "web.yaml"
    spec.write_text(SERVICES_ONLY)
    plan = plan_of(spec)
    assert plan.traffic(plan.current) == "preview Service only"
    for stage, colour in (("preview", "blue"), ("switch", "green"), (ROLLBACK, "blue")):
        assert services(plan.at(stage))["web-active"]["spec"]["selector"] == {"app": "web", "color": colour}
    files = compile_files(spec)
    assert {p.split("/")[2] for p in files if p.startswith("shop/web/") and p.count("/") > 2} <= {
        "kube-service", "prometheus", "grafana", "rollback"}
    for old, new, says in (
        ("preview: 1h,", "preview: 1h, steps: [50],", "weighted steps need a router"),
        ("targets: []", "targets: [istio]", "give traffic.testers"),
    ):
        spec.write_text(SERVICES_ONLY.replace(old, new))
        assert any(says in d.message and d.severity == "error" for d in pipeline.analyse([spec]).diagnostics), says


@pytest.mark.parametrize("source, label", [("istio", "destination_service_name"), ("ingress-nginx", "canary")])
def test_the_canary_series_read_the_route_its_users_take_at_every_stage(tmp_path, source, label):
    """The gates judge the new version where its users reach it: the preview route before the switch, the
    active Service's after it (a source that tells the variants apart by route or Service)."""
    text = (GOLDEN / "in-blue-green.yaml").read_text().replace(
        "    selector: {app: orchestra}\n", "    selector: {app: orchestra}\n    color_label: color\n")
    path = tmp_path / "bg.yaml"
    path.write_text(text + f"metrics: {{source: {source}}}\n")
    plan = plan_of(path)
    target = "istio" if source == "istio" else "ingress-nginx"
    for name in stages(plan)[:-1]:
        at = plan.at(name)
        users = routed(at, target, Request(plan.host, plan.path))
        by_name = services(at)
        new = {service for service, share in users.shares.items()
               if share and by_name[service]["spec"]["selector"]["color"] == plan.blue_green.new_color}
        counters = c.variant_metrics(at, "canary").counters
        assert counters is not None
        selected = dict((k, v) for k, op, v in counters.labels if op == "=")
        if source == "istio":
            assert (selected[label] in new) == bool(new), name
            assert selected["destination_version"] == plan.canary.version
        else:  # the canary Ingress's series carry canary=<its backend>, the main Ingress's canary=""
            reached = {plan.names.preview_service: f"{plan.namespace}-{plan.canary.backend}-{plan.canary.port}",
                       plan.names.active_service: ""}
            assert (selected[label] in {reached[s] for s in new}) == bool(new), name
