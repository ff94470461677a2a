"""The output folder: every file or none, per-rollout bookkeeping, partial compiles, skipping what is current,
never touching what rollout did not generate."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from compiler import build
from compiler.output import cache as cache_module, ledger, transaction
from conftest import ROOT

MINIMAL = (ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text()


def spec_text(name: str, namespace: str = "shop", current: str = "canary") -> str:
    return (MINIMAL.replace("{name: web, namespace: shop,", f"{{name: {name}, namespace: {namespace},")
            .replace("host: web.example.com", f"host: {name}.{namespace}.example.com")
            .replace("current: canary", f"current: {current}"))


def fleet(tmp_path: Path, names: list[str]) -> Path:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    for name in names:
        (specs / f"{name}.yaml").write_text(spec_text(name))
    return specs


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``, the transaction's private state aside: file bytes, link targets, folders."""
    out: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if key == transaction.STATE or key.startswith(transaction.STATE + "/"):
            continue
        out[key] = (
            ("link:" + os.readlink(path)) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
        )
    return out


def staged(out: Path) -> list[Path]:
    """Files left in the staging area (none: a failed compile removes them, and the folder it created)."""
    folder = out / transaction.STATE / transaction.STAGING
    return sorted(folder.iterdir()) if folder.is_dir() else []


def compiled(specs: Path | list, out: Path, **options) -> build.Report:
    report = build.build(specs if isinstance(specs, list) else [specs], out, **options)
    assert report.ok, [d.text() for d in report.diagnostics]
    return report


def test_each_rollout_folder_has_its_own_manifest_and_nothing_lists_every_rollout(tmp_path):
    out = tmp_path / "generated"
    compiled(fleet(tmp_path, ["a", "b"]), out)
    found = ledger.scan(out)
    assert set(found) == {"shop/a", "shop/b", "_fleet"}
    a = found["shop/a"]
    assert a.spec == "specs/a.yaml" and len(a.spec_sha256 or "") == 64 and a.fleet and a.fleet.stage == "canary"
    for relative, sha in a.files.items():
        assert build.sha256((out / "shop/a" / relative).read_bytes()) == sha
    assert not (out / ".rollout-manifest").exists()
    assert (out / transaction.STATE / ".gitignore").read_text().splitlines()[-1] == "*"
    manifest = out / "shop/b" / ledger.NAME  # a link is never followed, and marks a folder not to descend into
    kept = tmp_path / "manifest"
    manifest.rename(kept)
    manifest.symlink_to(kept)
    (out / "shop/b/nested").mkdir()
    (out / "shop/b/nested" / ledger.NAME).write_bytes(kept.read_bytes())
    assert set(ledger.scan(out)) == {"shop/a", "_fleet"} and ledger.read(out, "shop/b") is None


