"""Writing an output folder as one transaction: the old tree or the new one, whatever happens.

A compile takes the folder's lock (``.rollout/lock``, an advisory ``flock``
held for the whole compile and released by the kernel when the process ends,
so a killed compile never blocks the next), waits up to a bound for another
compile to finish, and first completes any compile that was interrupted.

New and changed files are written into ``.rollout/staging/``; nothing in the
tree changes while they are.  Every rename into place and every removal is
appended, as it is decided, to ``.rollout/journal.new`` (one JSON array per
line: a fleet's bookkeeping is on disk, not in memory), which is flushed and
renamed to ``.rollout/journal``: that rename is the commit.  The operations are applied, the
journal removed.  A compile killed before the commit leaves only staged files,
which the next compile deletes; one killed after it leaves the journal, which
the next compile applies again (each operation is idempotent) before anything
else, and which ``rollout check`` reports without touching it.

``.rollout/`` holds a ``.gitignore`` of ``*``: ``git add`` of the output folder
never takes the lock, the journal or a staged file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

STATE = ".rollout"
LOCK = "lock"
JOURNAL = "journal"
STAGING = "staging"
GITIGNORE = "# rollout's lock, journal and staged files: never committed\n*\n"
POLL = 0.05


class OutputError(Exception):
    """The output folder cannot take the compile; ``path`` is where, ``message`` why.  Nothing was changed
    unless ``changed`` says so."""

    def __init__(self, path: Path, message: str, changed: bool = False):
        self.path = path
        self.message = message
        self.changed = changed
        super().__init__(f"{path}: {message}")


def describe(exc: OSError) -> str:
    """An OS error in words a user acts on."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def state_dir(out: Path) -> Path:
    return out / STATE


def interrupted(out: Path) -> bool:
    """A compile committed its journal and did not finish applying it."""
    return (state_dir(out) / JOURNAL).is_file()


# --------------------------------------------------------------------------- the lock


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return "another process"
    return f"process {text.split()[0]}" if text else "another process"


#: The lock descriptors this process holds. A forked child (a render worker) closes its copies at once: a lock
#: (flock) lasts while any copy of its descriptor is open, so a worker outliving a killed compile would otherwise
#: hold the folder locked for every later command.
_HELD: set[int] = set()


def _forget_inherited_locks() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_inherited_locks)


