"""Every Kubernetes manifest the compiler writes is one the API server accepts.

All targets, every spec, every stage and the rollback state: each document of a generated
``.yaml`` file with ``apiVersion`` and ``kind`` goes through ``tests/kubecheck.py`` (schemas of
core kinds and CRDs, names, labels, annotations, namespace).  The checker itself is shown to
reject each kind of mistake, so that a clean run means something.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from compiler.spec import names
from compiler import pipeline
from compiler.ir.plan import ROLLBACK, Plan
from compiler.serialize import yaml_text
from compiler.targets.registry import REGISTRY
from compiler.targets.routers import gateway_api
from compiler.targets.routers import ingress_nginx
from compiler.targets.routers import istio
from compiler.targets.routers import kube_service

import kubecheck
from conftest import ALL_SPECS, ROOT, compile_files, plan_of, plans_of

ROUTING_KINDS = {
    ("networking.k8s.io/v1", "Ingress"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("v1", "Service"),
}


def namespace_of(plan: Plan):
    """The namespace each object of a rollout belongs in (GitOps objects live with their controller)."""

    def expected(m: kubecheck.Manifest) -> str:
        gitops = plan.gitops
        if gitops is not None and gitops.argocd is not None and (m.group, m.kind) == ("argoproj.io", "Application"):
            return gitops.argocd.namespace
        if gitops is not None and gitops.flux is not None and m.group == "kustomize.toolkit.fluxcd.io":
            return gitops.flux.namespace
        return plan.namespace

    return expected


def stage_names(plan: Plan) -> list[str]:
    return [s.name for s in plan.stages] + [ROLLBACK]


def every_stage(plan: Plan):
    """Every target's files at each stage and in the rollback state (what ``rollback/`` holds)."""
    for stage in stage_names(plan):
        at = plan.at(stage)
        files: dict[str, str] = {}
        for target in REGISTRY:
            files.update(target.render(at))
        yield stage, files


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.name)
def test_every_manifest_of_every_stage_validates(spec: Path):
    issues: list[str] = []
    count = 0
    for plan in plans_of(spec):
        for stage, files in every_stage(plan):
            found, problems = kubecheck.check_files(files, namespace_of(plan))
            count += len(found)
            issues.extend(f"{plan.id} at {stage}: {p}" for p in problems)
    assert not issues, "\n".join(issues[:40])
    assert count > 0, f"{spec.name}: no Kubernetes manifest generated at all"


@pytest.fixture(scope="module")
def compiled() -> dict[str, str]:
    return compile_files(*ALL_SPECS)


def test_summaries_fleet_and_rollback_files_validate(compiled):
    plans = {p.out: p for p in plans_of(*ALL_SPECS)}

    def expected(m: kubecheck.Manifest) -> str | None:
        owner = next((p for out, p in plans.items() if m.path.startswith(out + "/")), None)
        return namespace_of(owner)(m) if owner is not None else None  # _fleet/: any valid namespace

    found, problems = kubecheck.check_files(compiled, expected)
    assert not problems, "\n".join(problems[:40])
    assert ROUTING_KINDS <= {(m.api_version, m.kind) for m in found}  # the checks above are not vacuous
    assert any("/rollback/" in m.path for m in found)


# --------------------------------------------------------------------------- the checker rejects mistakes


@pytest.fixture(scope="module")
def samples() -> dict[str, dict]:
    plan = plan_of(Path("tests/golden/in-blue-green.yaml"))
    files: dict[str, str] = {}
    for target in (gateway_api.TARGET, ingress_nginx.TARGET, istio.TARGET, kube_service.TARGET):
        files.update(target.render(plan))
    found, problems = kubecheck.manifests(files)
    assert not problems
    return {m.kind: m.doc for m in found}


def problems_of(doc: dict, namespace: str | None = "production", path: str = "x/object.yaml") -> list[str]:
    files = {path: yaml_text(doc)}
    _, problems = kubecheck.check_files(files, lambda m: namespace)
    return problems


