"""Where specs are and how they are named: the little every command needs before it loads anything."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from compiler.diagnostics import Diagnostic

SPEC_SUFFIXES = (".yaml", ".yml")


@lru_cache(maxsize=16)
def _resolved(folder: str) -> Path:
    return Path(folder).resolve()


def display_path(path: Path, real: Path | None = None) -> str:
    """A path as the user sees it: relative to the working directory when inside it, POSIX-style (``real``: the
    path resolved already)."""
    try:
        return (real or path.resolve()).relative_to(_resolved(os.getcwd())).as_posix()
    except (ValueError, OSError, RuntimeError):  # outside the working directory; a symbolic link loop
        return path.as_posix()


@dataclass(frozen=True)
class SpecPath:
    path: Path
    named: bool  # named on the command line, rather than found in a folder
    real: Path | None = field(default=None, compare=False)  # resolved once, when collected

    @property
    def shown(self) -> str:
        return display_path(self.path, self.real)


def unprintable(text: str) -> str | None:
    """The first character of a file name that cannot appear in every output language (a control or format
    character, a line separator, a byte that is not UTF-8), written as an escape; None when there is none."""
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF or char in "\u2028\u2029" \
                or unicodedata.category(char) == "Cf":
            return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return None


def shown_safely(path: Path) -> str:
    """A path for a message, its unprintable characters escaped."""
    return "".join(c if unprintable(c) is None else (unprintable(c) or "") for c in path.as_posix())


def _refused(path: Path) -> Diagnostic | None:
    bad = unprintable(path.as_posix())
    if bad is None:
        return None
    return Diagnostic(shown_safely(path), 1, 1, "error", f"the file name has a character ({bad}) that generated "
                      "headers, annotations and kustomizations cannot carry: rename the file", "io")


def collect(paths: Iterable[str | Path]) -> tuple[list[SpecPath], list[Diagnostic]]:
    """Spec files named by ``paths`` (folders are searched recursively for *.yaml/*.yml), sorted; a file whose
    name no output can carry is a problem, not a spec."""
    found: dict[Path, SpecPath] = {}
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for p, real in _under(path):
                if real is None:  # a link that loops, a file that vanished: located, and the others still read
                    problems.append(Diagnostic(shown_safely(p), 1, 1, "error", "cannot read: not a regular file (a "
                                               "symbolic link that loops or leads nowhere readable)", "io"))
                    continue
                refused = _refused(p)
                if refused is not None:
                    problems.append(refused)
                    continue
                found.setdefault(real, SpecPath(p, False, real))
        elif path.is_file():
            refused = _refused(path)
            if refused is not None:
                problems.append(refused)
                continue
            real = path.resolve()  # is_file: the path resolves, without a loop
            found[real] = SpecPath(path, True, real)
        else:
            why = "not a regular file or folder" if path.exists() or path.is_symlink() else "no such file or directory"
            problems.append(Diagnostic(shown_safely(path), 1, 1, "error", why, "io"))
    return sorted(found.values(), key=lambda s: s.shown), problems


def _under(root: Path) -> Iterator[tuple[Path, Path | None]]:
    """(path, resolved path) of every spec file in ``root`` and its folders, by name; hidden files and folders,
    and folders reached through a symbolic link, are left out. Only a linked file is resolved on its own."""
    todo = [(root, root.resolve())]
    while todo:
        folder, real = todo.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        below = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                below.append((folder / entry.name, real / entry.name))
            elif entry.name.endswith(SPEC_SUFFIXES):
                path = folder / entry.name
                try:
                    if entry.is_file():
                        yield path, path.resolve(strict=True) if entry.is_symlink() else real / entry.name
                except (OSError, RuntimeError):  # ELOOP; RuntimeError: pathlib's own loop check
                    yield path, None
        todo.extend(reversed(below))


def source_path(path: Path, root: Path | None, real: Path | None = None) -> str:
    """How generated files name their spec: relative to ``root`` (the output folder's parent), with ``..`` for a
    spec outside it that shares a folder with it (``../specs/web.yaml`` beside ``deploy/generated``); a spec
    with nothing in common with the output but the file system's root, as the user named it.

    Diagnostics name files relative to the working folder, for the user at the terminal; generated
    files must not depend on where the compile ran, or `rollout check` would see drift, and a compile
    of some specs would take the others' rollouts for rollouts whose spec is gone.
    """
    if root is not None:
        try:
            target, base = real or path.resolve(), _resolved(str(root))
            if target.is_relative_to(base) or len(Path(os.path.commonpath([target, base])).parts) > 1:
                return Path(os.path.relpath(target, base)).as_posix()
        except (ValueError, OSError, RuntimeError):  # another drive; a symbolic link loop
            pass
    return display_path(path, real)


@dataclass(frozen=True)
class Claim:
    """A rollout folder a spec compiles to, and where the spec names it."""

    out: str
    path: str  # the spec, as diagnostics show it
    name_at: tuple[int, int] = (1, 1)
    namespace_at: tuple[int, int] = (1, 1)


def duplicates(claims: Sequence[Claim]) -> list[Diagnostic]:
    """Rollouts that would share a folder, or whose folder lies inside another rollout's."""
    first: dict[str, Claim] = {}
    out = []
    for claim in claims:
        if claim.out in first:
            other = first[claim.out]
            out.append(Diagnostic(claim.path, *claim.name_at, "error",
                                  f"rollout {claim.out} is also defined in {other.path}: each namespace/name (and "
                                  "environment) must be unique", "fleet"))
        else:
            first[claim.out] = claim
    for key, claim in sorted(first.items()):
        parts = key.split("/")
        prefixes = ("/".join(parts[:n]) for n in range(1, len(parts)))
        outer = next((first[p] for p in prefixes if p in first), None)
        if outer is not None:
            out.append(Diagnostic(claim.path, *claim.namespace_at, "error",
                                  f"the folder of rollout {key} lies inside the folder of rollout {outer.out} "
                                  f"({outer.path}): give the environment or namespace another name", "fleet"))
    return out


def controller_clashes(owners: Iterable[tuple[str, str, Claim | None]]) -> list[Diagnostic]:
    """An error at each rollout whose Argo CD Application / Flux Kustomization name another rollout's shares:
    ``owners`` are (that name, the rollout's folder, where its spec names it, None for a rollout not read now)."""
    by_name: dict[str, list[tuple[str, Claim | None]]] = {}
    for name, out, claim in owners:
        by_name.setdefault(name, []).append((out, claim))
    problems = []
    for name, clashing in sorted(by_name.items()):
        if len(clashing) < 2:
            continue
        outs = ", ".join(sorted(out for out, _ in clashing))
        problems += [Diagnostic(claim.path, *claim.name_at, "error", f"rollouts {outs} would get the same Argo CD "
                                f"Application / Flux Kustomization name '{name}' (environment, namespace and name "
                                "joined by '-'): rename one", "fleet")
                     for _, claim in sorted(clashing, key=lambda c: c[0]) if claim is not None]
    return problems
