"""gateway-api: the HTTPRoute realises each stage exactly under the Gateway API's matching rules."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from compiler import pipeline
from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets.routers import gateway_api
from conftest import ALL_SPECS, GOLDEN, ROOT, SPECS, plan_of, plans_of
from kubecheck import Request, route_http_route

TINY = GOLDEN / "in-tiny-canary.yaml"


def route_of(plan: Plan) -> dict:
    return yaml.safe_load(gateway_api.render(plan)["gateway-api/httproute.yaml"])


def gateway_plans() -> list[Plan]:
    return [p for p in plans_of(*ALL_SPECS) if "gateway-api" in p.targets]


@lru_cache(maxsize=1)
def tiny_canary() -> Plan:
    return plan_of(TINY).at("canary")


def user(plan: Plan, headers: tuple = ()) -> Request:
    return Request(plan.host, plan.path, headers)


def test_the_tiny_canary_is_exactly_1_to_999():
    route = route_of(plan_of(TINY).at("canary"))
    split = route["spec"]["rules"][-1]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in split] == [("ledger-v1", 999), ("ledger-v2", 1)]


@given(st.integers(0, 1_000_000).map(lambda n: Fraction(n, 1_000_000)))
def test_any_share_is_exact_within_the_weight_limit(share):
    plan = tiny_canary()
    at = replace(plan, current=replace(plan.current, route_weight=share, weight=share))
    route = gateway_api.http_route(at)
    weights = [b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]]
    assert all(0 <= w <= 1_000_000 for w in weights)
    outcome = route_http_route(route, user(at))
    assert outcome.shares.get("ledger-v2", Fraction(0)) == share


@pytest.mark.parametrize("plan", gateway_plans(), ids=lambda p: p.id)
def test_every_stage_routes_its_share_and_testers_reach_the_canary(plan: Plan):
    for name in [s.name for s in plan.stages] + [ROLLBACK]:
        at = plan.at(name)
        route = route_of(at)
        outcome = route_http_route(route, user(at))
        assert outcome.shares.get(plan.canary.backend, Fraction(0)) == at.current.route_weight, name
        if plan.testers is not None:
            for value in plan.testers.values:
                tested = route_http_route(route, user(at, ((plan.testers.header.lower(), value),)))
                expected = Fraction(1) if name != ROLLBACK else Fraction(0)
                assert tested.shares.get(plan.canary.backend, Fraction(0)) == expected, (name, value)
        elsewhere = Request(plan.host, plan.path.rstrip("/") + "x" if plan.path != "/" else "/", ())
        if plan.path != "/":
            assert route_http_route(route, elsewhere) is None  # other paths of the host are not this route's
        assert route_http_route(route, Request("other.example.org", plan.path)) is None


def test_the_tester_rule_comes_first_and_matches_each_value_on_the_path(tmp_path):
    text = (GOLDEN / "in-checkout.yaml").read_text().replace("  path: /\n", "  path: /api\n")
    spec = tmp_path / "checkout.yaml"
    spec.write_text(text.replace("values: [internal-testing, beta-users]", "values: [platform-oncall]"))
    rules = route_of(plan_of(spec))["spec"]["rules"]
    assert rules[0]["matches"] == [{
        "path": {"type": "PathPrefix", "value": "/api"},
        "headers": [{"type": "Exact", "name": "X-Canary", "value": "platform-oncall"}],
    }]
    assert [b["name"] for b in rules[0]["backendRefs"]] == ["checkout-v2"]


def test_shadow_mirrors_every_request_and_serves_nothing():
    plan = plan_of(SPECS / "moe-intelligence.yaml")
    assert plan.current.name == "shadow"
    route = route_of(plan)
    split = route["spec"]["rules"][-1]
    assert split["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "", "kind": "Service", "name": "verdict-moe-v2-1", "port": 8080}}}]
    outcome = route_http_route(route, user(plan))
    assert outcome.shares == {"verdict-v1-9": 1} and outcome.mirrored == {"verdict-moe-v2-1": 1}


@pytest.mark.parametrize("share,fields", [
    (Fraction(1), {}),
    (Fraction(5, 100), {"percent": 5}),
    (Fraction(1, 1000), {"fraction": {"numerator": 1, "denominator": 1000}}),
    (Fraction(1, 3), {"fraction": {"numerator": 1, "denominator": 3}}),
])
def test_a_partial_mirror_is_exact(share, fields):
    assert gateway_api.mirror_share_fields(share) == fields


def test_rollback_sends_everyone_to_stable_without_tester_rule_or_mirror():
    plan = plan_of(GOLDEN / "in-shadow.yaml").at(ROLLBACK)
    rules = route_of(plan)["spec"]["rules"]
    assert len(rules) == 1 and "filters" not in rules[0]
    assert [(b["name"], b["weight"]) for b in rules[0]["backendRefs"]] == [("search-v1", 1), ("search-v2", 0)]


def test_parent_refs_hostnames_and_path_come_from_the_spec():
    plan = plan_of(SPECS / "moe-intelligence.yaml")
    spec = route_of(plan)["spec"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                   "name": "public", "namespace": "gateway-system"}]
    assert spec["hostnames"] == ["verdicts.trust.example.com"]
    plan = replace(plan, gateway=replace(plan.gateway, section="https"))
    assert gateway_api.parent_ref(plan)["sectionName"] == "https"


def test_without_a_gateway_the_route_attaches_to_the_default_one_and_lint_says_so():
    plan = plan_of(TINY)
    assert route_of(plan)["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gateway"}]
    found = [d for d in pipeline.analyse([TINY]).diagnostics if "traffic.gateway is not set" in d.message]
    assert len(found) == 1 and found[0].severity == "warning"
    assert "'gateway' in namespace 'shop'" in found[0].message
    line = TINY.read_text().splitlines()[found[0].line - 1]
    assert line[found[0].col - 1:].startswith("gateway-api")


def test_every_route_stays_within_the_api_limits():
    for plan in gateway_plans():
        for name in [s.name for s in plan.stages] + [ROLLBACK]:
            rules = route_of(plan.at(name))["spec"]["rules"]
            assert len(rules) <= 16
            assert sum(len(r["matches"]) for r in rules) <= 128
            for rule in rules:
                assert len(rule["backendRefs"]) <= 16 and len(rule["matches"]) <= 64
                assert all("port" in b and b["kind"] == "Service" for b in rule["backendRefs"])


def test_more_tester_values_than_a_rule_can_match_is_a_located_error(tmp_path: Path):
    plan = tiny_canary()
    at_limit = replace(plan, testers=replace(plan.testers, values=tuple(f"t{i}" for i in range(64))))
    assert not [f for f in gateway_api.lint(at_limit) if f.severity == "error"]
    assert len(gateway_api.tester_rule(at_limit)["matches"]) == 64
    values = ", ".join(f"t{i}" for i in range(65))
    text = TINY.read_text().replace("values: [internal-testing, beta-users]", f"values: [{values}]")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    found = [d for d in pipeline.analyse([path]).diagnostics if d.code == "gateway-api" and d.severity == "error"]
    assert len(found) == 1 and "at most 64" in found[0].message
    line = text.splitlines()[found[0].line - 1]
    assert line[found[0].col - 1:].startswith("t64]")


def test_the_comment_says_the_share_and_its_error():
    text = gateway_api.render(plan_of(TINY).at("canary"))["gateway-api/httproute.yaml"]
    assert "# Router share to ledger-v2: canary share 0.1%: 1/1000 = 0.1% (exact)" in text
    assert text.index("# Router share") < text.index("apiVersion:")


@pytest.mark.parametrize("weight, severity", [("0.00001%", "error"), ("0.00005%", "error"),
                                              ("33.3333333%", "warning"), ("0.0001%", None)])
def test_a_share_finer_than_the_split_is_refused_when_far_off_and_a_warning_when_close(tmp_path, weight, severity):
    """The README promises exact shares: a share the weights realise ten times over is an error, not a warning."""
    text = (ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text()
    text = text.replace("weight: 5%", f"weight: {weight}")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    found = [d for d in pipeline.analyse([spec]).diagnostics if d.code == "gateway-api"]
    assert [d.severity for d in found] == ([severity] if severity else [])
    if severity == "error":
        assert "more than 10% away from the share the stage asks for" in found[0].message