def test_a_sample_of_each_routing_kind_passes(samples):
    for kind in ("HTTPRoute", "Ingress", "VirtualService", "DestinationRule", "Service"):
        assert problems_of(samples[kind]) == [], kind


def mutated(doc: dict, change) -> dict:
    out = copy.deepcopy(doc)
    change(out)
    return out


@pytest.mark.parametrize("kind,change,expect", [
    ("Service", lambda d: d["spec"].update(bogus=1), "bogus"),
    ("Ingress", lambda d: d["spec"]["rules"][0]["http"]["paths"][0].update(pathType="Sometimes"), "pathType"),
    ("Service", lambda d: d["metadata"].update(name="Orchestra_v2"), "DNS-1035"),
    ("Service", lambda d: d["spec"]["ports"][0].update(targetPort=70000), "not 1-65535"),
    ("Service", lambda d: d["spec"]["selector"].update(version="blue green"), "not a label value"),
    ("HTTPRoute", lambda d: d["metadata"].update(name="route.."), "DNS-1123"),
    ("HTTPRoute", lambda d: d["spec"]["rules"][-1]["backendRefs"][0].pop("port"), "Must have port"),
    ("HTTPRoute", lambda d: d["spec"]["rules"][-1]["backendRefs"][0].update(weight=1_000_001), "1000000"),
    ("HTTPRoute", lambda d: d["spec"].update(rules=[d["spec"]["rules"][-1]] * 17), "too long"),
    ("HTTPRoute", lambda d: d["spec"]["rules"][-1].update(filters=[{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "x", "port": 80}, "percent": 5, "fraction": {"numerator": 1, "denominator": 20}}}]),
     "Only one of percent or fraction"),
    ("HTTPRoute", lambda d: d["spec"].update(status={}), "status"),
    ("VirtualService", lambda d: d["spec"]["http"][0]["match"][0]["headers"].update({"X-Big": {"exact": "a"}}),
     "lower case"),
    ("DestinationRule", lambda d: d["spec"].update(hosts=["a"]), "hosts"),
    ("Service", lambda d: d["metadata"]["labels"].update(team="two words"), "label 'team'"),
    ("Service", lambda d: d["metadata"]["labels"].update({"bad key!": "x"}), "label key"),
    ("Service", lambda d: d["metadata"]["annotations"].update(replicas=3), "not a string"),
    ("Service", lambda d: d["metadata"]["annotations"].update(big="x" * (256 * 1024)), "limit is 262144"),
    ("Service", lambda d: d["metadata"].update(namespace="staging"), "expected 'production'"),
    ("Service", lambda d: d["metadata"].update(generateName="x-"), "unexpected metadata"),
])
def test_the_checker_rejects(samples, kind, change, expect):
    problems = problems_of(mutated(samples[kind], change))
    assert any(expect in p for p in problems), problems


def test_an_unknown_custom_resource_fails_rather_than_being_skipped():
    doc = {"apiVersion": "example.com/v1", "kind": "Widget",
           "metadata": {"name": "w", "namespace": "production"}, "spec": {}}
    assert any("no CRD schema" in p for p in problems_of(doc))
    doc = {"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "production"}}
    assert any("unknown kind" in p for p in problems_of(doc))


def test_scalars_that_yaml_1_1_reads_otherwise_are_caught():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: production}\ndata: {enabled: on}\n"
    _, problems = kubecheck.check_files({"x/a.yaml": text}, lambda m: "production")
    assert any("YAML 1.1 and YAML 1.2" in p for p in problems), problems


def test_documents_without_apiversion_and_kind_are_not_manifests():
    found, problems = kubecheck.manifests({"x/alertmanager.yaml": "route: {receiver: a}\n", "x/a.json": "{}"})
    assert found == [] and problems == []


def test_a_kustomization_must_name_files_of_the_output():
    text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml, missing.yaml]\n"
    files = {"x/kustomization.yaml": text, "x/a.yaml": json.dumps({"k": 1})}
    _, problems = kubecheck.check_files(files, lambda m: None)
    assert len(problems) == 1 and "missing.yaml" in problems[0]


# --------------------------------------------------------------------------- hostile strings from the spec

