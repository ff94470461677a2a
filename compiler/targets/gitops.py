"""gitops/: the Argo CD Application or Flux Kustomization that applies this rollout's folder.

Written only when the spec has a ``gitops:`` section.  The object points at
``<gitops.path>/<[env/]namespace/name>`` in the repository, where the rollout's
``kustomization.yaml`` lists what to apply.  It is not part of that
kustomization (a controller does not manage the object that points it at its
own folder): apply it once, or list ``_fleet/gitops`` in an app of apps.
"""

from __future__ import annotations

import posixpath
from typing import Any

from compiler.targets import kube
from compiler.ir.plan import Plan
from compiler.targets.base import CONTROLLER, Target

ARGOCD = "gitops/argocd-application.yaml"
FLUX = "gitops/flux-kustomization.yaml"


def repository_path(plan: Plan) -> str:
    """The rollout's folder relative to the repository root, without a leading slash."""
    assert plan.gitops is not None
    return posixpath.join(plan.gitops.path.strip("/"), plan.out) if plan.gitops.path.strip("/") else plan.out


def go_duration(seconds: int) -> str:
    """Seconds as a Go duration (h, m, s only): what Kubernetes controllers parse."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return text or "0s"


def _metadata(plan: Plan, namespace: str) -> dict[str, Any]:
    return kube.metadata(plan, plan.names.argo_application, {"app.kubernetes.io/component": "gitops"},
                         namespace=namespace)


def argocd_application(plan: Plan) -> dict[str, Any]:
    assert plan.gitops is not None and plan.gitops.argocd is not None  # the target renders only then
    argo = plan.gitops.argocd
    spec: dict[str, Any] = {
        "project": argo.project,
        "source": {"repoURL": argo.repo_url, "targetRevision": argo.target_revision, "path": repository_path(plan)},
        "destination": {"server": argo.destination_server, "namespace": plan.namespace},
    }
    if argo.automated:
        spec["syncPolicy"] = {"automated": {"prune": True, "selfHeal": True}}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": _metadata(plan, argo.namespace),
            "spec": spec}


def flux_kustomization(plan: Plan) -> dict[str, Any]:
    assert plan.gitops is not None and plan.gitops.flux is not None  # the target renders only then
    flux = plan.gitops.flux
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": _metadata(plan, flux.namespace),
        "spec": {
            "interval": go_duration(flux.interval),
            "path": "./" + repository_path(plan),
            "prune": flux.prune,
            "sourceRef": {"kind": "GitRepository", "name": flux.source, "namespace": flux.source_namespace},
        },
    }


def render(plan: Plan) -> dict[str, str]:
    if plan.gitops is None:
        return {}
    if plan.gitops.argocd is not None:
        return {ARGOCD: kube.manifest(plan, argocd_application(plan))}
    return {FLUX: kube.manifest(plan, flux_kustomization(plan))}


TARGET: Target = Target("gitops", render, kinds={ARGOCD: CONTROLLER, FLUX: CONTROLLER})
