"""ingress-nginx: the stable and canary Ingresses realise each stage exactly, as the controller reads them."""

from __future__ import annotations

import json
import re
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
from compiler.targets.routers import ingress_nginx
from conftest import ALL_SPECS, GOLDEN, SPECS, plan_of, plans_of
from kubecheck import Request, route_ingress_nginx

TINY = GOLDEN / "in-tiny-canary.yaml"
P = ingress_nginx.PREFIX


def ingresses(plan: Plan) -> tuple[dict, dict]:
    files = ingress_nginx.render(plan)
    main = yaml.safe_load(files["ingress-nginx/ingress.yaml"])
    canary = yaml.safe_load(files["ingress-nginx/ingress-canary.yaml"])
    return main, canary


def user(plan: Plan, headers: tuple = ()) -> Request:
    return Request(plan.host, plan.path, headers)


def as_tester(plan: Plan, value: str) -> Request:
    assert plan.testers is not None
    return user(plan, ((plan.testers.header, value),))


@lru_cache(maxsize=1)
def tiny_canary() -> Plan:
    return plan_of(TINY).at("canary")


def nginx_plans() -> list[Plan]:
    return [p for p in plans_of(*ALL_SPECS) if "ingress-nginx" in p.targets]


def test_the_tiny_canary_is_weight_1_of_1000():
    main, canary = ingresses(plan_of(TINY).at("canary"))
    notes = canary["metadata"]["annotations"]
    assert notes[P + "canary"] == "true"
    assert notes[P + "canary-weight"] == "1"
    assert notes[P + "canary-weight-total"] == "1000"
    assert P + "canary-weight" not in main["metadata"]["annotations"]


def test_whole_percents_need_no_total():
    _, canary = ingresses(plan_of(TINY).at("ramp"))
    notes = canary["metadata"]["annotations"]
    assert notes[P + "canary-weight"] == "10" and P + "canary-weight-total" not in notes


@pytest.mark.parametrize("plan", nginx_plans(), ids=lambda p: p.id)
def test_every_stage_routes_its_exact_share(plan: Plan):
    for name in [s.name for s in plan.stages] + [ROLLBACK]:
        at = plan.at(name)
        main, canary = ingresses(at)
        outcome = route_ingress_nginx(main, canary, user(at))
        assert outcome is not None
        assert outcome.shares.get(plan.canary.backend, Fraction(0)) == at.current.route_weight, name
        assert sum(outcome.shares.values()) == 1


@given(st.integers(1, 999_999).map(lambda n: Fraction(n, 1_000_000)))
def test_any_share_of_up_to_four_decimal_places_of_a_percent_is_exact(share):
    plan = tiny_canary()
    at = replace(plan, current=replace(plan.current, route_weight=share, weight=share))
    main, canary = ingress_nginx.stable_ingress(at), ingress_nginx.canary_ingress(at)
    notes = canary["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9]+", notes[P + "canary-weight"])
    total = int(notes.get(P + "canary-weight-total", "100"))
    assert total == 100 or total > 100  # the controller ignores a total of 100 or less
    assert route_ingress_nginx(main, canary, user(at)).shares[plan.canary.backend] == share


@pytest.mark.parametrize("plan", nginx_plans(), ids=lambda p: p.id)
def test_testers_reach_the_canary_at_every_stage_but_rollback(plan: Plan):
    assert plan.testers is not None
    for name in [s.name for s in plan.stages] + [ROLLBACK]:
        at = plan.at(name)
        main, canary = ingresses(at)
        for value in plan.testers.values:
            outcome = route_ingress_nginx(main, canary, as_tester(at, value))
            expected = at.current.route_weight if name == ROLLBACK else Fraction(1)
            assert outcome.shares.get(plan.canary.backend, Fraction(0)) == expected, (name, value)
        others = route_ingress_nginx(main, canary, as_tester(at, plan.testers.values[0] + "x"))
        assert others.shares.get(plan.canary.backend, Fraction(0)) == at.current.route_weight


def test_one_tester_value_uses_the_value_annotation_several_an_anchored_pattern():
    plan = plan_of(GOLDEN / "in-checkout.yaml")
    _, canary = ingresses(plan)
    notes = canary["metadata"]["annotations"]
    assert notes[P + "canary-by-header"] == "X-Canary"
    assert notes[P + "canary-by-header-pattern"] == "^(internal-testing|beta-users)$"
    one = plan_of(GOLDEN / "in-blue-green.yaml")
    _, canary = ingresses(one)
    assert canary["metadata"]["annotations"][P + "canary-by-header-value"] == "internal-testing"


def test_the_pattern_escapes_regex_metacharacters():
    pattern = ingress_nginx.header_pattern(("v1.2", "a:b/c", "x~y"))
    assert pattern == r"^(v1\.2|a:b/c|x~y)$"
    assert ingress_nginx.REGEX_CHARS.match(pattern)
    assert re.search(pattern, "v1.2") and not re.search(pattern, "v1x2") and not re.search(pattern, "v1.2.3")


def test_shadow_mirrors_every_request_from_the_stable_ingress_and_serves_nothing_from_the_canary():
    plan = plan_of(TINY).at("shadow")
    main, canary = ingresses(plan)
    notes = main["metadata"]["annotations"]
    assert notes[P + "mirror-target"] == "http://ledger-v2.shop.svc.cluster.local:8080$request_uri"
    assert notes[P + "mirror-host"] == "ledger.example.com"
    assert notes[P + "mirror-request-body"] == "on"
    assert ingress_nginx.REGEX_CHARS.match(notes[P + "mirror-target"])  # the controller's validator
    outcome = route_ingress_nginx(main, canary, user(plan))
    assert outcome.shares == {"ledger-v1": 1} and outcome.mirrored == {"ledger-v2": 1}
    assert not any(k.startswith(P + "mirror") for k in canary["metadata"]["annotations"])