TINY = Path("tests/golden/in-tiny-canary.yaml")
HOSTILE = ['a"b', "a\nb", "a b", "x\ty", "a#b", "a;b", "{a}", "a\\b", "$(id)", "a|b", ".*", "a'b",
           "a.b", "a+b", "x@y=z"]
ALL_ROUTERS = "  targets: [ingress-nginx, gateway-api, istio, haproxy, nginx]\n"
ROUTER_SETS = {"all routers": ALL_ROUTERS, "gateway-api and istio": "  targets: [gateway-api, istio]\n"}
PLACES = {
    "tester value": ("  testers: {header: X-Canary, values: [internal-testing, beta-users]}\n",
                     lambda v: f"  testers: {{header: X-Canary, values: [internal-testing, {json.dumps(v)}]}}\n"),
    "tester header": ("  testers: {header: X-Canary, values: [internal-testing, beta-users]}\n",
                      lambda v: f"  testers: {{header: {json.dumps(v)}, values: [internal-testing]}}\n"),
    "sticky header": ("  sticky: {header: X-User-ID}\n", lambda v: f"  sticky: {{header: {json.dumps(v)}}}\n"),
    "host": ("  host: ledger.example.com\n", lambda v: f"  host: {json.dumps('ledger' + v + '.example.com')}\n"),
    "path": ("  path: /\n", lambda v: f"  path: {json.dumps('/api/' + v)}\n"),
}


CASES = [(place, value, routers) for place in sorted(PLACES) for value in HOSTILE for routers in sorted(ROUTER_SETS)
         if routers == "all routers" or place not in ("host", "path")]  # hosts and paths are checked by the model


def router_manifests(plan: Plan) -> dict[str, str]:
    files: dict[str, str] = {}
    for target in (gateway_api.TARGET, ingress_nginx.TARGET, istio.TARGET, kube_service.TARGET):
        files.update(target.render(plan))
    return files


@pytest.mark.parametrize("place,value,routers", CASES, ids=[f"{p}-{v!r}-{r}" for p, v, r in CASES])
def test_hostile_strings_are_located_errors_or_land_inert(tmp_path, place, value, routers):
    old, new = PLACES[place]
    text = TINY.read_text().replace(ALL_ROUTERS, ROUTER_SETS[routers])
    assert old in text
    line_number = text[: text.index(old)].count("\n") + 1
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace(old, new(value)))
    result = pipeline.analyse([path])
    errors = [d for d in result.diagnostics if d.severity == "error"]
    if routers == "gateway-api and istio":  # they hold any safe value verbatim, and header names
        # that are HTTP tokens, except that Istio's webhook matches only letters, digits, '-', '_'
        rule = {"tester value": names.SAFE_VALUE, "tester header": kubecheck.ISTIO_HEADER_KEY}.get(
            place, names.HEADER_TOKEN
        )
        assert bool(errors) == (rule.match(value) is None), [d.text() for d in errors]
    if errors:
        assert any(d.line == line_number for d in errors), [d.text() for d in errors]
        assert result.units == []  # nothing is compiled
        return
    # accepted: the value lands verbatim, as a YAML string, in valid manifests
    (unit,) = result.units
    found, problems = kubecheck.check_files(router_manifests(unit.plan), lambda m: "shop")
    assert not problems, problems
    leaves = [leaf for m in found for _, leaf in kubecheck._walk(m.doc) if isinstance(leaf, str)]
    assert any(value in leaf or value.lower() in leaf for leaf in leaves), f"{value!r} ({place}) is in no manifest"


def test_the_deployment_manifests_of_serve_and_advance_are_valid_kubernetes():
    """deploy/kubernetes: schemas and names as the API server checks them."""
    files = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "deploy" / "kubernetes").glob("*.yaml")}
    found, problems = kubecheck.check_files(files, lambda m: "rollout")
    assert {m.doc["kind"] for m in found} == {"Deployment", "Service", "CronJob"}
    assert not problems, problems[:5]
    (serve,) = [m.doc for m in found if m.doc["kind"] == "Deployment"]
    container = serve["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz" and "--token-file" in container["args"]
