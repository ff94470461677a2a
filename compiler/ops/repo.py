"""The repository the closed loop changes: one writer at a time, one rollout per change, all of it or nothing.

``rollout serve`` (a rollback) and ``rollout advance`` (a promotion) edit a spec, compile that spec alone (the
other rollouts' files are left as they are, and a broken spec elsewhere cannot stop it), and commit exactly
the spec and the files the compile wrote or removed; with ``push``, they push and retry on a remote that
moved by rebasing. They take the repository's lock (``.git/rollout.lock``, never committed) for the whole
change, so they never commit over each other; and a change that fails half way is undone: the spec is
restored and compiled again, which puts its files back as they were. A change killed half way (the spec edited,
the compile or the commit not done) is undone the same way by the next command that takes the lock: before it
edits anything, a change records the spec as it was and the commit it started from (``.git/rollout-change.json``,
written atomically, never committed); the next command finds the record and, when no commit was made since,
restores the spec and compiles it, else only drops the record.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from compiler import build
from compiler.diagnostics import Diagnostic
from compiler.ops.edit import one_line
from compiler.ops.workflow import WorkflowError, apply_edit, flock_by, spec_locked

GIT_TIMEOUT = 60
PUSH_ATTEMPTS = 5
CHANGE_RECORD = "rollout-change.json"  # in the Git folder


class GitError(Exception):
    pass


def git(cwd: Path, *args: str, timeout: float = GIT_TIMEOUT, index: Path | None = None) -> str:
    """``git ARGS`` in ``cwd``; with ``index``, on that index file instead of the repository's."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {args[0]}: {exc}") from None
    if done.returncode != 0:
        raise GitError(f"git {args[0]} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


def toplevel(path: Path) -> Path:
    folder = path if path.is_dir() else path.parent
    return Path(git(folder.resolve(), "rev-parse", "--show-toplevel")).resolve()


@contextmanager
def locked(top: Path, timeout: float) -> Iterator[None]:
    """The repository's lock (in its Git folder: never committed), held while a change is made."""
    folder = Path(git(top, "rev-parse", "--absolute-git-dir"))
    fd = os.open(folder / "rollout.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not flock_by(fd, time.monotonic() + timeout):
            raise GitError(f"another rollout command has held {folder / 'rollout.lock'} for more than {timeout:g}s")
        yield
    finally:
        os.close(fd)


@contextmanager
def lock_for(spec: Path, commit: bool, timeout: float) -> Iterator[None]:
    """The lock of the spec's repository while a change to be committed is made; nothing to hold otherwise."""
    if not commit:
        yield
        return
    with locked(toplevel(spec), timeout):
        yield


def stage_since(spec: Path, environment: str | None, current: str, depth: int = 200) -> float | None:
    """When the rollout entered its stage ``current``: the commit time of the commit that set it, found by reading
    the spec's history (an environment's own `current`, else the top-level one). None outside a repository, when
    the stage in the working tree is not committed yet, or when the history is deeper than ``depth`` commits."""
    try:
        top = toplevel(spec)
        relative = spec.resolve().relative_to(top).as_posix()
        history = git(top, "log", f"-{depth}", "--format=%H %ct", "--", relative).splitlines()
    except (GitError, ValueError):
        return None
    since = None
    for line in history:
        sha, stamp = line.split()
        if _current_at(top, sha, relative, environment) != current:
            return since
        since = float(stamp)
    return since if len(history) < depth else None


def _current_at(top: Path, sha: str, relative: str, environment: str | None) -> str | None:
    """The stage a version of the spec puts the rollout (or its environment) at."""
    import yaml

    try:
        data = yaml.safe_load(git(top, "show", f"{sha}:{relative}"))
    except (GitError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    envs = data.get("environments")
    if environment is not None and isinstance(envs, dict) and isinstance(envs.get(environment), dict) \
            and "current" in envs[environment]:
        return str(envs[environment]["current"])
    value = data.get("current")
    return str(value) if value is not None else None


def paused(top: Path, name: str) -> bool:
    return (top / name).exists()


@dataclass
class Change:
    """The outcome of one change: what the compile wrote, and the commit."""

    written: list[str] = field(default_factory=list)
    commit: str | None = None
    pushed: bool = False


def change_spec(spec: Path, value: str, environment: str | None, output: Path, message: str, *, reason: str | None,
                commit: bool, push: bool) -> Change:
    """Set the spec's ``current`` to ``value``, compile the spec alone into ``output``, and commit (and push) the
    spec with the files that changed; undone whole on any failure."""
    if commit:
        recover(toplevel(spec))
    if commit and push:  # the change is made on what the remote has now
        pull_rebase(toplevel(spec))
    with spec_locked(spec):  # a person's edit of the same spec waits, and then reads this change
        if commit and uncommitted(spec):
            raise GitError(f"{spec} has uncommitted changes in this repository: a commit would take them along; "
                           "commit or discard them")
        before = spec.read_bytes()
        record = _record_change(spec, before, output) if commit else None
        try:
            apply_edit(spec, value, environment, reason)
        except WorkflowError:
            if reason is None:
                raise
            apply_edit(spec, value, environment)  # a reason that cannot be recorded: it is in the message
        edited = spec.read_bytes()
        try:
            report = build.build([spec], output)
            if not report.ok:
                raise WorkflowError(d for d in report.diagnostics if d.severity == "error")
            done = Change(sorted(set(report.written) | set(report.removed)))
            if commit:
                done.commit = commit_files(spec, output, done.written, message, edited)
        except BaseException:
            _undo(spec, before, output)
            raise
        finally:
            if record is not None:
                record.unlink(missing_ok=True)
    if commit and push:  # the commit stands; a push that fails is tried again by the next request (`unpushed`)
        push_head(toplevel(spec))
        done.pushed = True
    return done


def unpushed(top: Path) -> bool:
    """The branch has commits its upstream does not have."""
    try:
        return git(top, "rev-list", "--count", "@{upstream}..HEAD") not in ("", "0")
    except GitError:
        return False


def _record_change(spec: Path, before: bytes, output: Path) -> Path:
    """The record a killed change is undone from: the spec as it was, where it compiles to, the commit it began at."""
    import orjson

    top = toplevel(spec)
    record = Path(git(top, "rev-parse", "--absolute-git-dir")) / CHANGE_RECORD
    data = orjson.dumps({"spec": str(spec.resolve()), "output": str(output.resolve()),
                         "head": git(top, "rev-parse", "HEAD"), "before": base64.b64encode(before).decode()})
    pending = record.with_name(f"{CHANGE_RECORD}.new")
    with pending.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(pending, record)
    return record


def recover(top: Path) -> str | None:
    """Undo a change a killed command left half made (call it under the repository's lock); what was done."""
    import orjson

    folder = Path(git(top, "rev-parse", "--absolute-git-dir"))
    for leftover in (PRIVATE_INDEX, f"{PRIVATE_INDEX}.lock", f"{CHANGE_RECORD}.new"):  # a killed change's; no one
        (folder / leftover).unlink(missing_ok=True)  # else uses them
    record = folder / CHANGE_RECORD
    try:
        data = orjson.loads(record.read_bytes())
        spec, output, head = Path(data["spec"]), Path(data["output"]), str(data["head"])
        before = base64.b64decode(data["before"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # not a record this code wrote: nothing to undo from it
        record.unlink(missing_ok=True)
        return None
    if git(top, "rev-parse", "HEAD") != head and not _differs_from_head(top, spec):
        # Killed after HEAD moved and before the index took the commit: the index is brought to it.
        _index_resync(top, [p for p in (_relative(top, spec), _relative(top, output)) if p is not None])
        said = f"the change of {spec} that was interrupted had been committed"
    else:
        if spec.is_file():
            with spec_locked(spec):
                _undo(spec, before, output)
        else:
            _undo(spec, before, output)
        said = f"undid an interrupted change of {spec}"
    record.unlink(missing_ok=True)
    return said


def _relative(top: Path, path: Path) -> str | None:
    try:
        return Path(os.path.realpath(path)).relative_to(top).as_posix()
    except ValueError:
        return None


def _differs_from_head(top: Path, spec: Path) -> bool:
    """The spec in the working tree is not HEAD's (HEAD moved by someone else's commit, not by the change); what
    the index holds does not count (a commit is made from the working tree)."""
    relative = _relative(top, spec)
    if relative is None:
        return True
    try:
        if not git(top, "ls-tree", "--name-only", "HEAD", "--", relative):
            return True  # not in HEAD at all
        return bool(git(top, "diff", "--name-only", "HEAD", "--", relative))
    except GitError:
        return True


def _index_resync(top: Path, where: list[str]) -> None:
    """The index takes HEAD's version of the paths under ``where`` whose working-tree file is HEAD's but whose
    staged version is not (what a commit left behind in the index, never what a person staged and kept)."""
    if not where:
        return
    staged = set(git(top, "diff", "--cached", "--name-only", "--no-renames", "HEAD", "--", *where).splitlines())
    changed = set(git(top, "diff", "--name-only", "--no-renames", "HEAD", "--", *where).splitlines())
    stale = sorted(staged - changed)
    if stale:
        _index_takes(top, stale)


def _undo(spec: Path, before: bytes, output: Path) -> None:
    """The spec as it was, and its files compiled from it again (deterministic: the files as they were)."""
    real = Path(os.path.realpath(spec))  # a linked spec: its target, as the edit wrote it
    tmp = real.with_name(f".{real.name}.restore")
    tmp.write_bytes(before)
    os.replace(tmp, real)
    build.build([spec], output)  # a change is committed from a private index: nothing was staged in the other


def commit_files(spec: Path, output: Path, written: list[str], message: str, edited: bytes | None = None) -> str:
    """Commit the spec and the output files a compile wrote or removed; the commit's id. With ``edited`` (the
    spec as the change wrote it), nothing is committed when the spec on disk is no longer that."""
    top = toplevel(spec)
    paths = [spec.resolve().relative_to(top).as_posix()]
    base = output.resolve()
    for relative in written:
        try:
            paths.append((base / relative).relative_to(top).as_posix())
        except ValueError:
            raise GitError(f"{output} is outside the repository {top}") from None
    return _commit_alone(top, paths, message, {paths[0]: edited} if edited is not None else None)


#: The index a change is committed from (in the Git folder, never the one people stage in).
PRIVATE_INDEX = "rollout-index"
COMMIT_ATTEMPTS = 5
INDEX_SYNC_SECONDS = 10.0


def _commit_alone(top: Path, paths: list[str], message: str, expected: dict[str, bytes] | None = None) -> str:
    """Commit the working tree's ``paths`` on top of HEAD, and nothing else: from a private index (what a person
    has staged is neither taken nor dropped), with HEAD moved only from the commit it was made on (a commit made
    meanwhile is built on, never overwritten). Then the repository's index takes the committed ``paths``, so
    that a person's next commit does not undo this one. Hooks do not run: the change was compiled and checked."""
    index = Path(git(top, "rev-parse", "--absolute-git-dir")) / PRIVATE_INDEX
    for _ in range(COMMIT_ATTEMPTS):
        head = git(top, "rev-parse", "HEAD")
        index.unlink(missing_ok=True)
        try:
            git(top, "read-tree", head, index=index)
            git(top, "add", "--all", "--", *paths, index=index)
            _staged_as_written(top, index, expected or {})
            tree = git(top, "write-tree", index=index)
        finally:
            index.unlink(missing_ok=True)
        if tree == git(top, "rev-parse", f"{head}^{{tree}}"):
            return head  # nothing of these paths differs from HEAD
        commit = git(top, "commit-tree", tree, "-p", head, "-m", message)
        try:
            git(top, "update-ref", "-m", f"rollout: {message.splitlines()[0]}", "HEAD", commit, head)
        except GitError:
            if git(top, "rev-parse", "HEAD") != head:
                continue  # someone committed meanwhile: built again on their commit
            raise
        _index_takes(top, paths)
        return commit
    raise GitError(f"HEAD moved {COMMIT_ATTEMPTS} times while a change was committed; nothing was committed")


def _staged_as_written(top: Path, index: Path, expected: dict[str, bytes]) -> None:
    """Each path in ``expected`` is staged with those bytes: a person's checkout or edit of the spec between the
    change and its commit (which takes no lock) would otherwise commit the compiled files without the spec."""
    if not expected:
        return
    kind = git(top, "rev-parse", "--show-object-format")
    for path, data in expected.items():
        staged = git(top, "ls-files", "--stage", "--", path, index=index).split()
        blob = hashlib.new(kind, b"blob %d\0" % len(data) + data).hexdigest()
        if len(staged) < 2 or staged[1] != blob:
            raise GitError(f"{path} changed on disk while its change was committed (written meanwhile by "
                           "someone else): nothing was committed")


def _index_takes(top: Path, paths: list[str]) -> None:
    """The repository's index holds HEAD's version of ``paths`` (waiting a while for a person's git command that
    holds the index); a failure is said on stderr, and the commit stands (nothing may undo it now)."""
    deadline = time.monotonic() + INDEX_SYNC_SECONDS
    while True:
        try:
            git(top, "reset", "--quiet", "HEAD", "--", *paths)
            return
        except GitError as exc:
            if time.monotonic() >= deadline:
                sys.stderr.write(f"rollout: warning: committed, but the index of {top} still holds "
                                 f"{' '.join(paths[:3])} as they were: run `git reset -- {paths[0]}` before the next "
                                 f"commit there ({one_line(str(exc))})\n")
                return
            time.sleep(0.1)


def uncommitted(spec: Path) -> bool:
    """The spec in the working tree differs from HEAD's (a person's edit in the repository serve changes)."""
    return _differs_from_head(toplevel(spec), spec)


def push_head(top: Path, attempts: int = PUSH_ATTEMPTS) -> None:
    """Push the branch; when the remote moved, rebase onto it and try again (a few times)."""
    for attempt in range(attempts):
        try:
            git(top, "push", "--quiet")
            return
        except GitError as exc:
            if attempt == attempts - 1:
                raise GitError(f"push failed {attempts} times: {exc}") from None
            pull_rebase(top)
            time.sleep(0.2 * (attempt + 1))


def pull_rebase(top: Path) -> None:
    """Bring in what the remote has, replaying local commits on it; a conflict is undone (never a repository left
    in the middle of a rebase, which would stop every later change) and reported."""
    try:
        git(top, "pull", "--rebase", "--quiet")
    except GitError as exc:
        try:
            git(top, "rebase", "--abort")
        except GitError:
            pass  # no rebase was started: the pull failed before it
        raise GitError(f"the pull from the remote failed and was undone, the repository is left as it was: "
                       f"{exc}") from None


def errors_of(exc: WorkflowError) -> list[Diagnostic]:
    return list(exc.diagnostics)


def one_spec_of(output: Path, out: str) -> Path | None:
    """The spec a rollout folder was compiled from, as its manifest records it (relative to the output's parent)."""
    from compiler.output import ledger

    record = ledger.read(output, out)
    if record is None or record.spec is None or not re.fullmatch(r"^[^\0]+$", record.spec):
        return None
    spec = (output.resolve().parent / record.spec).resolve()
    return spec if spec.is_file() else None
