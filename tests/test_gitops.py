"""gitops/: an Argo CD Application or a Flux Kustomization that applies the rollout's folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

import kubecheck
from compiler.targets import gitops
from conftest import SPECS, compile_files, kustomize_build, plan_of, plans_of, write_tree

ARGO_SPEC = SPECS / "ultra-fast-analyzer.yaml"
FLUX_SPEC = SPECS / "ai-orchestra.yaml"


def manifest(text: str) -> kubecheck.Manifest:
    found, problems = kubecheck.manifests({"x.yaml": text})
    assert problems == [] and len(found) == 1
    return found[0]


def test_argocd_application_validates_and_points_at_the_rollout_folder():
    plan = plan_of(ARGO_SPEC)
    m = manifest(gitops.render(plan)[gitops.ARGOCD])
    assert (m.api_version, m.kind) == ("argoproj.io/v1alpha1", "Application")
    assert kubecheck.schema_errors(m) == [] and kubecheck.name_errors(m) == []
    spec = m.doc["spec"]
    assert spec["source"] == {"repoURL": "https://git.example.com/platform/rollouts.git", "targetRevision": "main",
                              "path": "generated/analytics/analyzer"}
    assert spec["destination"] == {"server": "https://kubernetes.default.svc", "namespace": "analytics"}
    assert spec["syncPolicy"] == {"automated": {"prune": True, "selfHeal": True}}
    assert m.doc["metadata"]["namespace"] == "argocd"


@pytest.mark.parametrize("env", ["staging", "production"])
def test_flux_kustomization_validates_and_points_at_the_environment_folder(env):
    plan = plan_of(FLUX_SPEC, env)
    m = manifest(gitops.render(plan)[gitops.FLUX])
    assert (m.api_version, m.kind) == ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")
    assert kubecheck.schema_errors(m) == [] and kubecheck.name_errors(m) == []
    spec = m.doc["spec"]
    assert spec["path"] == f"./generated/{env}/{env}/ai-orchestra"
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": "platform-rollouts", "namespace": "flux-system"}
    assert spec["interval"] == "5m" and spec["prune"] is True
    assert m.doc["metadata"]["name"] == f"{env}-{env}-ai-orchestra"


def test_the_schema_check_rejects_a_broken_object():
    plan = plan_of(FLUX_SPEC, "staging")
    doc = gitops.flux_kustomization(plan)
    doc["spec"]["interval"] = "1d"  # Go durations have no days
    m = kubecheck.Manifest("x.yaml", 0, doc)
    assert kubecheck.schema_errors(m)


@pytest.mark.parametrize("seconds, text", [(300, "5m"), (86400, "24h"), (90, "1m30s"), (3661, "1h1m1s"), (0, "0s")])
def test_go_durations(seconds, text):
    assert gitops.go_duration(seconds) == text
    assert re.fullmatch(r"([0-9]+(\.[0-9]+)?(ms|s|m|h))+", text)


def test_the_object_does_not_change_when_the_stage_does():
    plan = plan_of(ARGO_SPEC)
    texts = {gitops.render(plan.at(s.name))[gitops.ARGOCD] for s in plan.stages}
    assert len(texts) == 1


def test_without_a_gitops_section_nothing_is_written():
    assert gitops.render(plan_of(SPECS / "genesis.yaml")) == {}


def test_manual_sync_has_no_sync_policy(tmp_path):
    text = ARGO_SPEC.read_text().replace(
        "    target_revision: main\n", "    target_revision: main\n    automated: false\n"
    )
    spec = tmp_path / "manual.yaml"
    spec.write_text(text)
    doc = gitops.argocd_application(plan_of(spec))
    assert "syncPolicy" not in doc["spec"]


def test_the_path_in_the_repository_holds_a_kustomization_and_the_object_is_not_in_it(tmp_path):
    """Compile into <repo>/generated as gitops.path says: the folder the object names builds."""
    repo = tmp_path / "repo"
    files = compile_files(ARGO_SPEC, FLUX_SPEC)
    write_tree(repo / "generated", files)
    for spec in (ARGO_SPEC, FLUX_SPEC):
        for plan in plans_of(spec):
            path = gitops.repository_path(plan)
            assert (repo / path / "kustomization.yaml").is_file()
            own = yaml.safe_load(files[f"{plan.out}/kustomization.yaml"])
            assert not any(r.startswith("gitops/") for r in own["resources"])
            controllers = yaml.safe_load(files[f"{plan.out}/gitops/kustomization.yaml"])
            assert len(controllers["resources"]) == 1
    proc = subprocess.run([*kustomize_build(), str(repo / "generated" / "_fleet" / "gitops")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(proc.stdout) if d)
    assert kinds == [("Application", "analytics-analyzer"), ("Kustomization", "production-production-ai-orchestra"),
                     ("Kustomization", "staging-staging-ai-orchestra")]


def test_a_root_gitops_path_is_the_rollout_folder_itself(tmp_path):
    text = ARGO_SPEC.read_text().replace("  path: /generated\n", "  path: /\n")
    spec = tmp_path / "root.yaml"
    spec.write_text(text)
    assert gitops.repository_path(plan_of(spec)) == "analytics/analyzer"
    assert Path(gitops.repository_path(plan_of(ARGO_SPEC))) == Path("generated/analytics/analyzer")


def test_controller_names_of_different_rollouts_never_meet(tmp_path):
    """A join that two rollouts share is an error at both; names too long for a label keep a hash of the parts."""
    from compiler import build
    from compiler.spec import names

    text = ARGO_SPEC.read_text()
    specs = tmp_path / "specs"
    specs.mkdir()
    for file, namespace, name in (("one", "team-1", "x-y"), ("two", "team-1-x", "y")):
        (specs / f"{file}.yaml").write_text(text.replace("namespace: analytics", f"namespace: {namespace}", 1)
                                            .replace("name: analyzer", f"name: {name}", 1))
    report = build.build([specs], tmp_path / "out")
    found = [d for d in report.diagnostics if "same Argo CD Application / Flux Kustomization name 'team-1-x-y'" in
             d.message]
    assert not report.ok and sorted(d.path.rsplit("/", 1)[1] for d in found) == ["one.yaml", "two.yaml"], found
    assert not (tmp_path / "out").exists()
    space = "data-platform-analytics-eu-west-1"
    long = [names.controller_name(None, space, f"analytics-event-stream-aggregator-{s}") for s in ("service", "worker")]
    assert long[0] != long[1] and all(len(n) <= 63 and n.startswith(space) for n in long), long
    assert names.controller_name("staging", "shop", "web") == "staging-shop-web"  # short names as they were
