"""The bookkeeping of an output folder: one ``.rollout-manifest`` per rollout folder, and one in ``_fleet/``.

A rollout's manifest says what rollout wrote in that folder (each file's
sha256), from which spec (its path and sha256: the spec's hash is written here
and nowhere else), the digest of everything the compile read
(:mod:`compiler.output.digest`), every folder the same spec compiled to, and
what the fleet-wide files need to know about the rollout.  Nothing lists every
rollout: two pull requests that change different rollouts change different
manifests, and merge.

Manifests are JSON (sorted keys, one value per line), read and written here only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from compiler.ir.fleet import FleetEntry
from compiler.output.digest import read_regular

NAME = ".rollout-manifest"
FLEET_DIR = "_fleet"
VERSION = 1
NOTE = "Written by rollout: the files it generated in this folder and what they were compiled from. Do not edit."
MAX_DEPTH = 3  # [environment/]namespace/name


@dataclass(frozen=True)
class Ledger:
    out: str  # the folder, relative to the output folder
    files: dict[str, str]  # path relative to the folder -> sha256
    spec: str | None = None  # as generated files name it; None for _fleet
    spec_sha256: str | None = None
    inputs: str | None = None  # digest of what the compile read
    siblings: tuple[str, ...] = ()  # every folder the spec compiled to
    fleet: FleetEntry | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    compiler: str | None = None  # digest of the compiler that wrote the folder

    def text(self) -> str:
        data: dict[str, Any] = {"_": NOTE, "version": VERSION, "files": dict(sorted(self.files.items()))}
        if self.spec is not None:
            data.update(spec=self.spec, spec_sha256=self.spec_sha256, inputs=self.inputs, compiler=self.compiler,
                        siblings=sorted(self.siblings), fleet=self.fleet.to_json() if self.fleet else None)
        elif self.siblings:  # _fleet/: the rollouts its files were compiled from
            data.update(rollouts=sorted(self.siblings))
        data.update(self.extra)
        return orjson.dumps(
            data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
        ).decode()


def parse(out: str, data: bytes) -> Ledger | None:
    """A manifest as :meth:`Ledger.text` wrote it, or None for anything else (a broken file is no bookkeeping)."""
    try:
        raw = orjson.loads(data)
        files = raw["files"]
        if raw.get("version") != VERSION or not isinstance(files, dict):
            return None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            return None
        if _unsafe("\n".join(files)) or "" in files:
            return None
        fleet = FleetEntry.from_json(raw["fleet"]) if raw.get("fleet") else None
        spec = raw.get("spec")
        siblings = raw.get("siblings") if spec is not None else raw.get("rollouts")
        return Ledger(out, dict(files), spec if isinstance(spec, str) else None, raw.get("spec_sha256"),
                      raw.get("inputs"), tuple(str(s) for s in siblings or ()), fleet, compiler=raw.get("compiler"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _unsafe(paths: str) -> bool:
    """A path that is absolute, empty in a part, or climbs (or holds a NUL or a carriage return), among the
    newline-joined paths of a manifest."""
    if "\x00" in paths or "\r" in paths or "//" in paths:
        return True
    parts = f"\n{paths}\n".replace("/", "\n")  # every part of every path between two newlines
    return "\n\n" in parts or "\n.\n" in parts or "\n..\n" in parts


def safe(path: str) -> bool:
    """A relative path that stays inside its folder (see :func:`_unsafe`), on one line."""
    return bool(path) and "\n" not in path and not _unsafe(path)


def read(root: Path, out: str) -> Ledger | None:
    data = _bytes(f"{root}/{out}/{NAME}")
    return parse(out, data) if data is not None else None


def _bytes(path: str) -> bytes | None:
    """A manifest's bytes; None when there is no regular file, or one that cannot be read (no bookkeeping)."""
    try:
        return read_regular(path)
    except OSError:
        return None


def scan(root: Path) -> dict[str, Ledger]:
    """Every manifest under ``root``: ``_fleet/`` and rollout folders at most three levels down, without
    descending into a folder that holds one, or into another output folder inside this one (its own compiles'
    bookkeeping, which is not this folder's to judge or remove)."""
    found: dict[str, Ledger] = {}
    todo: list[tuple[str, int]] = [("", 0)]
    while todo:
        prefix, depth = todo.pop()
        where = f"{root}/{prefix}" if prefix else str(root)
        if prefix:
            manifest = f"{where}/{NAME}"
            data = _bytes(manifest)
            if data is not None or os.path.lexists(manifest):  # a link or a folder: no bookkeeping, not entered
                ledger = parse(prefix, data) if data is not None else None
                if ledger is not None:
                    found[prefix] = ledger
                continue
            if another_output(where):
                continue
        if depth >= MAX_DEPTH:
            continue
        try:
            with os.scandir(where) as entries:
                folders = [e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        todo.extend((f"{prefix}/{name}" if prefix else name, depth + 1) for name in folders)
    return dict(sorted(found.items()))


#: What every compile leaves at the top of its output folder: its lock, staging and journal folder.
STATE_DIR = ".rollout"


def another_output(folder: str) -> bool:
    """``folder`` is the top of an output folder (one a compile wrote into, with its state or its fleet files)."""
    return os.path.isdir(f"{folder}/{STATE_DIR}") or os.path.lexists(f"{folder}/{FLEET_DIR}/{NAME}")
