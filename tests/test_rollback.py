"""rollback/: the same files with every route on stable, `current: rollback`, and the runbook.

Written over whatever the targets marked ``rollback=True`` produce, so that a new target is
covered without changing this file; the flags are checked concretely.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

import kubecheck
from compiler.ops import edit
from compiler.spec.load import load_file
from compiler.templating import markdown
from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets.registry import REGISTRY
from compiler.targets import rollback
from conftest import ALL_SPECS, SPECS, compile_files, plan_of, plans_of

EXTRA = {"rollback/RUNBOOK.md", "rollback/kustomization.yaml"}
KEYS = [f"user-{i}" for i in range(1_000)]


@cache
def compiled(spec: Path) -> dict[str, str]:
    return compile_files(spec)


def rollback_paths(plan: Plan) -> set[str]:
    """What the targets marked rollback=True write at the stage in effect (relative to the rollout)."""
    return {path for t in REGISTRY if t.rollback for path in t.render(plan)}


def under(files: dict[str, str], prefix: str) -> dict[str, str]:
    return {p[len(prefix):]: t for p, t in files.items() if p.startswith(prefix)}


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_rollback_folder_holds_the_same_files_as_the_live_paths(spec):
    files = compiled(spec)
    for plan in plans_of(spec):
        mine = under(files, plan.out + "/")
        expected = rollback_paths(plan)
        assert expected, "every spec has at least one target with a rollback state"
        folder = {p for p in mine if p.startswith("rollback/")}
        assert folder == {f"rollback/{p}" for p in expected} | EXTRA
        assert expected <= set(mine)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_the_rollback_folder_holds_objects_compiled_for_the_rollback_stage(spec):
    files = compiled(spec)
    for plan in plans_of(spec):
        found, problems = kubecheck.manifests(under(files, plan.out + "/rollback/"))
        assert problems == []
        objects = [m for m in found if m.group != kubecheck.KUSTOMIZE_GROUP]
        assert objects, "the rollback state has Kubernetes objects to apply"
        (kustomization,) = [m for m in found if m.group == kubecheck.KUSTOMIZE_GROUP]
        assert kustomization.doc["resources"]


def normalized(text: str, path: str, sha: str) -> str:
    text = text.replace(sha, "<sha>").replace(f'"{sha[:12]}"', "<sha12>").replace(sha[:12], "<sha12>")
    return text.replace(path, "<spec>")


def rolled_back_copy(spec: Path, tmp_path: Path) -> Path:
    """The spec with `current: rollback` (and every environment's own `current`), written by compiler.edit."""
    text = spec.read_text()
    text = edit.set_current(text, ROLLBACK, None, str(spec)).text
    environments = load_file(spec).data.get("environments") or {}
    for env, overrides in environments.items():
        if "current" in overrides:
            text = edit.set_current(text, ROLLBACK, env, str(spec)).text
    copy = tmp_path / spec.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_current_rollback_compiles_the_rollback_files_into_the_live_paths(spec, tmp_path):
    original = compiled(spec)
    copy = rolled_back_copy(spec, tmp_path)
    rolled = compile_files(copy)
    for plan, plan_rb in zip(plans_of(spec), plans_of(copy)):
        assert plan_rb.is_rollback and plan_rb.out == plan.out
        paths = rollback_paths(plan)
        for path in sorted(paths):
            want = normalized(original[f"{plan.out}/rollback/{path}"], plan.source.path, plan.source.sha256)
            got = normalized(rolled[f"{plan.out}/{path}"], plan_rb.source.path, plan_rb.source.sha256)
            assert got == want, f"{plan.out}/{path}"
            assert rolled[f"{plan.out}/rollback/{path}"] == rolled[f"{plan.out}/{path}"]


def flag_values(flagd_json: str, flags: list[str]) -> dict[str, set[bool]]:
    core = FlagdCore()
    core.set_flags(flagd_json)
    return {f: {core.resolve_boolean_value(f, True, EvaluationContext(targeting_key=k)).value for k in KEYS}
            for f in flags}


@pytest.mark.parametrize("spec", [p for p in ALL_SPECS if any(pl.flags for pl in plans_of(p))], ids=lambda p: p.stem)
def test_rolled_back_flags_follow_stable_and_pull_the_kill_switches_the_spec_names(spec):
    files = compiled(spec)
    for plan in plans_of(spec):
        doc = files[f"{plan.out}/rollback/flags/flagd.json"]
        names = [f.name for f in plan.flags]
        values = flag_values(doc, names)
        for flag in plan.flags:
            if flag.follows_stage:
                assert values[flag.name] == {False}, f"{flag.name} follows the stage: off for every key"
            if flag.kind == "kill_switch":
                assert values[flag.name] == {dict(flag.engaged)[ROLLBACK]}
                if dict(flag.engaged)[ROLLBACK]:
                    for killed in flag.kills:
                        assert values[killed] == {False}


def test_engage_on_rollback_is_what_pulls_a_kill_switch():
    moe = plan_of(SPECS / "moe-intelligence.yaml")
    genesis = plan_of(SPECS / "genesis.yaml")
    assert dict(next(f for f in moe.flags if f.name == "moe_disable").engaged)[ROLLBACK] is True
    assert dict(next(f for f in genesis.flags if f.name == "emergency_shutdown").engaged)[ROLLBACK] is False
    files = compiled(SPECS / "genesis.yaml")
    rolled = json.loads(files["genesis/genesis-orchestrator/rollback/flags/flagd.json"])["flags"]
    assert rolled["emergency_shutdown"]["defaultVariant"] == "off"
    assert rolled["orchestration_enabled"]["defaultVariant"] == "on"  # fixed 100%: not part of the rollback


# --------------------------------------------------------------------------- the runbook


def runbook(spec: Path, env: str | None = None) -> tuple[Plan, str]:
    plan = plan_of(spec, env)
    return plan, rollback.render(plan)[rollback.RUNBOOK]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_the_runbook_says_when_how_how_to_verify_what_to_keep_and_how_long(spec):
    for plan in plans_of(spec):
        text = rollback.render(plan)[rollback.RUNBOOK]
        assert text.startswith("<!-- Generated by rollout from ")
        for stage in plan.stages:
            assert f"| `{stage.name}` |" in text
        for gate in {g.name: g for s in plan.stages for g in s.gates}.values():
            assert markdown(gate.description) in text
        env = f" --env {plan.environment}" if plan.environment else ""
        assert f"rollout rollback {plan.source.path}{env} --reason" in text
        assert f"kubectl apply -k generated/{plan.out}/rollback" in text
        assert f"`{plan.names.rollback_guard_alert}`" in text
        assert plan.names.dashboard_uid in text
        for item in plan.preserve:
            assert markdown(item) in text
        assert f"**{rollback.format_duration(plan.rollback_within)}**" in text
        assert ("### HAProxy Runtime API" in text) == ("haproxy" in plan.targets)
        assert ("../haproxy/runtime-rollback.txt" in text) == ("haproxy" in plan.targets)
        for flag in plan.flags:
            if flag.env and flag.follows_stage:
                assert f"`{flag.env}=false`" in text
            if flag.env and flag.kind == "kill_switch":
                assert f"`{flag.env}=true`" in text


def test_the_runbook_does_not_change_with_the_stage():
    plan = plan_of(SPECS / "genesis.yaml")
    texts = {rollback.render(plan.at(s.name))[rollback.RUNBOOK] for s in plan.stages}
    assert len(texts) == 1


def test_the_runbook_links_the_dashboard_when_grafana_is_known():
    plan, text = runbook(SPECS / "moe-intelligence.yaml")
    assert f"<https://grafana.example.com/d/{plan.names.dashboard_uid}>" in text
    assert "`MOE_DISABLE=true` | `moe_disable` | part of the rollback" in text


def test_the_haproxy_runtime_file_the_runbook_names_exists():
    files = compile_files(SPECS / "ultra-fast-analyzer.yaml")
    plan, text = runbook(SPECS / "ultra-fast-analyzer.yaml")
    assert "haproxy" not in plan.targets and "### HAProxy" not in text
    golden = Path("tests/golden/in-checkout.yaml")
    plan, text = runbook(golden)
    assert f"{plan.out}/{rollback.HAPROXY_RUNTIME}" in compile_files(golden)
    assert f"rollout runtime ../{rollback.HAPROXY_RUNTIME} --socket /run/haproxy/admin.sock" in text
    assert files  # compiled without error


def test_code_blocks_cannot_be_closed_by_the_content():
    block = rollback.code_block('sum(rate(x{job=`a`}[1m])) ``` # not the end\n````')
    fence = block.splitlines()[0]
    assert fence == "`````" and block.endswith("\n`````")
    assert all(not line.startswith(fence) for line in block.splitlines()[1:-1])


def test_hostile_text_lands_inert_in_the_runbook(tmp_path):
    text = (SPECS / "genesis.yaml").read_text()
    hostile = "<script>alert(1)</script> | **bold** [x](javascript:y) `code` # heading"
    text = text.replace("preserve: [deployment state history, production logs]", f"preserve: ['{hostile}']")
    text = text.replace("owner: genesis-orchestration", "owner: '| <img src=x> |'")
    spec = tmp_path / "hostile.yaml"
    spec.write_text(text)
    plan, out = runbook(spec)
    for raw in ("<script>", "<img", "**bold**", "](javascript", "`code`"):
        assert re.search(r"(?<!\\)" + re.escape(raw), out) is None, raw
    line = next(l for l in out.splitlines() if "script\\>alert" in l)
    assert line.startswith("- ") and re.fullmatch(r"- [^\n]*", line)
    owner_row = next(l for l in out.splitlines() if l.startswith("| Owner |"))
    assert owner_row.count("|") - owner_row.count("\\|") == 3  # one table row, two cells


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_the_panels_the_runbook_names_are_on_the_dashboard(spec):
    files = compiled(spec)
    plan, text = runbook(spec, plans_of(spec)[0].environment)
    dashboards = [json.loads(t) for p, t in files.items() if p.startswith(plan.out + "/") and p.endswith(".json")
                  and "panels" in json.loads(t)]
    assert dashboards, "the rollout has a dashboard"
    titles = [panel["title"] for d in dashboards for panel in d["panels"]]
    for panel in rollback.panels(plan):
        assert any(panel["title"].lower() in t.lower() for t in titles), panel["title"]
        assert f"*{markdown(panel['title'])}*" in text
