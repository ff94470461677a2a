"""A varied fleet of specs for the benchmarks: every example spec's shape, varied by index.

Each spec of ``specs/`` and ``tests/golden/in-*.yaml`` is a template; copy ``i``
gets its own name, namespace and host, thresholds, holds, windows and router
targets derived from ``i``, so that no two specs compile to the same rules,
tests or routes: no work is shared between specs that a real fleet would not
share.  Specs are edited as data (ruamel.yaml round trip), never as text.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "tests" / "golden").glob("in-*.yaml"))
ROUTERS = ["gateway-api", "istio", "ingress-nginx", "haproxy", "nginx"]


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 1 << 16
    return yaml


def _vary_gates(gates: Any, i: int) -> None:
    if not isinstance(gates, dict):
        return
    if "error_rate" in gates:
        gates["error_rate"] = f"< {0.5 + (i % 17) * 0.1:.1f}%"
    for key in ("p95_latency", "p99_latency"):
        if key in gates:
            gates[key] = f"< {150 + (i % 23) * 10}ms"
    if "error_rate_vs_stable" in gates:
        gates["error_rate_vs_stable"] = f"< {2 + (i % 5)}x"
    for gate in (gates.get("custom") or {}).values():
        if isinstance(gate, dict):
            for bound in ("max", "min"):
                if bound in gate and isinstance(gate[bound], (int, float)):
                    gate[bound] = round(float(gate[bound]) * (1 + (i % 7) / 100), 6)


def _vary_hold(value: Any, i: int) -> Any:
    return f"{(i % 11) + 2}h" if isinstance(value, str) else value


def vary(data: dict[str, Any], i: int) -> dict[str, Any]:
    """Copy ``i`` of a template: a rollout of its own."""
    meta = data["metadata"]
    base = str(meta["name"])[:24]
    meta["name"] = f"{base}-{i}"
    meta["namespace"] = f"team-{i % 97}"
    service = data["service"]
    service["host"] = f"svc-{i}.{service['host'].lstrip('*.')}"[:200]
    for role in ("stable", "canary"):
        service[role]["backend"] = f"{service[role]['backend'][:30]}-{i}"
    targets = data.get("traffic", {}).get("targets")
    if targets:
        extra = ROUTERS[i % len(ROUTERS)]
        needs_servers = extra in ("haproxy", "nginx") and not service["stable"].get("servers")
        if extra not in targets and not needs_servers and not data.get("strategy", {}).get("blue-green"):
            targets.append(extra)
    metrics = data.setdefault("metrics", {})
    metrics["min_requests"] = 100 + (i % 13) * 25
    if i % 3 == 0:
        metrics["window"] = f"{5 + (i % 4) * 5}m"
    for stage in data.get("stages") or []:
        if "hold" in stage:
            stage["hold"] = _vary_hold(stage["hold"], i)
        _vary_gates(stage.get("gates"), i)
    strategy = data.get("strategy") or {}
    if "gates" in strategy:
        _vary_gates(strategy["gates"], i)
    bg = strategy.get("blue-green")
    if isinstance(bg, dict):
        _vary_gates(bg.get("gates"), i)
    for env in (data.get("environments") or {}).values():
        if isinstance(env, dict) and isinstance(env.get("metadata"), dict) and "namespace" in env["metadata"]:
            env["metadata"]["namespace"] = f"{env['metadata']['namespace']}-{i % 97}"
        if isinstance(env, dict) and isinstance(env.get("service"), dict) and "host" in env["service"]:
            env["service"]["host"] = f"svc-{i}.{env['service']['host']}"[:200]
    return data


def write_fleet(folder: Path, count: int) -> list[Path]:
    """``count`` specs in ``folder`` (made once per template, then varied)."""
    folder.mkdir(parents=True, exist_ok=True)
    yaml = _yaml()
    texts = [path.read_text(encoding="utf-8") for path in TEMPLATES]
    written = []
    for i in range(count):
        template = texts[i % len(texts)]
        data = yaml.load(template)
        vary(data, i)
        buffer = io.StringIO()
        yaml.dump(data, buffer)
        path = folder / f"svc-{i:05d}.yaml"
        path.write_text(buffer.getvalue(), encoding="utf-8")
        written.append(path)
    return written
