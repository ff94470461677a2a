"""A cache of file hashes outside the repository, so that an unchanged fleet is checked without reading it.

It remembers, per absolute path, the sha256 of a file together with its size,
modification and change times and inode: a file whose ``stat`` still says the
same is not read again.  Per rollout folder it remembers one stamp of every
file's name, hash and ``stat`` as last found matching the folder's manifest,
so that an unchanged folder is checked by its files' ``stat`` alone, without
loading a row per file.  The cache is an optimisation only: it lives in the XDG
cache folder (``$XDG_CACHE_HOME/rollout``, else ``~/.cache/rollout``; set
``ROLLOUT_CACHE_DIR`` to move it, or to an empty string to switch it off),
and a missing, locked or corrupted cache changes nothing but time.  The same folder keeps
the compiled templates (:mod:`compiler.templating`, jinja2's bytecode cache), so it must be
writable only by its user.
"""

from __future__ import annotations

import os
import sqlite3
import zlib
from pathlib import Path
from typing import Any

from compiler.output.digest import file_sha256, sha256

SCHEMA = 2


Stat = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def _checksum(*fields: object) -> str:
    """A checksum of a row's fields: a damaged row is a miss, never a wrong answer."""
    return format(zlib.crc32("\0".join(map(str, fields)).encode()), "08x")


def _check(path: str, stat: Stat, sha: str) -> str:
    return _checksum(path, *stat, sha)


def folder() -> Path | None:
    configured = os.environ.get("ROLLOUT_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rollout"


def stat_of(path: Path | str) -> Stat | None:
    try:
        s = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino)


