"""istio: the VirtualService and DestinationRules realise each stage exactly, in Istio's route order."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from functools import lru_cache

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from compiler.ir.plan import ROLLBACK, Plan, StickyPlan
from compiler.targets.routers import istio
from conftest import ALL_SPECS, GOLDEN, SPECS, plan_of, plans_of
from kubecheck import Request, route_istio

TINY = GOLDEN / "in-tiny-canary.yaml"


def objects(plan: Plan) -> tuple[dict, dict, dict]:
    files = istio.render(plan)
    return tuple(yaml.safe_load(files[f"istio/{name}.yaml"])  # type: ignore[return-value]
                 for name in ("virtualservice", "destinationrule-stable", "destinationrule-canary"))


def istio_plans() -> list[Plan]:
    return [p for p in plans_of(*ALL_SPECS) if "istio" in p.targets]


@lru_cache(maxsize=1)
def tiny_canary() -> Plan:
    return plan_of(TINY).at("canary")


def canary_key(plan: Plan) -> str:
    return plan.canary.backend + ("/canary" if plan.blue_green is None else "")


def request(plan: Plan, headers: tuple = (), path: str | None = None) -> Request:
    return Request(plan.stable.backend, path or plan.path, headers)


def share_to_canary(plan: Plan, vs: dict, headers: tuple = (), path: str | None = None) -> Fraction:
    outcome = route_istio(vs, plan.stable.backend, request(plan, headers, path))
    assert outcome is not None and sum(outcome.shares.values()) == 1
    return outcome.shares.get(canary_key(plan), Fraction(0))


def test_the_tiny_canary_is_exactly_999_to_1():
    vs, _, _ = objects(plan_of(TINY).at("canary"))
    split = next(r for r in vs["spec"]["http"] if r["name"] == "split")
    assert [(d["destination"]["subset"], d["weight"]) for d in split["route"]] == [("stable", 999), ("canary", 1)]


@given(st.integers(0, 1_000_000).map(lambda n: Fraction(n, 1_000_000)))
def test_any_share_is_exact(share):
    plan = tiny_canary()
    at = replace(plan, current=replace(plan.current, route_weight=share, weight=share))
    assert share_to_canary(at, istio.virtual_service(at)) == share


@pytest.mark.parametrize("plan", istio_plans(), ids=lambda p: p.id)
def test_every_stage_routes_its_share_and_testers_reach_the_canary(plan: Plan):
    for name in [s.name for s in plan.stages] + [ROLLBACK]:
        at = plan.at(name)
        vs, stable_rule, canary_rule = objects(at)
        assert share_to_canary(at, vs) == at.current.route_weight, name
        if plan.testers is not None:
            for value in plan.testers.values:
                expected = Fraction(0) if name == ROLLBACK else Fraction(1)
                assert share_to_canary(at, vs, ((plan.testers.header, value),)) == expected, (name, value)
            assert share_to_canary(at, vs, ((plan.testers.header, "someone-else"),)) == at.current.route_weight
        if name == ROLLBACK:
            assert all("mirror" not in r for r in vs["spec"]["http"])


@pytest.mark.parametrize("plan", istio_plans(), ids=lambda p: p.id)
def test_every_destination_names_a_subset_its_destination_rule_defines(plan: Plan):
    vs, *rules = objects(plan.at(plan.stages[-1].name))
    subsets = {(r["spec"]["host"], s["name"]): s["labels"] for r in rules for s in r["spec"].get("subsets", [])}
    hosts = {r["spec"]["host"] for r in rules}
    for route in vs["spec"]["http"]:
        for d in [x["destination"] for x in route["route"]] + ([route["mirror"]] if "mirror" in route else []):
            assert d["host"] in hosts
            if "subset" in d:
                assert (d["host"], d["subset"]) in subsets


def test_subsets_select_the_version_the_metrics_source_queries():
    plan = plan_of(SPECS / "moe-intelligence.yaml")
    _, stable_rule, canary_rule = objects(plan)
    assert stable_rule["spec"]["host"] == "verdict-v1-9"
    assert stable_rule["spec"]["subsets"] == [{"name": "stable", "labels": {"version": "v1.9.0"}}]
    assert canary_rule["spec"]["host"] == "verdict-moe-v2-1"
    assert canary_rule["spec"]["subsets"] == [{"name": "canary", "labels": {"version": "v2.1.0"}}]
    assert 'destination_service_name="verdict-moe-v2-1",destination_version="v2.1.0"' in str(
        plan.metrics.canary.requests(300)
    )
    assert 'destination_service_name="verdict-v1-9",destination_version="v1.9.0"' in str(
        plan.metrics.stable.requests(300)
    )


def test_shadow_mirrors_every_request_and_serves_nothing():
    plan = plan_of(SPECS / "moe-intelligence.yaml")
    vs, _, _ = objects(plan)
    split = next(r for r in vs["spec"]["http"] if r["name"] == "split")
    assert split["mirror"] == {"host": "verdict-moe-v2-1", "port": {"number": 8080}, "subset": "canary"}
    assert split["mirrorPercentage"] == {"value": 100.0}
    outcome = route_istio(vs, plan.stable.backend, request(plan))
    assert outcome.shares == {"verdict-v1-9/stable": 1} and outcome.mirrored == {"verdict-moe-v2-1/canary": 1}


def test_the_tester_route_comes_first_with_lower_case_header_keys():
    plan = plan_of(TINY).at("canary")
    vs, _, _ = objects(plan)
    first = vs["spec"]["http"][0]
    assert first["name"] == "testers"
    assert first["match"] == [{"headers": {"x-canary": {"exact": "internal-testing"}}},
                              {"headers": {"x-canary": {"exact": "beta-users"}}}]


def test_a_path_matches_whole_segments_and_other_paths_stay_on_stable():
    plan = plan_of(GOLDEN / "in-presets.yaml")
    assert plan.path == "/v1" and 0 < plan.current.route_weight < 1
    vs, _, _ = objects(plan)
    for path in ("/v1", "/v1/score"):
        assert share_to_canary(plan, vs, path=path) == plan.current.route_weight
    for path in ("/v1x", "/v2", "/"):
        assert share_to_canary(plan, vs, path=path) == 0
    assert vs["spec"]["http"][-1] == {"name": "other-paths", "route": [
        {"destination": {"host": "recommender-41", "port": {"number": 9000}, "subset": "stable"}}]}


def test_stickiness_is_a_consistent_hash_on_the_header_or_cookie():
    plan = plan_of(TINY)
    _, stable_rule, canary_rule = objects(plan)
    expected = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}}}
    assert stable_rule["spec"]["trafficPolicy"] == canary_rule["spec"]["trafficPolicy"] == expected
    _, stable_rule, _ = objects(plan_of(GOLDEN / "in-ramp.yaml"))
    assert stable_rule["spec"]["trafficPolicy"] == {
        "loadBalancer": {"consistentHash": {"httpCookie": {"name": "session_id", "ttl": "0s"}}}
    }
    _, stable_rule, _ = objects(plan_of(GOLDEN / "in-full.yaml"))
    assert "trafficPolicy" not in stable_rule["spec"]


def test_blue_green_routes_to_the_services_without_version_subsets():
    plan = plan_of(GOLDEN / "in-blue-green.yaml")
    vs, active, preview = objects(plan)
    assert vs["spec"]["hosts"] == [plan.names.active_service]
    assert active["spec"]["host"] == plan.names.active_service and "subsets" not in active["spec"]
    assert preview["spec"]["host"] == plan.names.preview_service and "subsets" not in preview["spec"]
    assert share_to_canary(plan, vs) == plan.current.route_weight


def test_header_names_and_values_land_verbatim_in_exact_matches():
    plan = tiny_canary()
    hostile = replace(plan.testers, header="X-Team'S|*", values=("a+b@c=d", "v1.2:x/y~z"))
    at = replace(plan, testers=hostile, sticky=StickyPlan("cookie", "s=1/x"))
    vs, stable_rule, _ = objects(at)
    assert vs["spec"]["http"][0]["match"] == [{"headers": {"x-team's|*": {"exact": "a+b@c=d"}}},
                                              {"headers": {"x-team's|*": {"exact": "v1.2:x/y~z"}}}]
    assert share_to_canary(at, vs, (("X-Team'S|*", "a+b@c=d"),)) == 1
    assert share_to_canary(at, vs, (("X-Team'S|*", "a+bxc=d"),)) == at.current.route_weight
    assert stable_rule["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"] == {
        "httpCookie": {"name": "s=1/x", "ttl": "0s"}}


def test_the_comment_says_the_share_and_its_error():
    text = istio.render(plan_of(TINY).at("canary"))["istio/virtualservice.yaml"]
    assert "# Router share to ledger-v2: canary share 0.1%: 1/1000 = 0.1% (exact)" in text


@pytest.mark.parametrize("path", ["/", "/cart"])
def test_gateways_split_the_public_host_as_the_mesh_at_every_stage_and_claim_no_other_path(path):
    """With traffic.istio.gateways a second VirtualService binds them: requests for service.host through them
    split like mesh requests at every stage (testers on the canary), and other paths of the host are left to
    whatever else routes them."""
    base = replace(plan_of(GOLDEN / "in-ramp.yaml"), istio_gateways=("istio-system/public", "edge"), path=path)
    for stage in [s.name for s in base.stages] + [ROLLBACK]:
        plan = base.at(stage)
        files = istio.render(plan)
        gateway = yaml.safe_load(files[istio.GATEWAY_SERVICE])
        assert gateway["spec"]["hosts"] == [plan.host]
        assert gateway["spec"]["gateways"] == ["istio-system/public", "edge"]
        mesh = yaml.safe_load(files[istio.VIRTUAL_SERVICE])
        assert "gateways" not in mesh["spec"]  # the mesh VirtualService is unchanged
        for headers in [(), *((("X-Canary", v),) for v in plan.testers.values)]:
            public = route_istio(gateway, plan.host, Request(plan.host, plan.path, headers))
            inside = route_istio(mesh, plan.stable.backend, request(plan, headers))
            assert public is not None and public == inside, (stage, headers)
        elsewhere = route_istio(gateway, plan.host, Request(plan.host, "/other"))
        assert (elsewhere is None) == (path != "/"), stage
    assert istio.stage_keys(base, base.current)[istio.GATEWAY_SERVICE] == istio.stage_keys(
        base, base.current)[istio.VIRTUAL_SERVICE]


def test_gateways_are_a_name_or_namespace_and_name_and_never_the_mesh(tmp_path):
    from compiler import pipeline

    text = (GOLDEN / "in-ramp.yaml").read_text()
    for written, ok in (("[public]", True), ("[istio-system/public]", True), ("[mesh]", False),
                        ("[a/b/c]", False), ("[Public]", False)):
        spec = tmp_path / "spec.yaml"
        spec.write_text(text.replace("istio: {gateways: [istio-system/public]}", f"istio: {{gateways: {written}}}"))
        result = pipeline.analyse([spec])
        assert result.ok == ok, (written, [d.text() for d in result.diagnostics])
