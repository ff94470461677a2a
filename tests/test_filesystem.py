"""A full disk, a read-only folder, a permission refused: a located error naming the path, exit 1, nothing changed.

Real file systems where the machine allows it (a tmpfs of a few hundred KiB, remounted read-only; the tests run
as root in CI), and failures injected at the write and at the rename everywhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from compiler import build
from compiler.output import transaction
from conftest import ROOT

MINIMAL = (ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text()


def specs_in(folder: Path, names: list[str], current: str = "canary") -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in names:
        text = MINIMAL.replace("{name: web, namespace: shop,", f"{{name: {name}, namespace: shop,").replace(
            "host: web.example.com", f"host: {name}.example.com")
        (folder / f"{name}.yaml").write_text(text.replace("current: canary", f"current: {current}"))
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """The files of the folder, the lock (which holds the last holder's pid) aside."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != transaction.LOCK}


def rollout(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ROLLOUT_CACHE_DIR": ""})


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 384 KiB tmpfs, unmounted afterwards; skipped where mounting is not allowed (not root, no privilege)."""
    point = tmp_path / f"fs-{uuid.uuid4().hex[:8]}"
    point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs; the injected failures below still run")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def assert_located(proc: subprocess.CompletedProcess[str], words: str, where: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert words in proc.stderr and proc.stderr.startswith(where) and "nothing written" in proc.stderr, proc.stderr


def test_a_full_disk_is_a_located_error_and_changes_nothing(tmpfs: Path, tmp_path: Path):
    work = tmpfs
    specs_in(work / "specs", ["a"])
    assert rollout("compile", "specs", "-o", "out", cwd=work).returncode == 0
    before = tree(work / "out")
    specs_in(work / "specs", [f"svc{i}" for i in range(40)])  # far more than the file system holds
    proc = rollout("compile", "specs", "-o", "out", cwd=work)
    assert_located(proc, "no space left on the device", "out/shop/svc")
    assert tree(work / "out") == before
    assert not any((work / "out" / transaction.STATE / transaction.STAGING).iterdir())


def test_a_read_only_folder_is_a_located_error_and_changes_nothing(tmpfs: Path):
    work = tmpfs
    specs_in(work / "specs", ["a", "b"])
    assert rollout("compile", "specs", "-o", "out", cwd=work).returncode == 0
    specs_in(work / "specs", ["a"], current="full")  # b is gone: a compile would remove its files
    before = tree(work / "out")
    assert subprocess.run(["mount", "-o", "remount,ro", str(work)], capture_output=True).returncode == 0
    proc = rollout("compile", "specs", "-o", "out", cwd=work)
    assert_located(proc, "read-only", "out/.rollout/lock")
    assert tree(work / "out") == before
    check = rollout("check", "specs", "-o", "out", cwd=work)
    assert check.returncode == 1 and "internal error" not in check.stderr


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device"),
                                         (errno.EROFS, "the file system is read-only"),
                                         (errno.EACCES, "permission denied")])
def test_a_failing_manifest_write_changes_nothing(tmp_path: Path, monkeypatch, code: int, words: str):
    """The manifests are staged with the files: a failure at the manifest leaves the old tree."""
    specs = specs_in(tmp_path / "specs", ["a", "b"])
    out = tmp_path / "out"
    assert build.build([specs], out).ok
    specs_in(specs, ["a", "b"], current="full")
    before = tree(out)
    real = transaction.write_staged

    def failing(staging: Path, data: bytes, mode: int) -> str:
        if data.lstrip().startswith(b'{\n  "_": "Written by rollout'):
            raise OSError(code, os.strerror(code))
        return real(staging, data, mode)

    monkeypatch.setattr(build, "write_staged", failing)
    report = build.build([specs], out)
    assert not report.ok and any(words in d.message and "nothing written" in d.message for d in report.diagnostics)
    assert any(d.path.endswith(".rollout-manifest") for d in report.diagnostics)
    assert {k: v for k, v in tree(out).items() if not k.startswith(".rollout/")} == \
        {k: v for k, v in before.items() if not k.startswith(".rollout/")}


def test_a_rename_refused_half_way_is_finished_by_the_next_compile(tmp_path: Path, monkeypatch):
    """A permission refused while the files move into place: a located error that says how to finish, and the
    next compile completes the same tree."""
    specs = specs_in(tmp_path / "specs", ["a", "b"])
    out = tmp_path / "out"
    assert build.build([specs], out).ok
    specs_in(specs, ["a", "b"], current="full")
    real = os.replace
    calls: list[int] = []

    def refusing(source: str | Path, target: str | Path) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        real(source, target)

    monkeypatch.setattr(transaction.os, "replace", refusing)
    report = build.build([specs], out)
    monkeypatch.undo()
    (problem,) = report.diagnostics
    assert "permission denied" in problem.message and "run `rollout compile` again" in problem.message
    assert str(out) in problem.path
    assert transaction.interrupted(out)
    assert build.build([specs], out).ok and not transaction.interrupted(out)
    assert build.verify([specs], out).diffs == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_journal_that_cannot_be_written_changes_nothing(tmp_path: Path, monkeypatch, code: int):
    """The journal is written as the compile goes and made durable at the commit: a failure there (a full disk,
    an I/O error) is a located error, the tree is the old one and nothing of the compile is left behind."""
    specs = specs_in(tmp_path / "specs", ["a", "b"])
    out = tmp_path / "out"
    assert build.build([specs], out).ok
    specs_in(specs, ["a", "b"], current="full")
    before = tree(out)

    def failing(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(transaction.os, "fsync", failing)
    report = build.build([specs], out)
    monkeypatch.undo()
    assert not report.ok and any("journal" in d.message and "nothing written" in d.message for d in report.diagnostics)
    state = out / transaction.STATE
    assert not (state / transaction.JOURNAL).exists() and not (state / f"{transaction.JOURNAL}.new").exists()
    assert not any((state / transaction.STAGING).iterdir())
    assert {k: v for k, v in tree(out).items() if not k.startswith(".rollout/")} == \
        {k: v for k, v in before.items() if not k.startswith(".rollout/")}
    assert build.build([specs], out).ok and build.verify([specs], out).diffs == []


def test_a_rollout_folder_on_another_file_system_is_refused_before_anything_moves(tmp_path: Path):
    """A mount inside the output (or a read-only one): the renames into it would fail half way; the compile
    says so at the folder, before its journal makes it the folder's future."""
    specs = specs_in(tmp_path / "specs", ["a", "b"])
    assert rollout("compile", "specs", "-o", "out", cwd=tmp_path).returncode == 0
    folder = tmp_path / "out" / "shop" / "b"
    saved = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        for relative, data in saved.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)
        specs_in(specs, ["a", "b"], current="full")
        before = tree(tmp_path / "out")
        proc = rollout("compile", "specs", "-o", "out", cwd=tmp_path)
        assert_located(proc, "is on another file system", "out/shop/b")
        assert tree(tmp_path / "out") == before
        assert subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode == 0
        proc = rollout("compile", "specs", "-o", "out", cwd=tmp_path)
        assert proc.returncode == 1 and "nothing written" in proc.stderr and tree(tmp_path / "out") == before
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
