"""The native build: the modules that compute the outputs, compiled by mypyc into ``.native/`` of a checkout.

The Python sources stay what the compiler is. A build is used only when it was made from exactly the
sources beside it (their digest is in its stamp) for this interpreter; otherwise, or with
``ROLLOUT_NATIVE=0``, the sources run as they are. Both write the same bytes (``tests/test_native.py``
compiles the examples both ways). ``make install`` builds it where a C compiler is
(``tools/build_native.py``); a wheel carries the sources only.

The build lives outside the package, so the compiler digest (:func:`compiler.output.digest.compiler_digest`)
is the same with or without it, and a source edited after a build is run as edited, never as built.
"""

from __future__ import annotations

import copyreg
import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

#: Compiled, as one group: pure functions over plain data (no pydantic model, no file I/O, nothing a test
#: replaces by monkeypatching, nothing that finds files next to its ``__file__``).
MODULES: tuple[str, ...] = (
    "compiler.gates.algebra",
    "compiler.gates.alerts",
    "compiler.gates.conventions",
    "compiler.gates.fusion",
    "compiler.gates.presets",
    "compiler.gates.simulator",
    "compiler.gates.statistics",
    "compiler.ir.fleet",
    "compiler.ir.plan",
    "compiler.ir.planner",
    "compiler.ir.shares",
    "compiler.output.cache",
    "compiler.output.digest",
    "compiler.pipeline",
    "compiler.serialize",
    "compiler.sources",
    "compiler.spec.environments",
    "compiler.spec.fastload",
    "compiler.spec.names",
    "compiler.spec.routers",
    "compiler.spec.rules",
    "compiler.spec.secrets",
    "compiler.spec.units",
    "compiler.targets.base",
    "compiler.targets.flagd",
    "compiler.targets.gitops",
    "compiler.targets.kube",
    "compiler.targets.kustomize",
    "compiler.targets.observability.alertmanager",
    "compiler.targets.observability.grafana",
    "compiler.targets.observability.prometheus",
    "compiler.targets.observability.promtool",
    "compiler.targets.observability.scrape",
    "compiler.targets.plan_md",
    "compiler.targets.rollback",
    "compiler.targets.routers.base",
    "compiler.targets.routers.escaping",
    "compiler.targets.routers.gateway_api",
    "compiler.targets.routers.haproxy",
    "compiler.targets.routers.ingress_nginx",
    "compiler.targets.routers.istio",
    "compiler.targets.routers.kube_service",
    "compiler.targets.routers.nginx",
)
GROUP = "compiler_native"  # the shared library's name: {GROUP}__mypyc
ROOT = Path(__file__).resolve().parent.parent  # the checkout (or site-packages, where no build is)
HOME = ROOT / ".native"
STAMP = "stamp.json"
OFF = "ROLLOUT_NATIVE"  # "0": run the sources


def lib_dir() -> Path:
    return HOME / sys.implementation.cache_tag


def sources_digest(root: Path = ROOT, modules: Sequence[str] = MODULES) -> str:
    """What a build was made from: each compiled module's name and source."""
    h = hashlib.sha256()
    for module in modules:
        h.update(module.encode() + b"\0" + (root / (module.replace(".", "/") + ".py")).read_bytes() + b"\0")
    return h.hexdigest()


def picklable() -> None:
    """Let plans and outcomes be pickled between processes (``-j``; call before making the pool, and in each
    worker): every compiled module is loaded, and its frozen dataclasses compiled as native classes are
    pickled by their fields. Pickle's default for an object without an instance dict sets attributes one by
    one, which a frozen class refuses. Fields made on construction (caches) start empty, as after ``replace``."""
    if not active():
        return
    for name in MODULES:
        module = importlib.import_module(name)
        for value in list(vars(module).values()):
            if (isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value)
                    and value.__dictoffset__ == 0 and getattr(value, "__dataclass_params__").frozen):
                copyreg.pickle(value, _fields)


def _fields(obj: Any) -> tuple[type, tuple[Any, ...]]:
    return type(obj), tuple(getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init)


class _Finder:
    """Finds the compiled modules (and their shared library) in a build, before the sources are looked at."""

    def __init__(self, lib: Path, names: frozenset[str]):
        self.lib = lib
        self.names = names
        self.suffix = importlib.machinery.EXTENSION_SUFFIXES[0]

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, self.lib / (fullname.replace(".", "/") + self.suffix))


def active() -> bool:
    """The compiled modules are the ones imported."""
    return any(isinstance(finder, _Finder) for finder in sys.meta_path)


def usable(lib: Path) -> bool:
    """``lib`` holds a build of exactly these sources, for this interpreter."""
    try:
        stamp = json.loads((lib / STAMP).read_bytes())
        return bool(stamp.get("sources") == sources_digest() and stamp.get("modules") == list(MODULES))
    except (OSError, ValueError, AttributeError):  # no build, or an unreadable one
        return False


def activate() -> bool:
    """Use the build when it matches the sources (called once, by ``compiler/__init__.py``); True when used."""
    if os.environ.get(OFF, "1") == "0" or active():
        return active()
    lib = lib_dir()
    if not usable(lib) or any(name in sys.modules for name in MODULES):
        return False
    sys.meta_path.insert(0, _Finder(lib, frozenset((*MODULES, f"{GROUP}__mypyc"))))
    return True
