"""The pull-request workflow: promote, rollback, set-stage and diff, on copies of the specs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compiler.cli import main
from conftest import GOLDEN_INPUTS, ROOT, SEED_SPECS, plan_of

runner = CliRunner()


def run(*args: str):
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def changed_lines(before: str, after: str) -> int:
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    if len(a) != len(b):
        return -1
    return sum(x != y for x, y in zip(a, b))


def copy_specs(tmp_path: Path, *names: str) -> Path:
    (tmp_path / "specs").mkdir()
    for name in names or [p.name for p in SEED_SPECS]:
        shutil.copy(ROOT / "specs" / name, tmp_path / "specs" / name)
    return tmp_path


def compile_into(repo: Path) -> None:
    result = run("compile", repo / "specs", "-o", repo / "generated")
    assert result.exit_code == 0, result.output


@pytest.fixture()
def repo(tmp_path) -> Path:
    """Copies of the seed specs (not compiled)."""
    return copy_specs(tmp_path)


def hidden_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def test_promote_changes_one_line_of_each_spec(repo):
    for spec in sorted((repo / "specs").glob("*.yaml")):
        before = spec.read_text()
        result = run("promote", spec)
        assert result.exit_code == 0, result.output
        assert changed_lines(before, spec.read_text()) == 1, spec.name
    assert hidden_leftovers(repo / "specs") == []


def test_check_reports_the_drift_of_a_promotion_until_compile_and_diff_names_the_stages(tmp_path):
    repo = copy_specs(tmp_path, "modelops-coordinator.yaml", "genesis.yaml")
    compile_into(repo)
    spec = repo / "specs" / "modelops-coordinator.yaml"
    before = plan_of(spec)
    assert run("promote", spec).exit_code == 0
    after = plan_of(spec)
    assert after.current.index == before.current.index + 1
    check = run("check", repo / "specs", "-o", repo / "generated")
    assert check.exit_code == 1 and "is stale" in check.output
    assert f"--- a/{after.out}/PLAN.md" in check.output
    assert "genesis-orchestrator/" not in check.output
    result = run("diff", repo / "specs", "-o", repo / "generated")
    assert result.exit_code == 0
    lines = result.output.split("\n\n", 1)[0].splitlines()
    assert lines == [l for l in lines if l.startswith(after.out + ":")], "only the rollouts that change are listed"
    (line,) = lines
    expected = (f"{after.out}: {before.current.name} 10% -> {after.current.name} 50%, ")
    assert line.startswith(expected), line
    counted = re.fullmatch(r".*, (\d+) files changed", line)
    assert counted, line
    # what changes is exactly what PLAN.md says entering the stage changes, PLAN.md and the rollout's manifest
    plan_md = (repo / "generated" / after.out / "PLAN.md").read_text()
    section = plan_md.split(f"### Entering {after.current.name}\n", 1)[1].split("\n### ", 1)[0]
    listed = re.findall(r"^- `([^`]+)`$", section, re.M)
    assert listed
    assert int(counted.group(1)) == len(listed) + 2, (line, section)
    for path in listed + ["PLAN.md", ".rollout-manifest"]:
        assert f"\n--- a/{after.out}/{path}\n" in result.output
    compile_into(repo)
    hook = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}["rollout-check"]
    args = [str(repo / a) if a in ("specs", "generated") else a for a in hook["args"]]
    assert run(*hook["entry"].split()[1:], *args).exit_code == 0
    (repo / "specs" / "genesis.yaml").unlink()
    gone = run("diff", repo / "specs", "-o", repo / "generated").output
    assert re.search(r"^genesis/genesis-orchestrator: removed \(its spec is gone\)$", gone, re.M), gone
    assert after.out not in gone.split("\n\n", 1)[0]


def test_diff_of_an_empty_folder_lists_every_rollout_as_new(tmp_path):
    result = run("diff", ROOT / "specs" / "genesis.yaml", "-o", tmp_path / "nothing")
    assert result.output.startswith("genesis/genesis-orchestrator: new -> canary-5 5%, ")


def test_promote_past_the_last_stage_is_a_located_error_and_writes_nothing(repo):
    spec = repo / "specs" / "ultra-fast-analyzer.yaml"
    assert run("set-stage", spec, "rollout").exit_code == 0
    before = spec.read_bytes()
    result = run("promote", spec)
    assert result.exit_code == 1
    assert re.search(r"ultra-fast-analyzer\.yaml:\d+:\d+: error: .*last stage 'rollout'", result.output)
    assert spec.read_bytes() == before


def test_promote_from_rollback_is_an_error_that_says_how_to_resume(repo):
    spec = repo / "specs" / "genesis.yaml"
    assert run("rollback", spec, "--reason", "error rate 3%").exit_code == 0
    assert "current: rollback  # rolled back: error rate 3%\n" in spec.read_text()
    before = spec.read_bytes()
    result = run("promote", spec)
    assert result.exit_code == 1 and "rollout set-stage" in result.output
    assert spec.read_bytes() == before
    assert run("set-stage", spec, "canary-5").exit_code == 0
    assert spec.read_text() == (ROOT / "specs" / "genesis.yaml").read_text()


def test_an_unknown_stage_fails_analysis_and_leaves_the_spec_alone(repo):
    spec = repo / "specs" / "genesis.yaml"
    before = spec.read_bytes()
    result = run("set-stage", spec, "canary-15")
    assert result.exit_code == 1
    line = before.decode().splitlines().index("current: canary-5") + 1
    assert re.search(rf"genesis\.yaml:{line}:\d+: error: .*canary-15", result.output), result.output
    assert spec.read_bytes() == before and hidden_leftovers(spec.parent) == []


def test_environments_are_edited_with_env(repo):
    spec = repo / "specs" / "ai-orchestra.yaml"
    before = spec.read_text()
    assert run("promote", spec, "--env", "production").exit_code == 0
    after = spec.read_text()
    assert changed_lines(before, after) == 1 and "  production: {current: canary-5}\n" in after
    assert plan_of(spec, "production").current.name == "canary-5"
    assert plan_of(spec, "staging").current.name == "switch"
    result = run("promote", spec, "--env", "staging")
    assert result.exit_code == 1 and "last stage 'switch'" in result.output
    assert run("rollback", spec, "--env", "staging").exit_code == 0
    assert plan_of(spec, "staging").is_rollback and not plan_of(spec, "production").is_rollback
    result = run("promote", spec, "--env", "qa")
    assert result.exit_code == 1 and "no environment 'qa'" in result.output


def test_without_env_the_shared_current_moves_for_the_environments_that_inherit_it(repo):
    spec = repo / "specs" / "ai-orchestra.yaml"
    assert run("promote", spec).exit_code == 0
    assert plan_of(spec, "production").current.name == "canary-5"
    assert plan_of(spec, "staging").current.name == "switch"


def test_rollback_of_a_rolled_back_spec_changes_nothing(repo):
    spec = ROOT / "tests" / "golden" / "in-rollback.yaml"
    copy = repo / "in-rollback.yaml"
    shutil.copy(spec, copy)
    result = run("rollback", copy)
    assert result.exit_code == 0 and "nothing changed" in result.output
    assert copy.read_bytes() == spec.read_bytes()


@pytest.mark.parametrize("spec", GOLDEN_INPUTS, ids=lambda p: p.stem)
def test_rollback_of_every_golden_input_changes_one_line(spec, tmp_path):
    copy = tmp_path / spec.name
    shutil.copy(spec, copy)
    result = run("rollback", copy, "--reason", "drill")
    assert result.exit_code == 0
    assert changed_lines(spec.read_text(), copy.read_text()) == 1  # the reason is recorded even when rolled back
    assert "current: rollback  # rolled back: drill" in copy.read_text()


# --------------------------------------------------------------------------- pre-commit and CI


def test_pre_commit_hooks_run_real_commands():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    by_id = {h["id"]: h for h in hooks}
    assert set(by_id) == {"rollout-lint", "rollout-check"}
    for hook in hooks:
        assert {"id", "name", "entry", "language"} <= set(hook) and hook["language"] == "python"
        program, command = hook["entry"].split()[:2]
        assert program == "rollout" and command in main.commands
    lint = by_id["rollout-lint"]
    assert lint["pass_filenames"] is True and re.search(lint["files"], "specs/checkout.yaml")
    check = by_id["rollout-check"]
    assert check["pass_filenames"] is False and check["args"] == ["specs", "-o", "generated"]


def test_the_lint_hook_entry_lints_the_seed_specs():
    lint = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}["rollout-lint"]
    assert run(*lint["entry"].split()[1:], *SEED_SPECS).exit_code == 0


def test_the_documented_ci_workflow_runs_lint_check_and_the_promtool_tests():
    text = (ROOT / "docs" / "workflow.md").read_text()
    block = re.search(r"```yaml\n(# \.github/workflows/rollout\.yaml\n.*?)```", text, re.S)
    assert block, "docs/workflow.md shows the workflow file"
    workflow = yaml.safe_load(block.group(1))
    assert "pull_request" in workflow[True]  # `on:` is a YAML 1.1 boolean key for PyYAML
    steps = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    script = "\n".join(steps)
    for command in ("rollout lint", "rollout check", "promtool test rules"):
        assert command in script, command


def test_approving_a_stage_that_needs_no_approval_is_refused(tmp_path: Path):
    repo = copy_specs(tmp_path, "genesis.yaml")
    spec = repo / "specs" / "genesis.yaml"
    before = spec.read_bytes()
    result = run("approve", spec, "--by", "alice")
    assert result.exit_code == 1 and "needs no approval" in result.output and "no stage has `approve: manual`" in (
        result.output)
    assert spec.read_bytes() == before


def test_edits_of_one_spec_run_one_after_the_other_each_reading_the_last(repo):
    """An edit waits for another edit of the spec, and then reads the spec that edit wrote (a new file at the
    path: the lock it waited on was the old file's)."""
    import subprocess
    import sys
    import time

    from compiler.ops import edit, workflow

    spec = repo / "specs" / "ai-orchestra.yaml"
    promoted = edit.set_current(spec.read_text(), workflow.next_stage_name(spec, None), None, str(spec)).text
    with workflow.spec_locked(spec):
        waiting = subprocess.Popen([sys.executable, "-m", "compiler", "rollback", str(spec), "--reason", "fire"],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        assert waiting.poll() is None, waiting.communicate()[0]
        pending = spec.with_name(".pending")
        pending.write_text(promoted)
        pending.replace(spec)  # the edit that held the lock writes a new file
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, out
    assert changed_lines(promoted, spec.read_text()) == 1 and "current: rollback" in spec.read_text()
    assert "canary-5 -> rollback" in out


def test_a_linked_spec_is_edited_where_it_lives(repo):
    real = repo / "specs" / "ai-orchestra.yaml"
    link = repo / "link.yaml"
    link.symlink_to(real)
    assert run("promote", link).exit_code == 0
    assert link.is_symlink() and plan_of(real, "production").current.name == "canary-5"
    assert hidden_leftovers(repo / "specs") == [] and hidden_leftovers(repo) == []


def test_a_spec_that_cannot_be_written_is_a_located_error_that_leaves_nothing(repo, monkeypatch):
    import os

    from compiler.ops import workflow

    spec = repo / "specs" / "ai-orchestra.yaml"
    before = spec.read_bytes()

    def refused(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(workflow.os, "replace", refused)
    result = run("promote", spec)
    monkeypatch.setattr(workflow.os, "replace", os.replace)
    assert result.exit_code == 1 and "ai-orchestra.yaml:1:1: error: cannot write the spec: Operation not permitted" in (
        result.output)
    assert spec.read_bytes() == before and hidden_leftovers(repo / "specs") == []


def test_what_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    import os

    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    result = run("promote", fifo)
    assert result.exit_code == 1 and "not a regular file" in result.output


def test_the_top_level_current_that_every_environment_overrides_is_not_moved(repo):
    spec = repo / "specs" / "ai-orchestra.yaml"
    assert run("set-stage", spec, "canary-5", "--env", "production").exit_code == 0
    before = spec.read_bytes()
    for args in (("rollback", spec), ("set-stage", spec, "canary-5")):
        result = run(*args)
        assert result.exit_code == 1 and "every environment sets its own `current`" in result.output, result.output
        assert re.search(r"ai-orchestra.yaml:\d+:\d+: error", result.output)
    assert spec.read_bytes() == before


def test_a_rollback_reason_is_one_line_without_secrets(repo):
    spec = repo / "specs" / "ai-orchestra.yaml"
    result = run("rollback", spec, "--reason", "token ghp_" + "a" * 36)
    assert result.exit_code == 1 and "--reason seems to hold" in result.output
    assert run("rollback", spec, "--reason", "   ").exit_code == 0
    line = next(x for x in spec.read_text().splitlines() if x.startswith("current:"))
    assert "rolled back" not in line and line == line.rstrip()
