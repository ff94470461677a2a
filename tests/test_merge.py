"""Pull requests in flight at once: two branches that change different rollouts merge in Git without a conflict
(real ``git merge``, three-way), and ``rollout check`` passes on the merge. Where a shared listing does conflict
(two branches adding rollouts), recompiling resolves it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SPECS, git

SPEC_FILES = sorted(SPECS.glob("*.yaml"))


def rollout(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=repo, capture_output=True, text=True,
                          timeout=300)


def ok(repo: Path, *args: str) -> str:
    done = rollout(repo, *args)
    assert done.returncode == 0, f"rollout {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def change(repo: Path, branch: str, *command: str, message: str) -> None:
    """On a new branch from main: one spec edit (a `rollout` command), the compile, one commit."""
    git(repo, "checkout", "-q", "-b", branch, "main")
    if command:
        ok(repo, *command)
    ok(repo, "compile", "specs", "-o", "generated")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with the example specs compiled and committed on main."""
    root = tmp_path / "fleet"
    (root / "specs").mkdir(parents=True)
    for spec in SPEC_FILES:
        shutil.copy(spec, root / "specs" / spec.name)
    git(root, "init", "-q", "-b", "main")
    ok(root, "compile", "specs", "-o", "generated")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fleet")
    return root


def merge(repo: Path, *branches: str) -> str:
    """Merge each branch into main (the first may fast-forward; the others are three-way merges)."""
    git(repo, "checkout", "-q", "main")
    out = ""
    for branch in branches:
        out += git(repo, "merge", "--no-edit", branch, check=False)
    return out


def test_promote_and_rollback_of_different_rollouts_merge_cleanly_and_pass_check(repo: Path):
    change(repo, "promote-genesis", "promote", "specs/genesis.yaml", message="promote genesis")
    change(repo, "rollback-moc", "rollback", "specs/modelops-coordinator.yaml", "--reason", "errors",
           message="roll back moc")
    change(repo, "promote-analyzer", "promote", "specs/ultra-fast-analyzer.yaml", message="promote analyzer")
    out = merge(repo, "promote-genesis", "rollback-moc", "promote-analyzer")
    assert "CONFLICT" not in out and not git(repo, "diff", "--name-only", "--diff-filter=U")
    assert int(git(repo, "rev-list", "--count", "--merges", "HEAD")) == 2  # two of them three-way
    ok(repo, "check", "specs", "-o", "generated")
    assert "current: rollback" in (repo / "specs/modelops-coordinator.yaml").read_text()


def test_an_environment_promote_and_a_gate_change_merge_cleanly(repo: Path):
    change(repo, "production", "promote", "specs/ai-orchestra.yaml", "--env", "production",
           message="promote production")
    git(repo, "checkout", "-q", "-b", "threshold", "main")
    spec = repo / "specs/moe-intelligence.yaml"
    text = spec.read_text()
    edited = text.replace("error_rate:", "error_rate:", 1)  # a gate edited by hand: the first threshold moves
    edited = edited.replace('"< 0.5%"', '"< 0.4%"', 1) if '"< 0.5%"' in edited else edited.replace("1%", "2%", 1)
    assert edited != text
    spec.write_text(edited)
    ok(repo, "compile", "specs", "-o", "generated")
    git(repo, "commit", "-q", "-am", "tighten a gate")
    out = merge(repo, "production", "threshold")
    assert "CONFLICT" not in out
    ok(repo, "check", "specs", "-o", "generated")


def test_rollouts_added_on_two_branches_conflict_only_in_listings_and_a_compile_resolves_them(repo: Path):
    """Adding rollouts changes the fleet's listings (the kustomization of _fleet/, and the Alertmanager
    configuration when a new receiver set appears); a conflict there is resolved by compiling again."""
    for branch, name in (("add-a", "payments-a"), ("add-b", "payments-b")):
        git(repo, "checkout", "-q", "-b", branch, "main")
        text = (repo / "specs/genesis.yaml").read_text()
        (repo / f"specs/{name}.yaml").write_text(text.replace("name: genesis-orchestrator", f"name: {name}", 1))
        ok(repo, "compile", "specs", "-o", "generated")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"add {name}")
    out = merge(repo, "add-a", "add-b")
    conflicted = git(repo, "diff", "--name-only", "--diff-filter=U").split()
    assert conflicted and all(path.startswith("generated/_fleet/") for path in conflicted), out
    assert rollout(repo, "check", "specs", "-o", "generated").returncode == 1  # the conflict is not left in place
    ok(repo, "compile", "specs", "-o", "generated")  # the documented resolution
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-edit")
    ok(repo, "check", "specs", "-o", "generated")
    listing = (repo / "generated/_fleet/kustomization.yaml").read_text()
    assert "payments-a" in listing and "payments-b" in listing and "<<<<<<<" not in listing


def test_two_branches_changing_the_same_rollout_are_resolved_in_the_spec_then_compiled(repo: Path):
    """The same rollout promoted on one branch and rolled back on the other: the spec conflicts (a person decides),
    and so do its generated files; after the spec is resolved, a compile replaces the conflicted files."""
    change(repo, "promote", "promote", "specs/genesis.yaml", message="promote genesis")
    change(repo, "rollback", "rollback", "specs/genesis.yaml", message="roll back genesis")
    out = merge(repo, "promote", "rollback")
    conflicted = git(repo, "diff", "--name-only", "--diff-filter=U").split()
    assert "specs/genesis.yaml" in conflicted and any(p.startswith("generated/") for p in conflicted), out
    git(repo, "checkout", "--theirs", "specs/genesis.yaml")  # the rollback wins
    ok(repo, "compile", "specs", "-o", "generated")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-edit")
    ok(repo, "check", "specs", "-o", "generated")
    assert not any(b"<<<<<<<" in p.read_bytes() for p in (repo / "generated").rglob("*") if p.is_file())
