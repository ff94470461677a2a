"""Writing an output folder as one transaction: the old tree or the new one, whatever happens.

A compile takes the folder's lock (``.rollout/lock``, an advisory ``flock``
held for the whole compile and released by the kernel when the process ends,
so a killed compile never blocks the next), waits up to a bound for another
compile to finish, and first completes any compile that was interrupted.

New and changed files are written into ``.rollout/staging/``; nothing in the
tree changes while they are.  Then the journal (``.rollout/journal``: every
rename into place and every removal) is written to a temporary file, flushed
and renamed: that rename is the commit.  The operations are applied, the
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
from dataclasses import dataclass, field
from pathlib import Path

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


def acquire(out: Path, timeout: float, shared: bool = False) -> int | None:
    """The lock's file descriptor once the lock is held; ``OutputError`` after ``timeout`` seconds.

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
                        f"{timeout:g}s this compile waits (--lock-timeout): nothing written",
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
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- staging


def write_staged(staging: Path, data: bytes, mode: int) -> str:
    """``data`` in a new file of the staging folder (any process may call this); its name there."""
    fd = -1
    for attempt in range(100):
        name = f"{os.getpid()}-{time.monotonic_ns()}-{attempt}"
        try:
            fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
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
        os.fchmod(fd, mode)  # the umask does not decide a generated file's mode
    except BaseException:
        os.close(fd)
        (staging / name).unlink(missing_ok=True)
        raise
    os.close(fd)
    return name


# --------------------------------------------------------------------------- the journal


def _write_journal(state: Path, ops: list[list[str]]) -> None:
    tmp = state / f"{JOURNAL}.new"
    data = orjson.dumps({"ops": ops})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, state / JOURNAL)
    _sync_dir(state)


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


def _apply(out: Path, ops: list[list[str]]) -> None:
    """Every operation of a journal; each one is done at most once whatever ran before."""
    staging = state_dir(out) / STAGING
    removed: list[str] = []
    for op in ops:
        if op[0] == "write":
            _, name, relative = op
            source = staging / name
            if not source.exists():
                continue  # renamed into place before an interruption
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
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
    try:
        data = orjson.loads((state / JOURNAL).read_bytes())
        ops = data["ops"]
        if not isinstance(ops, list):
            return None
        return [[str(x) for x in op] for op in ops]
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None


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


@dataclass
class Transaction:
    """``with Transaction(out) as tx``: stage, then :meth:`commit`; leaving the block without a commit undoes."""

    out: Path
    timeout: float = 60.0
    ops: list[list[str]] = field(default_factory=list)
    recovered: str | None = None
    _fd: int | None = None
    _created: list[Path] = field(default_factory=list)
    _committed: bool = False

    @property
    def staging(self) -> Path:
        return state_dir(self.out) / STAGING

    def __enter__(self) -> Transaction:
        deadline = time.monotonic() + max(self.timeout, 0.0)
        while True:
            self._prepare()
            try:
                self._fd = acquire(self.out, max(deadline - time.monotonic(), 0.0))
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
            try:
                fd = os.open(state / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            else:
                try:
                    os.write(fd, GITIGNORE.encode())
                finally:
                    os.close(fd)
        except OSError as exc:
            self._undo_folders()
            where = next((p for p in [state, *missing] if not p.exists()), self.out)
            raise OutputError(where, f"cannot create it: {describe(exc)}; nothing written") from None

    def stage(self, relative: str, name: str) -> None:
        """A file already written into :attr:`staging` as ``name`` goes to ``relative`` on commit."""
        self.ops.append(["write", name, relative])

    def write(self, relative: str, data: bytes, mode: int = 0o644) -> None:
        try:
            name = write_staged(self.staging, data, mode)
        except OSError as exc:
            raise OutputError(self.out / relative, f"cannot write it: {describe(exc)}; nothing written") from None
        self.stage(relative, name)

    def remove(self, relative: str) -> None:
        self.ops.append(["remove", relative])

    def commit(self) -> None:
        if not self.ops:
            self._committed = True
            return
        state = state_dir(self.out)
        try:
            _write_journal(state, self.ops)
        except OSError as exc:
            (state / f"{JOURNAL}.new").unlink(missing_ok=True)
            raise OutputError(
                self.out, f"cannot write the compile's journal: {describe(exc)}; nothing written"
            ) from None
        self._committed = True
        try:
            _apply(self.out, self.ops)
            (state / JOURNAL).unlink()
        except OSError as exc:
            raise OutputError(self.out / self._failing(exc), f"{describe(exc)} while the compile was moving its files "
                              "into place: run `rollout compile` again to finish it", changed=True) from None

    def _failing(self, exc: OSError) -> str:
        name = exc.filename if isinstance(exc.filename, str) else ""
        try:
            return str(Path(name).relative_to(self.out)) if name else "."
        except ValueError:
            return "."

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        if not self._committed:
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
