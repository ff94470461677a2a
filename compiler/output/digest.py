"""Digests: of the compiler itself, of each spec's inputs, of files.

A rollout's outputs are a pure function of its spec's bytes, the path the
generated files name it by, and the compiler (its version, sources and
templates).  The digest of those inputs is recorded in the rollout's manifest:
a compile or a check that finds the same digest, and the files the manifest
lists unchanged, need not render anything.

The digest reads the same on every machine that runs the same release, whether
it runs from a checkout or from an installed wheel: it is committed, so a
machine-dependent digest would make `rollout check` fail on one machine for a
tree another compiled.  The versions of the libraries that write the bytes
(PyYAML, ruamel.yaml, jinja2, orjson) are bounded by the package's
requirements and their output is held by the golden tests; they are not part of
it.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import compiler

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
    """The compiler's version, sources and templates, named the same in a checkout and in a wheel."""
    from compiler import templating

    package = Path(compiler.__file__).resolve().parent
    named = [(path.relative_to(package).as_posix(), path) for path in package.rglob("*.py")
             if "__pycache__" not in path.parts]
    named += [(f"templates/{path.name}", path) for d in templating.template_dirs() for path in Path(d).glob("*.j2")]
    h = hashlib.sha256(f"rollout {compiler.__version__}\0".encode())
    for name, path in sorted(named):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def inputs_digest(spec_path: str, spec_bytes: bytes) -> str:
    """What one spec's outputs depend on."""
    h = hashlib.sha256()
    h.update(compiler_digest().encode() + b"\0" + spec_path.encode() + b"\0")
    h.update(spec_bytes)
    return h.hexdigest()