def test_rollback_sends_everyone_to_stable_and_mirrors_nothing():
    plan = plan_of(GOLDEN / "in-rollback.yaml")
    main, canary = ingresses(plan)
    notes = canary["metadata"]["annotations"]
    assert notes[P + "canary-weight"] == "0" and not any("by-header" in k for k in notes)
    assert not any("mirror" in k for k in main["metadata"]["annotations"])
    assert route_ingress_nginx(main, canary, as_tester(plan, "internal-testing")).shares == {"payments-v1": 1}


def test_one_canary_ingress_per_host_and_path_with_the_class_and_backends_of_the_plan():
    for plan in nginx_plans():
        files = ingress_nginx.render(plan)
        docs = [yaml.safe_load(t) for t in files.values()]
        canaries = [d for d in docs if d["metadata"]["annotations"].get(P + "canary") == "true"]
        assert len(canaries) == 1 and len(docs) == 2
        main = next(d for d in docs if d is not canaries[0])
        assert main["metadata"]["name"] == plan.names.ingress
        assert canaries[0]["metadata"]["name"] == plan.names.canary_ingress
        for doc, variant in ((main, plan.stable), (canaries[0], plan.canary)):
            assert doc["spec"]["ingressClassName"] == plan.ingress_class
            rule = doc["spec"]["rules"][0]
            assert rule["host"] == plan.host and rule["http"]["paths"][0]["path"] == plan.path
            assert rule["http"]["paths"][0]["backend"]["service"] == {
                "name": variant.backend, "port": {"number": variant.port}}


def test_the_canary_backend_is_what_the_metrics_source_counts_as_canary():
    plan = plan_of(SPECS / "ai-orchestra.yaml", "production")
    _, canary = ingresses(plan)
    service = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    upstream = f"{plan.namespace}-{service['name']}-{service['port']['number']}"
    assert f'canary="{upstream}"' in str(plan.metrics.canary.requests(300))
    assert 'canary=""' in str(plan.metrics.stable.requests(300))


def test_annotation_values_are_strings():
    for plan in nginx_plans():
        for name in [s.name for s in plan.stages]:
            for doc in ingresses(plan.at(name)):
                assert all(isinstance(v, str) for v in doc["metadata"]["annotations"].values())


def test_the_comment_says_the_share_and_its_error():
    text = ingress_nginx.render(plan_of(TINY).at("canary"))["ingress-nginx/ingress-canary.yaml"]
    assert "# Router share to ledger-v2: canary share 0.1%: 1/1000 = 0.1% (exact)" in text


# --------------------------------------------------------------------------- lint


def spec_with_testers(tmp_path: Path, testers: dict, extra: str = "") -> Path:
    text = TINY.read_text()
    old = "  testers: {header: X-Canary, values: [internal-testing, beta-users]}\n"
    assert old in text
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace(old, f"  testers: {json.dumps(testers)}\n") + extra)
    return path


def diagnostics(path: Path):
    return pipeline.analyse([path]).diagnostics


@pytest.mark.parametrize("header,values,bad", [
    ("X_Canary", ["ok"], "header"),       # nginx drops names with '_' by default
    ("X.Canary", ["ok"], "header"),
    ("X'Canary", ["ok"], "header"),
    ("X-Canary", ["ok", "a+b"], 1),       # the controller's validator drops '+', '@', '='
    ("X-Canary", ["a@b"], 0),
    ("X-Canary", ["ok", "x", "k=v"], 2),
])
def test_names_and_values_the_controller_would_drop_are_located_errors(tmp_path, header, values, bad):
    path = spec_with_testers(tmp_path, {"header": header, "values": values})
    found = [d for d in diagnostics(path) if d.code == "ingress-nginx" and d.severity == "error"]
    assert len(found) == 1, found
    line = path.read_text().splitlines()[found[0].line - 1]
    assert "testers" in line
    located = line[found[0].col - 1:]
    assert located.startswith('"header"' if bad == "header" else json.dumps(values[bad])), located


def test_a_partial_mirror_is_an_error_for_this_target(tmp_path):
    text = TINY.read_text().replace("{name: shadow, mirror: 100%, hold: 7d}", "{name: shadow, mirror: 50%, hold: 7d}")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    found = [d for d in diagnostics(path) if d.code == "ingress-nginx" and d.severity == "error"]
    assert len(found) == 1 and "mirrors 50%" in found[0].message
    line = text.splitlines()[found[0].line - 1]
    assert line[found[0].col - 1:].startswith("mirror: 50%")


def test_values_that_are_fine_elsewhere_still_route_in_the_model_of_the_controller():
    plan = plan_of(TINY).at("canary")
    plan = replace(plan, testers=replace(plan.testers, values=("v1.2", "team:a/b")))
    assert ingress_nginx.lint(plan) == [f for f in ingress_nginx.lint(plan) if f.severity == "warning"]
    main, canary = ingresses(plan)
    assert route_ingress_nginx(main, canary, as_tester(plan, "v1.2")).shares == {"ledger-v2": 1}
    assert route_ingress_nginx(main, canary, as_tester(plan, "v1x2")).shares["ledger-v2"] == Fraction(1, 1000)
