"""One spec, every router: a table of what each one must do at each stage (in the spirit of sqlglot's per-dialect
tables). A row is a router; a column a stage; a cell what the router's own objects say, read the way the router
reads them (the Kubernetes routers through models of their routing, HAProxy and nginx through the directives that
decide the split). Adding a router means adding a row; a router that drifts from the others fails its cells.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from compiler import pipeline
from kubecheck import Request, route_http_route, route_ingress_nginx, route_istio

SPEC = """apiVersion: rollout-compiler/v1
kind: Rollout
metadata: {{name: ledger, namespace: bank, owner: payments}}
service:
  host: ledger.example.com
  port: 8080
  stable: {{version: v1, backend: ledger-v1, servers: ["10.0.0.1:8080"]}}
  canary: {{version: v2, backend: ledger-v2, servers: ["10.0.1.1:8080"]}}
traffic:
  targets: [gateway-api, ingress-nginx, istio, haproxy, nginx]
  gateway: {{name: public, namespace: gateways}}
  testers: {{header: X-Canary, values: [qa]}}
stages:
  - {{name: canary, weight: 10%, hold: 1h}}
  - {{name: half, weight: 50%, hold: 1h}}
  - {{name: full, weight: 100%}}
current: {stage}
"""
STAGES = ("canary", "half", "full", "rollback")

#: (share of plain requests on the canary, testers on the canary) at each stage: the same for every router.
EXPECTED = {
    "canary": (Fraction(1, 10), True),
    "half": (Fraction(1, 2), True),
    "full": (Fraction(1), True),
    "rollback": (Fraction(0), False),
}


def _compile(tmp_path: Path, stage: str) -> dict[str, str]:
    spec = tmp_path / f"{stage}.yaml"
    spec.write_text(SPEC.format(stage=stage))
    result = pipeline.compile_paths([spec])
    assert result.ok, [d.text() for d in result.diagnostics]
    return {path.split("bank/ledger/", 1)[1]: text for path, text in result.files.items() if "bank/ledger/" in path}


def _doc(files: dict[str, str], path: str) -> dict:
    return yaml.safe_load(files[path])


PLAIN = Request("ledger.example.com", "/")
TESTER = Request("ledger.example.com", "/", (("X-Canary", "qa"),))


def gateway_api(files: dict[str, str]) -> tuple[Fraction, bool]:
    route = _doc(files, "gateway-api/httproute.yaml")
    plain, tester = route_http_route(route, PLAIN), route_http_route(route, TESTER)
    assert plain is not None and tester is not None
    return plain.shares.get("ledger-v2", Fraction(0)), tester.shares.get("ledger-v2", Fraction(0)) == 1


def ingress_nginx(files: dict[str, str]) -> tuple[Fraction, bool]:
    main, canary = _doc(files, "ingress-nginx/ingress.yaml"), _doc(files, "ingress-nginx/ingress-canary.yaml")
    plain, tester = route_ingress_nginx(main, canary, PLAIN), route_ingress_nginx(main, canary, TESTER)
    assert plain is not None and tester is not None
    return plain.shares.get("ledger-v2", Fraction(0)), tester.shares.get("ledger-v2", Fraction(0)) == 1


def istio(files: dict[str, str]) -> tuple[Fraction, bool]:
    service = _doc(files, "istio/virtualservice.yaml")
    host = service["spec"]["hosts"][0]
    plain, tester = route_istio(service, host, PLAIN), route_istio(service, host, TESTER)
    assert plain is not None and tester is not None
    canary = sum((v for k, v in plain.shares.items() if k.endswith("/canary")), Fraction(0))
    return canary, sum((v for k, v in tester.shares.items() if k.endswith("/canary")), Fraction(0)) == 1


def haproxy(files: dict[str, str]) -> tuple[Fraction, bool]:
    text = files["haproxy/haproxy.cfg"]
    draw = re.search(r"rand\((\d+)\)", text)
    bucket = re.search(r"acl rollout_canary_bucket var\(txn\.rollout_bucket\) -m int lt (\d+)", text)
    share = Fraction(int(bucket.group(1)), int(draw.group(1))) if draw and bucket else Fraction(0)
    if re.search(r"^\s*use_backend ledger-v2 if rollout_canary_usable$", text, re.M):
        share = Fraction(1)  # every request, while the canary has a server
    testers = bool(re.search(r"use_backend ledger-v2 if .*rollout_tester", text))
    return share, testers


def nginx(files: dict[str, str]) -> tuple[Fraction, bool]:
    text = files["nginx/nginx.conf"]
    split = re.search(r'^split_clients "[^"]*" \$\S+ \{\s*([0-9.]+)% rollout_bank__ledger_canary;', text, re.M)
    if split:
        share = Fraction(split.group(1)) / 100
    else:
        share = Fraction(1) if re.search(r"default\s+rollout_bank__ledger_canary;", text) else Fraction(0)
    testers = bool(re.search(r"map \$http_x_canary \$rollout_bank__ledger_tester", text))
    return share, testers


ROUTERS = {"gateway-api": gateway_api, "ingress-nginx": ingress_nginx, "istio": istio, "haproxy": haproxy,
           "nginx": nginx}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict[str, str]]:
    base = tmp_path_factory.mktemp("contract")
    return {stage: _compile(base, stage) for stage in STAGES}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_every_router_does_what_the_table_says(compiled, router, stage):
    assert ROUTERS[router](compiled[stage]) == EXPECTED[stage], (router, stage)


def test_the_table_names_every_router_the_language_knows():
    from compiler.spec import routers

    assert set(ROUTERS) == set(routers.ROUTERS) - {"kube-service"}  # blue-green Services: no split
