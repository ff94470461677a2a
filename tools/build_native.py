"""Build the native modules of a checkout (compiler/native.py) with mypyc: ``python tools/build_native.py``.

Skipped, with a note and exit 0, where there is no C compiler or mypyc: the sources run instead, to the
same bytes. The new build replaces the old one by a rename, its stamp written inside it first.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler import native  # noqa: E402  # the module list and the stamp's digest (mypyc reads the sources alone)


def missing() -> str | None:
    """Why no build can be made here, or None."""
    try:
        import mypyc.build  # noqa: F401  # the type checker's compiler
        import setuptools  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.exists():
        return f"no Python headers ({include})"
    return None


def _parallel_build_ext() -> type:
    """setuptools' build_ext, compiling the C files of one extension on every core (mypyc writes the group's
    code as one C file per module)."""
    from setuptools.command.build_ext import build_ext

    class ParallelBuildExt(build_ext):  # type: ignore[misc]
        def build_extension(self, ext: Any) -> None:
            serial = self.compiler.compile

            def compile(sources: list[str], *args: Any, **kwargs: Any) -> list[str]:
                if len(sources) < 2:
                    return list(serial(sources, *args, **kwargs))
                first = list(serial(sources[:1], *args, **kwargs))  # makes the output folders once
                with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                    rest = pool.map(lambda source: serial([source], *args, **kwargs), sources[1:])
                    return first + [obj for objects in rest for obj in objects]

            self.compiler.compile = compile
            try:
                super().build_extension(ext)
            finally:
                del self.compiler.compile

    return ParallelBuildExt


def build(home: Path, opt_level: str) -> Path:
    from mypyc.build import mypycify
    from setuptools import Distribution

    digest = native.sources_digest()
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=home))
    lib = home / sys.implementation.cache_tag
    old = home / f"old-{sys.implementation.cache_tag}"
    try:
        os.chdir(ROOT)  # mypyc names the modules by their paths from here and reads the type checker's settings
        paths = [module.replace(".", "/") + ".py" for module in native.MODULES]
        extensions = mypycify(paths, opt_level=opt_level, multi_file=True, group_name=native.GROUP,
                              target_dir=str(work / "c"))
        dist = Distribution({"name": native.GROUP, "ext_modules": extensions,
                             "cmdclass": {"build_ext": _parallel_build_ext()}})
        command = dist.get_command_obj("build_ext")
        command.build_lib = str(work / "lib")
        command.build_temp = str(work / "tmp")
        dist.run_command("build_ext")
        if native.sources_digest() != digest:
            raise SystemExit("the sources changed during the build: build again")
        stamp = {"sources": digest, "modules": list(native.MODULES)}
        (work / "lib" / native.STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
        shutil.rmtree(old, ignore_errors=True)
        if lib.exists():
            lib.rename(old)
        (work / "lib").rename(lib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return lib


def main() -> int:
    if native.usable(native.lib_dir()):
        print(f"native build: up to date ({native.lib_dir().relative_to(ROOT)})")
        return 0
    why = missing()
    if why is not None:
        print(f"native build skipped: {why}; the compiler runs from its sources (same output, slower)")
        return 0
    started = time.monotonic()
    lib = build(native.HOME, os.environ.get("MYPYC_OPT_LEVEL", "3"))
    print(f"native build: {len(native.MODULES)} modules in {lib.relative_to(ROOT)} "
          f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
