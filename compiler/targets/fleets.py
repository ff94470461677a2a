"""The fleet targets, and the fleet-wide files of an output folder (light: no router or spec module is loaded)."""

from __future__ import annotations

from collections.abc import Sequence

from compiler.ir.fleet import FleetEntry
from compiler.targets import kustomize
from compiler.targets.base import OTHER, FleetTarget, Files
from compiler.targets.observability import alertmanager, grafana

FLEET: tuple[FleetTarget, ...] = (
    alertmanager.FLEET,
    grafana.FLEET,
    kustomize.FLEET,
)


def render(entries: Sequence[FleetEntry]) -> Files:
    """The fleet-wide files (paths relative to ``_fleet/``) of every rollout of an output folder."""
    files: Files = {}
    kinds: dict[str, str] = {}
    for fleet in FLEET:
        for path, text in fleet.render(entries, kinds).items():
            parts = path.split("/")
            if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise RuntimeError(f"target {fleet.name} produced an unsafe path {path!r}")
            files[path] = text
            kinds[path] = fleet.kinds.get(path, OTHER)
    return files
