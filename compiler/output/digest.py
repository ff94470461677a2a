"""Digests: of the compiler itself, of each spec's inputs, of files.

A rollout's outputs are a pure function of its spec's bytes, the path the
generated files name it by, and the compiler (its sources, templates and the
versions of the libraries that write the bytes).  The digest of those inputs is
recorded in the rollout's manifest: a compile or a check that finds the same
digest, and the files the manifest lists unchanged, need not render anything.
"""

from __future__ import annotations

import hashlib
import re
import sys
from functools import cache
from pathlib import Path

import compiler

#: Libraries whose version can change the bytes written (distribution names, normalised).
LIBRARIES = ("pydantic", "pydantic_core", "ruamel_yaml", "pyyaml", "jinja2", "markupsafe", "orjson", "promql_parser")
_DIST_INFO = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)\.dist-info$")
CHUNK = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@cache
def compiler_digest() -> str:
    """The compiler's sources and templates and the versions of the libraries that shape its output."""
    import yaml

    h = hashlib.sha256()
    package = Path(compiler.__file__).resolve().parent
    from compiler import templating

    sources = sorted(package.rglob("*.py")) + sorted(
        p for d in templating.template_dirs() for p in Path(d).glob("*.j2")
    )
    for path in sources:
        name = path.relative_to(package.parent) if path.is_relative_to(package.parent) else Path(path.name)
        h.update(name.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    versions = installed()
    for library in LIBRARIES:
        h.update(f"{library}={versions.get(library, '-')}\0".encode())
    h.update(f"libyaml={getattr(yaml, '__with_libyaml__', False)}".encode())
    return h.hexdigest()


def installed() -> dict[str, str]:
    """Versions of the installed distributions, from their ``.dist-info`` folders (the first on sys.path wins,
    as imports do); faster than importlib.metadata for a command that must start quickly."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = Path(entry or ".").iterdir()
            for path in names:
                match = _DIST_INFO.match(path.name)
                if match:
                    key = re.sub(r"[-_.]+", "_", match["name"]).lower()
                    found.setdefault(key, match["version"])
        except OSError:
            continue
    return found


def inputs_digest(spec_path: str, spec_bytes: bytes) -> str:
    """What one spec's outputs depend on."""
    h = hashlib.sha256()
    h.update(compiler_digest().encode() + b"\0" + spec_path.encode() + b"\0")
    h.update(spec_bytes)
    return h.hexdigest()