def acquire(out: Path, timeout: float, shared: bool = False, stated: float | None = None) -> int | None:
    """The lock's file descriptor once the lock is held; ``OutputError`` after ``timeout`` seconds (of the
    ``stated`` ones the user gave, when part of them went on waiting already).

    A shared lock (``rollout check``) is only taken where a lock file exists: checking never writes.
    """
    path = state_dir(out) / LOCK
    deadline = time.monotonic() + max(timeout, 0.0)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    while True:
        try:
            fd = os.open(path, os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            if shared:
                return None
            raise
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise OutputError(
                        out,
                        f"{_holder(path)} has been compiling into this folder for longer than the "
                        f"{stated if stated is not None else timeout:g}s this compile waits (--lock-timeout): "
                        "nothing written",
                    ) from None
                time.sleep(POLL)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the lock file as we waited: lock the one that is there now
    if not shared:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD.add(fd)
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        _HELD.discard(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- staging


def _process_umask() -> int:
    """The umask, read once per process (nothing here changes it; reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()
_PID = os.getpid()  # in the names of staged files; a forked render worker learns its own


def _after_fork() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def write_staged(staging: Path, data: bytes, mode: int) -> str:
    """``data`` in a new file of the staging folder (any process may call this); its name there."""
    fd = -1
    folder = os.fspath(staging)
    for attempt in range(100):
        name = f"{_PID}-{time.monotonic_ns()}-{attempt}"
        try:
            fd = os.open(f"{folder}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            break
        except FileExistsError:
            continue
    if fd < 0:
        raise OSError(errno.EEXIST, "no free name in the staging folder")
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if mode & _UMASK:
            os.fchmod(fd, mode)  # the umask does not decide a generated file's mode
    except BaseException:
        os.close(fd)
        (staging / name).unlink(missing_ok=True)
        raise
    os.close(fd)
    return name


# --------------------------------------------------------------------------- the journal


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _apply(out: Path, ops: Iterable[list[str]]) -> None:
    """Every operation of a journal; each one is done at most once whatever ran before."""
    staging = os.fspath(state_dir(out) / STAGING)
    base = os.fspath(out)
    made: set[str] = set()  # folders known to exist
    removed: list[str] = []
    for op in ops:
        if op[0] == "write":
            _, name, relative = op
            source, target = f"{staging}/{name}", f"{base}/{relative}"
            folder = target.rsplit("/", 1)[0]
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            try:
                os.replace(source, target)
            except FileNotFoundError:
                if os.path.lexists(source):
                    raise
                continue  # renamed into place before an interruption
        elif op[0] == "remove":
            relative = op[1]
            try:
                (out / relative).unlink()
            except FileNotFoundError:
                pass
            removed.append(relative)
    for relative in removed:
        _prune(out, (out / relative).parent)


def _prune(out: Path, folder: Path) -> None:
    """Remove folders left empty by removals, up to the output folder."""
    while folder != out and out in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _read_journal(state: Path) -> list[list[str]] | None:
    """The operations of a committed journal (JSON arrays, one per line); None when there is none or it cannot be
    read (it was never committed: the rename is atomic, after a flush)."""
    try:
        data = (state / JOURNAL).read_bytes()
    except OSError:
        return None
    try:
        if data.startswith(b"{"):  # the single-object form: {"ops": [...]}
            ops = orjson.loads(data)["ops"]
        else:
            ops = [orjson.loads(line) for line in data.splitlines() if line.strip()]
        if not isinstance(ops, list) or not all(_valid(op) for op in ops):
            return None
        return ops
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _valid(op: object) -> bool:
    return isinstance(op, list) and all(isinstance(x, str) for x in op) and (
        (len(op) == 3 and op[0] == "write") or (len(op) == 2 and op[0] == "remove"))


def _journal_ops(path: Path) -> Iterator[list[str]]:
    """The operations of the journal this compile just wrote, read as they are applied."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def _clear_staging(state: Path) -> int:
    staging = state / STAGING
    count = 0
    try:
        entries = list(os.scandir(staging))
    except OSError:
        return 0
    for entry in entries:
        try:
            os.unlink(entry.path)
            count += 1
        except OSError:
            pass
    return count


def recover(out: Path) -> str | None:
    """Finish or undo an interrupted compile (under the lock); what was done, in words."""
    state = state_dir(out)
    if not state.is_dir():
        return None
    ops = _read_journal(state)
    said = None
    if ops is not None:
        _apply(out, ops)
        (state / JOURNAL).unlink(missing_ok=True)
        said = f"finished an interrupted compile ({len(ops)} operations)"
    else:
        (state / JOURNAL).unlink(missing_ok=True)  # unreadable: it was never committed (the rename is atomic)
    (state / f"{JOURNAL}.new").unlink(missing_ok=True)
    dropped = _clear_staging(state)
    if dropped and said is None:
        said = f"removed {dropped} files an interrupted compile had staged"
    return said


# --------------------------------------------------------------------------- the transaction


def _keep_ignored(state: Path) -> None:
    """``state``'s ``.gitignore`` says ``*`` (``git add`` of the output never takes the lock, the journal or a
    staged file): written whole beside it and renamed, and written again when a kill left it empty or another
    process changed it."""
    ignore = state / ".gitignore"
    try:
        if ignore.read_bytes() == GITIGNORE.encode():
            return
    except FileNotFoundError:
        pass
    pending = state / f".gitignore.{os.getpid()}"
    try:
        pending.write_bytes(GITIGNORE.encode())
        os.replace(pending, ignore)
    finally:
        pending.unlink(missing_ok=True)


@dataclass
class Transaction:
    """``with Transaction(out) as tx``: stage, then :meth:`commit`; leaving the block without a commit undoes."""

    out: Path
    timeout: float = 60.0
    count: int = 0  # operations recorded in the journal
    recovered: str | None = None
    _log: BinaryIO | None = None
    _fd: int | None = None
    _created: list[Path] = field(default_factory=list)
    _committed: bool = False
    _targets: set[str] = field(default_factory=set)  # the folders the operations write into (relative)

    @property
    def staging(self) -> Path:
        return state_dir(self.out) / STAGING

    def __enter__(self) -> Transaction:
        deadline = time.monotonic() + max(self.timeout, 0.0)
        while True:
            self._prepare()
            try:
                self._fd = acquire(self.out, max(deadline - time.monotonic(), 0.0), stated=self.timeout)
                break
            except FileNotFoundError:  # a compile that created the folder and wrote nothing removed it again
                if time.monotonic() >= deadline:
                    raise OutputError(self.out, "the output folder keeps disappearing: nothing written") from None
            except OSError as exc:
                self._leave()
                raise OutputError(state_dir(self.out) / LOCK, f"cannot lock the output folder: {describe(exc)}; "
                                  "nothing written") from None
            except BaseException:
                self._leave()
                raise
        try:
            self.recovered = recover(self.out)
            self.staging.mkdir(exist_ok=True)
        except OSError as exc:
            self._leave()
            raise OutputError(self.out, f"cannot prepare the output folder: {describe(exc)}; nothing written") from None
        except BaseException:
            self._leave()
            raise
        return self

    def _prepare(self) -> None:
        blocking = next((p for p in [self.out, *self.out.parents] if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise OutputError(blocking, "is a file, not a folder: nothing written")
        missing = [p for p in reversed([self.out, *self.out.parents]) if not p.exists()]
        state = state_dir(self.out)
        try:
            for folder in missing + [state]:
                try:
                    folder.mkdir()
                    self._created.append(folder)
                except FileExistsError:
                    pass  # another compile made it
            _keep_ignored(state)
        except OSError as exc:
            self._undo_folders()
            where = next((p for p in [state, *missing] if not p.exists()), self.out)
            raise OutputError(where, f"cannot create it: {describe(exc)}; nothing written") from None

    def stage(self, relative: str, name: str) -> None:
        """A file already written into :attr:`staging` as ``name`` goes to ``relative`` on commit."""
        self._record(["write", name, relative])

    def write(self, relative: str, data: bytes, mode: int = 0o644) -> None:
        try:
            name = write_staged(self.staging, data, mode)
        except OSError as exc:
            raise OutputError(self.out / relative, f"cannot write it: {describe(exc)}; nothing written") from None
        self.stage(relative, name)

    def remove(self, relative: str) -> None:
        self._record(["remove", relative])

    def _record(self, op: list[str]) -> None:
        """One operation, appended to the journal being written (not the journal until the commit renames it)."""
        try:
            if self._log is None:
                self._log = (state_dir(self.out) / f"{JOURNAL}.new").open("wb")
            self._log.write(orjson.dumps(op) + b"\n")
            self._targets.add(op[-1].rpartition("/")[0])
        except OSError as exc:
            raise OutputError(self.out, f"cannot write the compile's journal: {describe(exc)}; "
                              "nothing written") from None
        self.count += 1

    def _close_log(self) -> None:
        """Close the journal being written; a failure here is not one to report (a commit has flushed and synced it
        before, and a compile that fails throws it away)."""
        if self._log is not None:
            log, self._log = self._log, None
            try:
                log.close()
            except OSError:
                pass

    def commit(self) -> None:
        if not self.count:
            self._close_log()
            self._committed = True
            return
        state = state_dir(self.out)
        pending = state / f"{JOURNAL}.new"
        self._can_move_into_place()
        try:
            assert self._log is not None
            self._log.flush()
            os.fsync(self._log.fileno())
            self._close_log()
            os.replace(pending, state / JOURNAL)
            _sync_dir(state)
        except OSError as exc:
            self._close_log()
            pending.unlink(missing_ok=True)
            raise OutputError(
                self.out, f"cannot write the compile's journal: {describe(exc)}; nothing written"
            ) from None
        self._committed = True
        try:
            _apply(self.out, _journal_ops(state / JOURNAL))
            (state / JOURNAL).unlink()
        except OSError as exc:
            raise OutputError(self.out / self._failing(exc), f"{describe(exc)} while the compile was moving its files "
                              "into place: run `rollout compile` again to finish it", changed=True) from None

    def _can_move_into_place(self) -> None:
        """Before the journal makes the compile the folder's future: every folder the operations change (or the
        nearest one that exists, where folders will be made) can be written, and lies on the staging area's file
        system (a rename cannot cross file systems). A read-only or mounted rollout folder is then a located
        error with nothing written, instead of a tree half moved into place."""
        staging_device = os.stat(self.staging).st_dev
        seen: set[str] = set()
        exists: dict[str, bool] = {}  # each folder looked up once: rollouts share their parents
        base = os.fspath(self.out)
        for relative in sorted(self._targets):
            key = f"{base}/{relative}" if relative else base
            while key != base:
                found = exists.get(key)
                if found is None:
                    found = exists[key] = os.path.lexists(key)
                if found:
                    break
                key = key.rsplit("/", 1)[0]
            folder = Path(key)
            if key in seen:
                continue
            seen.add(key)
            try:
                device = os.stat(folder).st_dev
            except OSError as exc:
                raise OutputError(folder, f"cannot write into it: {describe(exc)}; nothing written") from None
            if not os.access(folder, os.W_OK | os.X_OK):
                raise OutputError(folder, "cannot write into it: permission denied, or a read-only file system; "
                                  "nothing written")
            if device != staging_device:
                raise OutputError(folder, f"is on another file system than {STATE}/ (a mount inside the output "
                                  "folder): files cannot be moved into it at once; nothing written")

    def _failing(self, exc: OSError) -> str:
        name = exc.filename if isinstance(exc.filename, str) else ""
        try:
            return str(Path(name).relative_to(self.out)) if name else "."
        except ValueError:
            return "."

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        self._close_log()
        if not self._committed:
            (state_dir(self.out) / f"{JOURNAL}.new").unlink(missing_ok=True)
            _clear_staging(state_dir(self.out))
        self._leave()

    def _leave(self) -> None:
        if not self._committed:
            self._undo_folders()  # while the lock is held: a waiter then finds the lock file gone and retries
        release(self._fd)
        self._fd = None

    def _undo_folders(self) -> None:
        """Folders this compile created, removed again when it wrote nothing."""
        state = state_dir(self.out)
        if state in self._created:
            for leftover in (state / STAGING, state / ".gitignore", state / LOCK):
                try:
                    leftover.rmdir() if leftover.is_dir() else leftover.unlink()
                except OSError:
                    pass
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                pass
        self._created = []