def _under(prefix: str) -> tuple[str, str]:
    """The bounds of the keys that start with ``prefix`` (which ends with a separator), for a range query."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _stamp(folder: str, recorded: dict[str, str], skip: str) -> str | None:
    """One digest of the name, recorded hash and ``stat`` of every file of a rollout folder (None when one is
    missing): what a folder found matching its manifest is remembered by."""
    lines = []
    for name, sha in recorded.items():
        if name == skip:
            continue
        stat = stat_of(folder + name)
        if stat is None:
            return None
        lines.append(_stamp_line(name, sha, stat))
    return _stamp_of(lines)


def _stamp_line(name: str, sha: str, stat: Stat) -> str:
    return f"{name}\0{sha}\0{stat[0]}\0{stat[1]}\0{stat[2]}\0{stat[3]}\n"


def _stamp_of(lines: list[str]) -> str:
    return sha256("".join(lines).encode())


#: Rows written to the database at a time.
BATCH = 4096


class Cache:
    """File hashes by path and stat; every failure of the database turns the cache off for the process."""

    def __init__(self, location: Path | None = None):
        self.db: sqlite3.Connection | None = None
        self.loaded: dict[str, tuple[tuple[int, int, int, int], str, str]] = {}
        self.prefixes: set[str] = set()
        self.pending: list[tuple[str, int, int, int, int, str, str]] = []
        self.pending_stamps: list[tuple[str, str, str]] = []
        self.stamps: dict[str, str] = {}  # rollout folder -> stamp of its files as last found matching
        self.folders: set[str] = set()  # output folders whose stamps are loaded
        where = location if location is not None else folder()
        if where is None:
            return
        try:
            where.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(where / f"hashes-v{SCHEMA}.sqlite3", timeout=2.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, "
                            "ctime INTEGER, ino INTEGER, sha256 TEXT, checksum TEXT)")
            self.db.execute("CREATE TABLE IF NOT EXISTS outputs (folder TEXT PRIMARY KEY, recorded TEXT, inputs TEXT, "
                            "files TEXT, checksum TEXT)")
            self.db.execute("CREATE TABLE IF NOT EXISTS folders (folder TEXT PRIMARY KEY, stamp TEXT, checksum TEXT)")
        except (OSError, sqlite3.Error):
            self._off()

    def _off(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
        self.db = None
        self.pending, self.pending_stamps = [], []

    def preload(self, folder: Path) -> None:
        """Read the stamps of every rollout folder under ``folder`` at once (one query instead of one per
        folder)."""
        prefix = str(folder.resolve()) + os.sep
        if self.db is None or prefix in self.folders:
            return
        self.folders.add(prefix)
        try:
            rows = self.db.execute("SELECT folder, stamp, checksum FROM folders WHERE folder >= ? AND folder < ?",
                                   _under(prefix))
            for where, stamp, checksum in rows:
                if checksum == _checksum(where, stamp):
                    self.stamps[where] = stamp
        except sqlite3.Error:
            self._off()

    def _files_under(self, prefix: str) -> None:
        """Read every file's row under ``prefix`` at once."""
        if self.db is None or prefix in self.prefixes:
            return
        self.prefixes.add(prefix)
        try:
            rows = self.db.execute("SELECT path, size, mtime, ctime, ino, sha256, checksum FROM files "
                                   "WHERE path >= ? AND path < ?", _under(prefix))
            for path, size, mtime, ctime, ino, sha, checksum in rows:
                self.loaded[path] = ((size, mtime, ctime, ino), sha, checksum)
        except sqlite3.Error:
            self._off()

    @property
    def enabled(self) -> bool:
        return self.db is not None

    def remember(self, path: Path | str, stat: Stat, sha: str) -> None:
        if self.db is not None:
            self.pending.append((str(path), *stat, sha, _check(str(path), stat, sha)))
            if len(self.pending) >= BATCH:  # a fleet's hashes go to the database in batches, not all in memory
                self.flush()

    def matches(self, folder: str, recorded: dict[str, str], skip: str = "") -> bool:
        """Every file ``folder + name`` of ``recorded`` (but ``skip``) has the recorded sha256, read again only
        when its ``stat`` differs from the one its hash was remembered with: what an unchanged fleet's check
        spends its time in.

        ``folder`` ends with a separator. A folder whose files' names, hashes and ``stat`` make the stamp last
        remembered for it matches without a look at its files' rows; otherwise each file is looked up (or
        read), and a folder found matching gets its stamp remembered.
        """
        known = self.stamps.get(folder) if self.db is not None else None
        if known is not None and _stamp(folder, recorded, skip) == known:
            return True
        self._files_under(folder)
        loaded = self.loaded if self.db is not None else {}
        lines = []
        for name, sha in recorded.items():
            if name == skip:
                continue
            path = folder + name
            stat = stat_of(path)
            if stat is None:
                return False
            lines.append(_stamp_line(name, sha, stat))
            found = loaded.get(path)
            if found is not None and found[0] == stat and found[1] == sha:
                continue  # no checksum needed: a damaged row cannot match both the file's stat and this hash
            if self._read(path, stat) != sha:
                return False
        stamp = _stamp_of(lines)
        if self.db is not None and _stamp(folder, recorded, skip) == stamp:  # unchanged while it was checked
            self.stamps[folder] = stamp
            self.pending_stamps.append((folder, stamp, _checksum(folder, stamp)))
        return True

    def _read(self, path: Path | str, stat: Stat) -> str | None:
        """The sha256 of a file read now, remembered with ``stat`` when the file did not change meanwhile."""
        try:
            sha = file_sha256(Path(path))
        except OSError:
            return None
        if stat_of(path) == stat:  # not changed while it was read
            self.remember(path, stat, sha)
        return sha

    # A rollout whose manifest was kept when its spec changed in a way that does not change it (another
    # environment promoted) still records the spec's earlier inputs digest, so that its folder stays byte for
    # byte as it was. That the new inputs render the same files is remembered here, so that it is not
    # rendered again by every later compile and check; without the cache it is, once per command.

    def same_output(self, folder: str, recorded: str, inputs: str, files: str) -> bool:
        """Inputs ``inputs`` were found to render what the manifest in ``folder`` (compiled from ``recorded``,
        files fingerprinted ``files``) lists."""
        row = self._row("SELECT recorded, inputs, files, checksum FROM outputs WHERE folder = ?", folder)
        return row is not None and tuple(row) == (recorded, inputs, files, _checksum(folder, recorded, inputs, files))

    def _row(self, query: str, key: str) -> tuple[Any, ...] | None:
        """The row a query by one key finds; None when there is none, or no working database."""
        if self.db is None:
            return None
        try:
            row: tuple[Any, ...] | None = self.db.execute(query, (key,)).fetchone()
        except sqlite3.Error:
            self._off()
            return None
        return row

    def remember_same_output(self, folder: str, recorded: str, inputs: str, files: str) -> None:
        if self.db is None:
            return
        try:
            self.db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?)",
                            (folder, recorded, inputs, files, _checksum(folder, recorded, inputs, files)))
        except sqlite3.Error:
            self._off()

    def flush(self) -> None:
        if self.db is None or not (self.pending or self.pending_stamps):
            self.pending, self.pending_stamps = [], []
            return
        try:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", self.pending)
            self.db.executemany("INSERT OR REPLACE INTO folders VALUES (?, ?, ?)", self.pending_stamps)
            self.db.execute("COMMIT")
        except sqlite3.Error:
            self._off()
        self.pending, self.pending_stamps = [], []

    def close(self) -> None:
        self.flush()
        self._off()
