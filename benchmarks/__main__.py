"""Run every benchmark module of this package (``python -m benchmarks [name ...]``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    chosen = argv or modules()
    unknown = sorted(set(chosen) - set(modules()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(modules())})", file=sys.stderr)
        return 2
    failed = 0
    for name in chosen:
        module = importlib.import_module(f"benchmarks.{name}")
        if not hasattr(module, "main"):
            continue
        started = time.monotonic()
        print(f"== {name}", flush=True)
        failed += 1 if module.main() else 0
        print(f"== {name}: {time.monotonic() - started:.0f}s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
