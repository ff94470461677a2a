"""kustomization.yaml files: built by the real kustomize (`kubectl kustomize`), listing exactly the objects.

A GitOps controller pointed at a rollout's folder, its ``rollback/`` or ``_fleet/`` applies
what ``kustomize build`` prints there: every Kubernetes object the targets wrote, each
configuration file no ConfigMap carries wrapped in one, and nothing else.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

import kubecheck
from compiler.pipeline import render_unit
from compiler.targets.base import CONFIG, MANIFEST, OTHER, Rendered
from compiler.targets import kustomize
from conftest import ALL_SPECS, SEED_SPECS, SPECS, compile_files, kustomize_build, plan_of, plans_of, write_tree

FLEET = SEED_SPECS + [p for p in ALL_SPECS if p.stem == "in-checkout"]


@cache
def compiled(*specs: Path) -> dict[str, str]:
    return compile_files(*specs)


def build(folder: Path) -> list[dict]:
    proc = subprocess.run([*kustomize_build(), str(folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize build {folder}: {proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def identity(doc: dict) -> tuple[str, str, str, str]:
    meta = doc["metadata"]
    return doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta["name"]


CONTROLLER_KINDS = {("argoproj.io", "Application"), ("kustomize.toolkit.fluxcd.io", "Kustomization")}


def documents(path: str, text: str) -> list | None:
    """The YAML/JSON documents of a file, or None when it is not YAML/JSON (read here, apart from the kinds the
    targets declare, to check them)."""
    if not path.endswith((".yaml", ".yml", ".json")):
        return None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return None


def is_manifest(docs: list | None) -> bool:
    return bool(docs) and all(
        isinstance(d, dict) and "apiVersion" in d and "kind" in d and isinstance(d.get("metadata"), dict) for d in docs
    )


def is_promtool_test(docs: list | None) -> bool:
    return bool(docs) and isinstance(docs[0], dict) and "tests" in docs[0] and "rule_files" in docs[0]


def scope(files: dict[str, str], prefix: str, exclude: str | None = None) -> dict[str, str]:
    out = {p[len(prefix):]: t for p, t in files.items() if p.startswith(prefix)}
    return {p: t for p, t in out.items() if not (exclude and p.startswith(exclude))}


def objects_of(files: dict[str, str]) -> list[dict]:
    found, problems = kubecheck.manifests(files)
    assert problems == []
    return [m.doc for m in found if m.group != kubecheck.KUSTOMIZE_GROUP]


def expected_objects(files: dict[str, str]) -> set[tuple]:
    """Every object of the folder but GitOps controller objects (they point at the folder)."""
    return {
        identity(d) for d in objects_of(files) if (d["apiVersion"].split("/")[0], d["kind"]) not in CONTROLLER_KINDS
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kustomize") / "generated"
    write_tree(out, compiled(*FLEET))
    return out


@pytest.mark.parametrize("spec", FLEET, ids=lambda p: p.stem)
def test_each_rollout_folder_builds_to_exactly_its_objects(spec, tree):
    files = compiled(*FLEET)
    for plan in plans_of(spec):
        live = scope(files, plan.out + "/", exclude="rollback/")
        built = build(tree / plan.out)
        ids = [identity(d) for d in built]
        assert len(ids) == len(set(ids)), "no object twice"
        generated = {i for i in ids if i[1] == "ConfigMap" and i[3].endswith("-files")}
        assert set(ids) - generated == expected_objects(live)
        for doc in built:
            kubecheck_problems = kubecheck.schema_errors(kubecheck.Manifest("built", 0, doc))
            assert kubecheck_problems == [], identity(doc)


@pytest.mark.parametrize("spec", FLEET, ids=lambda p: p.stem)
def test_the_rollback_folder_builds_to_the_same_objects_in_their_rollback_state(spec, tree):
    files = compiled(*FLEET)
    for plan in plans_of(spec):
        live = {identity(d) for d in build(tree / plan.out)}
        rolled = build(tree / plan.out / "rollback")
        ids = {identity(d) for d in rolled}
        assert ids <= live, "applying rollback/ replaces objects of the live folder, and adds none"
        generated = {i for i in ids if i[1] == "ConfigMap" and i[3].endswith("-files")}
        assert ids - generated == expected_objects(scope(files, plan.out + "/rollback/"))
        assert scope(files, plan.out + "/rollback/")


def test_non_kubernetes_files_are_wrapped_once_or_listed_nowhere():
    files = compiled(*FLEET)
    checked = 0
    for plan in [p for s in FLEET for p in plans_of(s)]:
        live = scope(files, plan.out + "/", exclude="rollback/")
        body = yaml.safe_load(live["kustomization.yaml"])
        listed = set(body["resources"])
        wrapped = {f for g in body.get("configMapGenerator", []) for f in g["files"]}
        carried = {v for d in objects_of(live) if d["kind"] == "ConfigMap" for v in d["data"].values()}
        for path, text in live.items():
            if path == "kustomization.yaml" or path.startswith("gitops/"):
                continue
            docs = documents(path, text)
            if is_manifest(docs):
                assert path in listed, path
                continue
            assert path not in listed, f"{path} is not a Kubernetes object"
            if text in carried:
                assert path not in wrapped, f"{path} is already in a ConfigMap: not wrapped twice"
                checked += 1
            elif path.endswith((".md", ".txt")) or is_promtool_test(docs):
                assert path not in wrapped
            else:
                assert path in wrapped, f"{path} reaches the cluster in a ConfigMap"
    assert checked > 0


def test_files_no_configmap_carries_are_wrapped_without_a_name_hash(tmp_path):
    plan = plan_of(SPECS / "genesis.yaml")
    files = {
        "flags/configmap.yaml": compiled(SPECS / "genesis.yaml")["genesis/genesis-orchestrator/flags/configmap.yaml"],
        "extra/settings.json": '{"a": 1}\n',
        "extra/app.cfg": "key value\n",
        "extra/notes.md": "# notes\n",
        "extra/tests.yaml": "rule_files: [rules.yaml]\ntests: []\n",
    }
    kinds = {"flags/configmap.yaml": MANIFEST, "extra/settings.json": CONFIG, "extra/app.cfg": CONFIG,
             "extra/notes.md": OTHER, "extra/tests.yaml": OTHER}
    rendered = Rendered(plan, files, kinds, lambda stage: {})
    out = kustomize.render_rollout(rendered)
    body = yaml.safe_load(out["kustomization.yaml"])
    assert body["resources"] == ["flags/configmap.yaml"]
    (generator,) = body["configMapGenerator"]
    assert generator["name"] == "genesis-orchestrator-extra-files"
    assert generator["files"] == ["extra/app.cfg", "extra/settings.json"]
    assert generator["options"]["disableNameSuffixHash"] is True
    for path, text in {**files, **out}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    built = {identity(d): d for d in build(tmp_path)}
    cm = built[("v1", "ConfigMap", "genesis", "genesis-orchestrator-extra-files")]
    assert cm["data"] == {"app.cfg": "key value\n", "settings.json": '{"a": 1}\n'}


def test_the_fleet_kustomization_builds_every_rollout_without_an_environment(tree):
    files = compiled(*FLEET)
    plans = [p for s in FLEET for p in plans_of(s) if not p.environment]
    body = yaml.safe_load(files["_fleet/kustomization.yaml"])
    assert sorted(r for r in body["resources"] if r.startswith("../")) == sorted(f"../{p.out}" for p in plans)
    built = build(tree / "_fleet")
    ids = [identity(d) for d in built]
    assert len(ids) == len(set(ids))
    expected = set().union(*({identity(d) for d in build(tree / p.out)} for p in plans))
    assert expected <= set(ids)


def test_each_environment_gets_a_fleet_kustomization_of_its_own(tree):
    files = compiled(*FLEET)
    for env in ("staging", "production"):
        body = yaml.safe_load(files[f"_fleet/environments/{env}/kustomization.yaml"])
        assert body["resources"] == [f"../../../{env}/{env}/ai-orchestra"]
        built = build(tree / "_fleet" / "environments" / env)
        assert {d["metadata"].get("namespace") for d in built} == {env}


def test_the_kustomization_does_not_change_with_the_stage():
    """What a controller applies is the same list of objects at every stage: a promote leaves it alone."""
    plan = plan_of(SPECS / "genesis.yaml")
    texts = {render_unit(plan.at(s.name))[f"{plan.out}/kustomization.yaml"] for s in plan.stages}
    assert len(texts) == 1
    assert "rollout-compiler.dev/stage" not in texts.pop()


def test_each_environment_builds_on_its_own(tmp_path):
    """Staging and production of one service (namespaces of their own: one Prometheus may scrape both, and a
    spec whose environments would share queries is refused): each environment builds alone."""
    text = (SPECS / "ultra-fast-analyzer.yaml").read_text() + (
        "environments:\n  staging: {current: ramp, metadata: {namespace: analytics-staging}}\n  production: {}\n")
    spec = tmp_path / "analyzer.yaml"
    spec.write_text(text)
    files = compile_files(spec)
    out = tmp_path / "generated"
    write_tree(out, files)
    for env in ("staging", "production"):
        ids = [identity(d) for d in build(out / "_fleet" / "environments" / env)]
        assert ids and len(ids) == len(set(ids))
    # the fleet holds no rollout without an environment: only the fleet-wide objects
    assert sorted(d["metadata"]["name"] for d in build(out / "_fleet")) == [
        "rollout-fleet-alertmanager-files", "rollout-fleet-dashboard"]
