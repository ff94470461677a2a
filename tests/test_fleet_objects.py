"""What one rollout writes may not be what another writes: object names, object sizes, controller names, labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compiler.cli import main
from compiler.pipeline import applied_objects
from compiler.pipeline import render_unit_files
from compiler.targets.base import MANIFEST
from conftest import ALL_SPECS, plans_of

runner = CliRunner()


def run(*args: object):
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def spec(name: str, namespace: str = "shop", *, targets: str = "[istio]", extra: str = "",
         stable: str | None = None, canary: str | None = None) -> str:
    return f"""apiVersion: rollout-compiler/v1
kind: Rollout
metadata: {{name: {name}, namespace: {namespace}, owner: team}}
service:
  host: {name}.example.com
  port: 8080
  stable: {{version: v1, backend: {stable or name + '-v1'}}}
  canary: {{version: v2, backend: {canary or name + '-v2'}}}
traffic: {{targets: {targets}}}
stages:
  - {{name: canary, weight: 10%, hold: 1h}}
  - {{name: full, weight: 100%}}
current: canary
{extra}"""


def write(folder: Path, **specs: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in specs.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.stem)
def test_every_manifest_says_which_object_it_holds(path):
    """The identities the clash check reads are the objects a YAML reader finds in the files."""
    for plan in plans_of(path):
        files, kinds = render_unit_files(plan)
        found = set()
        for name, kind in kinds.items():
            if kind == MANIFEST and not name.startswith("rollback/"):
                (obj,) = [d for d in yaml.safe_load_all(files[name]) if d]
                found.add(f"{obj['kind']}/{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}")
        claimed = set(applied_objects(plan, files, kinds))
        assert found <= claimed and all(o.startswith("ConfigMap/") for o in claimed - found), path.name


def test_a_rollout_named_after_another_ones_object_is_reported_at_both(tmp_path):
    specs = write(tmp_path / "specs", x=spec("x"), **{"x-canary": spec("x-canary")})
    result = run("compile", specs, "-o", tmp_path / "out")
    assert result.exit_code == 0  # each rollout's files are right; a fleet of copies still compiles
    for name, other in (("x", "shop/x-canary"), ("x-canary", "shop/x")):
        assert f"{name}.yaml:3:12: warning: rollouts shop/{name} and {other} would write the same objects" in (
            result.output)
    assert "DestinationRule shop/x-canary" in result.output
    assert run("lint", "--strict", specs).exit_code == 0  # what lint cannot see without rendering


def test_blue_green_rollouts_of_the_same_backends_are_reported(tmp_path):
    blue_green = ("strategy:\n  blue-green: {selector: {app: a}, preview: 1h, switch_hold: 1h}\n")
    texts = {name: spec(name, targets="[]", stable="shared", canary="shared-preview").replace(
        "stages:\n  - {name: canary, weight: 10%, hold: 1h}\n  - {name: full, weight: 100%}\ncurrent: canary\n",
        blue_green + "current: preview\n") for name in ("bg-a", "bg-b")}
    specs = write(tmp_path / "specs", **texts)
    result = run("compile", specs, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "Service shop/shared, Service shop/shared-preview" in result.output


def test_a_clash_is_found_by_a_partial_compile_and_by_check_after_a_merge(tmp_path):
    write(tmp_path / "a", x=spec("x"))
    write(tmp_path / "b", **{"x-canary": spec("x-canary")})
    out = tmp_path / "out"
    assert run("compile", tmp_path / "a", "-o", out).exit_code == 0
    result = run("compile", tmp_path / "b" / "x-canary.yaml", "-o", out)
    assert result.exit_code == 0 and "x-canary.yaml:3:12: warning: rollouts shop/x-canary and shop/x would write " in (
        result.output)
    # Each compiled on its own branch, then merged: check finds what neither compile could see.
    fresh, other = tmp_path / "fresh", tmp_path / "other"
    assert run("compile", tmp_path / "a", "-o", fresh).exit_code == 0
    assert run("compile", tmp_path / "b", "-o", other).exit_code == 0
    (other / "shop" / "x-canary").rename(fresh / "shop" / "x-canary")
    both = write(tmp_path / "both", x=spec("x"), **{"x-canary": spec("x-canary")})
    result = run("check", both, "-o", fresh)
    assert "x-canary.yaml:3:12: warning: rollouts shop/x-canary and shop/x would write the same objects" in (
        result.output)


def test_lint_finds_what_compile_refuses_of_gitops_controller_names(tmp_path):
    argo = "gitops: {argocd: {repo_url: https://git.example.com/r.git}}\n"
    specs = write(tmp_path / "specs", one=spec("c", "a-b", extra=argo), two=spec("b-c", "a", extra=argo))
    for command in (("lint", specs), ("compile", specs, "-o", tmp_path / "out")):
        result = run(*command)
        assert result.exit_code == 1 and "same Argo CD Application / Flux Kustomization name 'a-b-c'" in (
            result.output), command


def flags_spec(users: int, requiring: int) -> str:
    allow = ", ".join(f"user-with-a-long-identifier-{i:05d}" for i in range(users))
    flags = "".join(f"  f{i}: {{rollout: 10%, requires: [root]}}\n" for i in range(requiring))
    return spec("med", extra=f"flags:\n  root: {{rollout: 5%, allow: [{allow}]}}\n{flags}")


def test_a_required_allowlist_is_written_once_however_many_flags_require_it(tmp_path):
    specs = write(tmp_path / "specs", med=flags_spec(50, 40))
    assert run("compile", specs, "-o", tmp_path / "out").exit_code == 0
    flagd = json.loads((tmp_path / "out" / "shop" / "med" / "flags" / "flagd.json").read_text())
    text = json.dumps(flagd)
    assert text.count("user-with-a-long-identifier-00049") == 2  # root's own targeting, and its evaluator
    assert flagd["flags"]["f7"]["targeting"]["if"][2] == {"!": {"$ref": "root"}}
    assert set(flagd["$evaluators"]) == {"root"}


def test_objects_past_what_kubernetes_takes_are_refused_or_warned_of(tmp_path):
    specs = write(tmp_path / "warn", med=flags_spec(5000, 1))
    result = run("compile", specs, "-o", tmp_path / "out")
    assert result.exit_code == 0
    assert "med.yaml:3:12: warning: shop/med/flags/configmap.yaml would be" in result.output
    assert "--server-side" in result.output
    specs = write(tmp_path / "error", med=flags_spec(7000, 1))
    result = run("compile", specs, "-o", tmp_path / "out2")
    assert result.exit_code == 1 and "the Kubernetes API server takes at most 1 MiB" in result.output
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("extra, message", [
    ("  labels: {app.kubernetes.io/managed-by: helm}\n", "is a label rollout sets itself"),
    ("  labels: {rollout-compiler.dev/rollout: other}\n", "is a label rollout sets itself"),
    ("  labels: {grafana_dashboard: '0'}\n", "is a label rollout sets itself"),
])
def test_labels_rollout_sets_itself_are_not_for_metadata_labels(tmp_path, extra, message):
    text = spec("x").replace("owner: team}", "owner: team,\n" + extra.strip().replace("labels", "  labels") + "}")
    specs = write(tmp_path / "specs", x=text)
    result = run("lint", specs)
    assert result.exit_code == 1 and message in result.output, result.output


def test_names_rollout_keeps_and_names_kubernetes_takes(tmp_path):
    fleet = write(tmp_path / "fleet", f=spec("rollout-fleet"))
    result = run("lint", fleet)
    assert result.exit_code == 1 and "the fleet-wide objects'" in result.output
    monitor = ("metrics:\n  monitor: {kind: PodMonitor, selector: {app: x}, port: metrics-port-long}\n")
    result = run("lint", write(tmp_path / "pod", x=spec("x", extra=monitor)))
    assert result.exit_code == 1 and "not a container port name" in result.output
    assert run("lint", write(tmp_path / "pod2", x=spec("x", extra=monitor.replace("-port-long", "")))).exit_code == 0


def test_two_rollouts_routing_one_host_and_path_through_one_router_are_reported(tmp_path):
    same_host = spec("b", "other", targets="[ingress-nginx]").replace("b.example.com", "a.example.com")
    specs = write(tmp_path / "specs", a=spec("a", targets="[ingress-nginx]"), b=same_host)
    result = run("compile", specs, "-o", tmp_path / "out")
    assert result.exit_code == 0 and "the ingress-nginx route for a.example.com/" in result.output
    elsewhere = same_host.replace("  port: 8080", "  port: 8080\n  path: /b")
    write(tmp_path / "specs", b=elsewhere)
    result = run("compile", specs, "-o", tmp_path / "out2")
    assert result.exit_code == 0 and "would write the same" not in result.output
