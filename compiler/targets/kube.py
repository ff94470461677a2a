"""Building blocks shared by the targets that write Kubernetes objects.

Objects are plain dicts, serialized by :mod:`compiler.serialize`.  Every object
carries the same identifying labels and annotations, so that ``kubectl get
-l app.kubernetes.io/managed-by=rollout`` finds everything a compile produced.
"""

from __future__ import annotations

from typing import Any

from compiler import serialize
from compiler.ir.plan import Plan

MANAGED_BY = "rollout"
ANNOTATION_SPEC = "rollout-compiler.dev/spec"
FLEET_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}  # fleet-wide objects belong to no rollout


def labels(plan: Plan, extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": plan.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "rollout-compiler.dev/rollout": plan.name,
    }
    if plan.environment:
        out["rollout-compiler.dev/environment"] = plan.environment
    out.update(dict(plan.labels))
    if extra:
        out.update(extra)
    return out


def metadata(plan: Plan, name: str, labels_extra: dict[str, str] | None = None,
             annotations: dict[str, str] | None = None, namespace: str | None = None) -> dict[str, Any]:
    """``metadata`` of an object this rollout owns (annotation values are strings)."""
    notes = {
        ANNOTATION_SPEC: plan.source.path,
    }
    if annotations:
        notes.update(annotations)
    return {
        "name": name,
        "namespace": namespace or plan.namespace,
        "labels": labels(plan, labels_extra),
        "annotations": {k: str(v) for k, v in notes.items()},
    }


def config_map(plan: Plan, name: str, data: dict[str, str], labels_extra: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A ConfigMap wrapping text files (the 1 MiB limit is checked by the caller's tests)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(plan, name, labels_extra, annotations),
        "data": dict(sorted(data.items())),
    }


def header(plan: Plan) -> str:
    return serialize.header(plan.source.path)


def manifest(plan: Plan, obj: dict[str, Any], note: str | None = None) -> str:
    """One Kubernetes object as a YAML file with the generated-file header (and an optional note)."""
    text = header(plan) + (f"\n{note}" if note else "")
    return serialize.yaml_text(obj, text)
