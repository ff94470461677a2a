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

import errno
import hashlib
import os
import stat
from functools import cache
from pathlib import Path
from typing import BinaryIO

import compiler

CHUNK = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_regular(path: str | Path, follow: bool = False) -> BinaryIO | None:
    """A regular file opened for reading, without waiting on a FIFO or a device, and (unless ``follow``) not
    through a symbolic link: None when ``path`` is nothing, or anything but such a file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR, errno.ENXIO):
            return None  # ENXIO: a socket, or a FIFO nobody writes to
        raise
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        return None
    return handle


def read_regular(path: str | Path) -> bytes | None:
    """The bytes of the regular file at ``path``, as :func:`open_regular` finds it."""
    handle = open_regular(path)
    if handle is None:
        return None
    with handle:
        return handle.read()


def file_sha256(path: str | Path) -> str:
    handle = open_regular(path)
    if handle is None:
        raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
    h = hashlib.sha256()
    with handle:
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