def test_a_current_spec_is_not_rendered_and_its_files_are_not_rewritten(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a", "b"])
    compiled(specs, out)
    stamp = (out / "shop/a/PLAN.md").stat().st_mtime_ns
    again = compiled(specs, out)
    assert (again.rendered, again.skipped, again.written, again.removed) == (0, 2, [], [])
    assert (out / "shop/a/PLAN.md").stat().st_mtime_ns == stamp
    (specs / "b.yaml").write_text(spec_text("b", current="full"))
    changed = compiled(specs, out)
    assert (changed.rendered, changed.skipped) == (1, 1)
    assert all(p.startswith(("shop/b/", "_fleet/")) for p in changed.written)


def test_a_hand_edit_of_a_generated_file_is_found_and_repaired(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    good = (out / "shop/a/PLAN.md").read_bytes()
    (out / "shop/a/PLAN.md").write_text("edited\n")
    assert any(path == "shop/a/PLAN.md" for path, _ in build.verify([specs], out).diffs)
    assert compiled(specs, out).rendered == 1
    assert (out / "shop/a/PLAN.md").read_bytes() == good


def test_a_partial_compile_leaves_every_other_rollout_byte_identical(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a", "b", "c"])
    compiled(specs, out)
    before = tree(out)
    (specs / "b.yaml").write_text(spec_text("b", current="full"))
    report = compiled([specs / "b.yaml"], out)
    after = tree(out)
    assert report.left_alone == 2 and report.removed == []
    for path in set(before) | set(after):
        if not path.startswith(("shop/b", "_fleet")):
            assert before.get(path) == after.get(path), path
    assert before["shop/b/PLAN.md"] != after["shop/b/PLAN.md"]
    assert build.verify([specs], out).diffs == []  # the fleet files are right for the whole folder


def test_a_partial_compile_never_takes_or_nests_in_the_folder_of_a_rollout_it_leaves_alone(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a", "b"])
    compiled(specs, out)
    before = tree(out)
    (specs / "dup.yaml").write_text(spec_text("a", current="full"))  # a second spec of shop/a
    (specs / "nest.yaml").write_text(spec_text("x", namespace="a") + "environments: {shop: {}}\n")  # shop/a/x
    for name, says in (("dup", "rollout shop/a is also defined in specs/a.yaml"),
                       ("nest", "lies inside the folder of rollout shop/a")):
        report = build.build([specs / f"{name}.yaml"], out)
        assert not report.ok and any(says in d.message for d in report.diagnostics), [
            d.text() for d in report.diagnostics]
        assert tree(out) == before and staged(out) == []
    (specs / "dup.yaml").unlink()
    (specs / "a.yaml").rename(specs / "renamed.yaml")  # a spec renamed: its folder follows it
    compiled([specs / "renamed.yaml"], out)


def test_a_rollout_is_removed_only_when_the_folder_of_its_spec_is_compiled_whole_or_with_prune(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a", "b"])
    compiled(specs, out)
    (specs / "b.yaml").unlink()
    one = compiled([specs / "a.yaml"], out)
    assert one.removed == [] and one.left_alone == 1 and (out / "shop/b/PLAN.md").exists()
    whole = compiled(specs, out)
    assert whole.removed_rollouts == ["shop/b"] and not (out / "shop/b").exists() and (out / "shop").is_dir()
    compiled(fleet(tmp_path, ["b", "c"]), out)
    (specs / "b.yaml").unlink()
    pruned = compiled([specs / "a.yaml"], out, prune=True)
    assert pruned.removed_rollouts == ["shop/b"] and not (out / "shop/b").exists()
    assert pruned.left_alone == 1 and (out / "shop/c/PLAN.md").exists()  # its spec is there: never pruned


def test_an_output_folder_inside_the_output_folder_is_another_s_and_left_alone(tmp_path):
    """`-o out` after `-o out/generated`: the inner folder's rollouts are not this folder's to judge or remove."""
    specs = fleet(tmp_path, ["a", "b"])
    inner, outer = tmp_path / "out" / "generated", tmp_path / "out"
    compiled(specs, inner)
    before = tree(inner)
    report = compiled(specs, outer, prune=True)
    assert report.removed == [] and report.removed_rollouts == []
    assert tree(inner) == before
    assert build.verify([specs], inner).ok


def test_never_touches_files_it_did_not_generate(tmp_path):
    out = tmp_path / "generated"
    out.mkdir()
    (out / "README.md").write_text("mine\n")
    (out / "shop").mkdir()
    (out / "shop" / "notes.yaml").write_text("mine too\n")
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    (specs / "a.yaml").unlink()
    (specs / "other.yaml").write_text(spec_text("other"))
    compiled(specs, out)
    assert (out / "README.md").read_text() == "mine\n" and (out / "shop/notes.yaml").read_text() == "mine too\n"
    assert not (out / "shop/a").exists()


def test_refuses_to_overwrite_a_foreign_file_and_writes_nothing(tmp_path):
    out = tmp_path / "generated"
    (out / "shop/a").mkdir(parents=True)
    (out / "shop/a/PLAN.md").write_text("hand written\n")
    before = tree(out)
    report = build.build([fleet(tmp_path, ["a", "b"])], out)
    assert not report.ok
    assert any(d.path.endswith("shop/a/PLAN.md") and "a file rollout did not generate is in the way" in d.message
               for d in report.diagnostics)
    assert tree(out) == before
    assert staged(out) == []


def test_a_file_where_a_folder_is_needed_stops_the_compile_before_anything_is_written(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    shutil.rmtree(out / "shop/a/prometheus")
    (out / "shop/a/prometheus").write_text("mine\n")
    before = tree(out)
    report = build.build([specs], out)
    assert any("'shop/a/prometheus' is a file where rollout needs a folder" in d.message for d in report.diagnostics)
    assert tree(out) == before


def test_symbolic_links_inside_the_output_are_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "PLAN.md").write_text("# Generated by rollout from a.yaml\nkeep\n")
    out = tmp_path / "generated"
    out.mkdir()
    (out / "shop").symlink_to(outside)
    report = build.build([fleet(tmp_path, ["a"])], out)
    assert any("'shop' is a symbolic link" in d.message for d in report.diagnostics)
    assert sorted(p.name for p in outside.iterdir()) == ["PLAN.md"]


def test_a_fifo_in_the_output_is_reported_and_never_waited_on(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    plan = out / "shop/a/PLAN.md"
    plan.unlink()
    os.mkfifo(plan)  # opened for reading the usual way, it would wait for a writer forever
    check = build.verify([specs], out)
    assert not check.ok and any("'shop/a/PLAN.md' is not a regular file" in d.message for d in check.diagnostics)
    (specs / "a.yaml").write_text(spec_text("a", current="full"))
    report = build.build([specs], out)
    assert any("'shop/a/PLAN.md' is not a regular file" in d.message for d in report.diagnostics)
    manifest = out / "shop/a" / ledger.NAME
    manifest.unlink()
    os.mkfifo(manifest)
    assert "shop/a" not in ledger.scan(out) and ledger.read(out, "shop/a") is None



def test_a_manifest_that_cannot_be_read_is_no_bookkeeping(tmp_path, monkeypatch):
    out = tmp_path / "generated"
    compiled(fleet(tmp_path, ["a"]), out)

    def refused(path):
        raise PermissionError(13, "Permission denied", path)  # what a root user never sees on a real file

    monkeypatch.setattr(ledger, "read_regular", refused)
    assert ledger.scan(out) == {} and ledger.read(out, "shop/a") is None


def test_a_write_that_fails_half_way_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a", "b"])
    compiled(specs, out)
    for name in ("a", "b"):
        (specs / f"{name}.yaml").write_text(spec_text(name, current="full"))
    before = tree(out)
    real = transaction.write_staged
    calls: list[int] = []

    def failing(staging, data, mode):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(staging, data, mode)

    monkeypatch.setattr(build, "write_staged", failing)
    report = build.build([specs], out)
    assert not report.ok and any("no space left on the device" in d.message for d in report.diagnostics)
    assert tree(out) == before
    assert staged(out) == []
    fresh = tmp_path / "fresh"
    calls.clear()
    assert not build.build([specs], fresh).ok
    assert not fresh.exists()


def test_a_committed_journal_is_finished_by_the_next_compile_and_reported_by_check(tmp_path, monkeypatch):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    (specs / "a.yaml").write_text(spec_text("a", current="full"))

    def killed(root, ops):
        raise SystemExit("killed")  # stands in for a kill after the journal's rename

    monkeypatch.setattr(transaction, "_apply", killed)
    with pytest.raises(SystemExit):
        build.build([specs], out)
    monkeypatch.undo()
    assert transaction.interrupted(out)
    check = build.verify([specs], out)
    assert not check.ok and "interrupted" in check.diagnostics[0].message
    report = compiled(specs, out)
    assert report.recovered and "finished an interrupted compile" in report.recovered
    assert not transaction.interrupted(out) and build.verify([specs], out).diffs == []
    assert staged(out) == []


def test_the_cache_is_an_optimisation_only(tmp_path, monkeypatch):
    """Deleting or corrupting the hash cache changes nothing but time."""
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("ROLLOUT_CACHE_DIR", str(cache_dir))
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    assert build.verify([specs], out).diffs == []
    database = next(cache_dir.glob("*.sqlite3"))
    with sqlite3.connect(database) as db:  # the folder was found matching: its stamp is remembered
        assert db.execute("SELECT count(*) FROM folders WHERE folder LIKE ?", ("%shop/a/",)).fetchone() == (1,)
    assert build.verify([specs], out).diffs == []
    (out / "shop/a/PLAN.md").write_text("edited\n")  # a new stat: the stamp no longer holds
    with sqlite3.connect(database) as db:  # a row that lies about the edited file
        db.execute("UPDATE files SET sha256 = ? WHERE path LIKE ?", ("0" * 64, "%PLAN.md"))
    assert any(p == "shop/a/PLAN.md" for p, _ in build.verify([specs], out).diffs)
    database.write_bytes(b"not a database" * 100)
    assert any(p == "shop/a/PLAN.md" for p, _ in build.verify([specs], out).diffs)
    shutil.rmtree(cache_dir)
    assert any(p == "shop/a/PLAN.md" for p, _ in build.verify([specs], out).diffs)
    monkeypatch.setenv("ROLLOUT_CACHE_DIR", "")
    assert cache_module.Cache().db is None
    assert compiled(specs, out).rendered == 1 and build.verify([specs], out).diffs == []


def test_compiled_templates_are_an_optimisation_only(tmp_path, monkeypatch):
    """Templates compiled by an earlier command are reused from the cache folder; damaged or impossible to
    keep, they are compiled again, and the output is the same."""
    from compiler import templating

    specs = fleet(tmp_path, ["a"])
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("ROLLOUT_CACHE_DIR", str(cache_dir))
    seen = []
    try:
        for state in ("empty", "filled", "damaged", "truncated", "blocked", "off"):
            kept = sorted((cache_dir / "templates").glob("*.cache")) if cache_dir.exists() else []
            if state == "damaged":
                for path in kept:
                    path.write_bytes(b"not bytecode")
            if state == "truncated":  # the right header, the body cut off
                assert kept
                for path in kept:
                    path.write_bytes(path.read_bytes()[:60])
            if state == "blocked":
                shutil.rmtree(cache_dir)
                cache_dir.write_text("a file where the cache folder would be\n")
            if state == "off":
                monkeypatch.setenv("ROLLOUT_CACHE_DIR", "")
            templating._environment.cache_clear()
            out = tmp_path / f"out-{state}"
            compiled(specs, out)
            seen.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*")
                         if p.is_file() and ".rollout" not in p.parts and p.name != ledger.NAME})
            if state == "empty":
                assert sorted((cache_dir / "templates").glob("*.cache")), "the compiled templates were not kept"
    finally:
        templating._environment.cache_clear()
    assert all(files == seen[0] for files in seen) and seen[0]


def test_manifest_paths_cannot_escape_the_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    out = tmp_path / "generated"
    (out / "shop/gone").mkdir(parents=True)
    (out / "shop/gone" / ledger.NAME).write_text(
        '{"version": 1, "spec": "specs/gone.yaml", "files": {"../../../outside.txt": "0", "/etc/passwd": "0"}}\n')
    compiled(fleet(tmp_path, ["a"]), out)
    assert outside.read_text() == "keep\n"


def test_a_stale_file_someone_replaced_is_kept(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a", "b"])
    compiled(specs, out)
    (out / "shop/b/gateway-api/httproute.yaml").write_text("mine now\n")
    (specs / "b.yaml").unlink()
    report = compiled(specs, out)
    assert "shop/b/PLAN.md" in report.removed and "shop/b/gateway-api/httproute.yaml" not in report.removed
    assert (out / "shop/b/gateway-api/httproute.yaml").read_text() == "mine now\n"


def test_a_file_mode_its_user_set_is_kept(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    (out / "shop/a/PLAN.md").chmod(0o444)
    (specs / "a.yaml").write_text(spec_text("a", current="full"))
    compiled(specs, out)
    assert (out / "shop/a/PLAN.md").stat().st_mode & 0o777 == 0o444
    assert "full" in (out / "shop/a/PLAN.md").read_text()


def two_environments(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(specs folder, its one spec with staging and production, the output folder)."""
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = specs / "orchestra.yaml"
    shutil.copy(ROOT / "specs" / "ai-orchestra.yaml", spec)
    return specs, spec, tmp_path / "generated"


def test_promoting_one_environment_leaves_the_other_environment_s_folder_untouched(tmp_path):
    """The spec's bytes change, but not what the staging environment compiles to: its folder, manifest included,
    stays byte-identical, `check` passes, and compiling again writes nothing."""
    from compiler.ops import edit

    specs, spec, out = two_environments(tmp_path)
    compiled(specs, out)
    before = tree(out)
    change = edit.set_current(spec.read_text(), "switch", "production", str(spec), None)
    spec.write_text(change.text)
    report = compiled(specs, out)
    after = tree(out)
    staging = [p for p in set(before) | set(after) if p.startswith("staging/")]
    assert staging and all(before.get(p) == after.get(p) for p in staging)
    assert any(before.get(p) != after.get(p) for p in after if p.startswith("production/"))
    assert all(p.startswith(("production/", "_fleet/")) for p in report.written), report.written
    assert build.verify([specs], out).diffs == []
    again = compiled(specs, out)
    assert again.written == [] and again.removed == []


def test_a_kept_folder_is_not_rendered_again_by_every_later_command(tmp_path, monkeypatch):
    """After one environment's promote, the other keeps the manifest of the spec's earlier bytes; the cache
    remembers that the new bytes render the same, so later compiles and checks render nothing. Without the
    cache (a fresh CI clone) the spec is rendered, and found the same."""
    from compiler.ops import edit

    monkeypatch.setenv("ROLLOUT_CACHE_DIR", str(tmp_path / "cache"))
    specs, spec, out = two_environments(tmp_path)
    compiled(specs, out)
    spec.write_text(edit.set_current(spec.read_text(), "switch", "production", str(spec), None).text)
    assert compiled(specs, out).rendered == 2
    staging = next(p for p in out.rglob(ledger.NAME) if "staging" in p.parts)
    kept = staging.read_bytes()
    for command in ("compile", "check", "compile"):
        report = compiled(specs, out) if command == "compile" else build.verify([specs], out)
        assert report.rendered == 0 and report.skipped == 2, command
        assert staging.read_bytes() == kept
    (out / "staging" / "staging" / "ai-orchestra" / "PLAN.md").write_text("edited\n")  # the files are still checked
    assert any(p.endswith("PLAN.md") for p, _ in build.verify([specs], out).diffs)
    compiled(specs, out)
    monkeypatch.setenv("ROLLOUT_CACHE_DIR", "")
    report = build.verify([specs], out)
    assert report.rendered == 2 and report.diffs == []


def test_a_promote_changes_no_fleet_file_and_the_fleet_files_are_not_rendered(tmp_path, monkeypatch):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a", "b"])
    compiled(specs, out)
    before = {p: (out / "_fleet" / p).read_bytes() for p in ledger.read(out, "_fleet").files}
    (specs / "b.yaml").write_text(spec_text("b", current="full"))
    rendered = []
    real = build._fleet
    monkeypatch.setattr(build, "_fleet", lambda entries: rendered.append(1) or real(entries))
    report = compiled([specs / "b.yaml"], out)
    assert report.rendered == 1 and report.fleet_changed == [] and rendered == []
    assert all(p.startswith("shop/b/") for p in report.written), report.written
    assert {p: (out / "_fleet" / p).read_bytes() for p in before} == before
    assert build.verify([specs], out).diffs == []
    (out / "_fleet" / sorted(before)[0]).write_text("edited\n")  # a hand edit is still found beside a promote
    (specs / "b.yaml").write_text(spec_text("b", current="canary"))
    assert compiled([specs / "b.yaml"], out).fleet_changed == [f"_fleet/{sorted(before)[0]}"]


def test_the_fleet_files_do_not_read_a_rollout_s_stage():
    """A promote leaves _fleet/ alone because its targets read everything of a rollout but its stage."""
    import dataclasses
    from fractions import Fraction

    from compiler import pipeline
    from compiler.ir.fleet import FleetEntry
    from compiler.targets import fleets

    entries = []
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        units, _ = pipeline.analyse_file(spec)
        entries += [FleetEntry.of(u.plan, "gitops") for u in units]
    assert len(entries) >= 5 and any(e.alerting for e in entries)
    moved = [dataclasses.replace(e, stage="somewhere-else", weight=Fraction(1, 3)) for e in entries]
    assert fleets.render(moved) == fleets.render(entries)


def test_a_journal_in_the_single_object_form_is_finished_too(tmp_path):
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    staging = out / transaction.STATE / transaction.STAGING
    staging.mkdir(exist_ok=True)
    (staging / "1-2-0").write_text("staged\n")
    import json
    (out / transaction.STATE / transaction.JOURNAL).write_text(json.dumps(
        {"ops": [["write", "1-2-0", "shop/a/NOTES.txt"], ["remove", "shop/a/PLAN.md"]]}))
    assert transaction.interrupted(out)
    assert "finished an interrupted compile (2 operations)" in (transaction.recover(out) or "")
    assert (out / "shop/a/NOTES.txt").read_text() == "staged\n" and not (out / "shop/a/PLAN.md").exists()


def test_an_empty_ignore_file_a_kill_left_is_written_again(tmp_path):
    """Killed between creating `.rollout/.gitignore` and writing it: `git add` of the folder would take the lock."""
    out = tmp_path / "generated"
    specs = fleet(tmp_path, ["a"])
    compiled(specs, out)
    ignore = out / transaction.STATE / ".gitignore"
    ignore.write_text("")
    compiled(specs, out)
    assert ignore.read_text() == transaction.GITIGNORE
