"""kustomization.yaml files: exactly what a GitOps controller applies.

Argo CD reads every ``.yaml``/``.json`` of a plain directory as a manifest, and
Flux generates a kustomization of every manifest it finds.  A rollout's folder
also holds files that are not Kubernetes objects (haproxy.cfg, flagd.json, rule
files, promtool tests, Markdown), so each folder a controller may point at gets
a ``kustomization.yaml`` and the controller applies only what it lists:

- ``resources``: every file its target declares a Kubernetes manifest
  (:data:`compiler.targets.base.MANIFEST`), except GitOps controller objects
  (Argo CD Applications, Flux Kustomizations), which get a kustomization of
  their own folder: a controller must not manage the object that points it at
  its own folder.
- ``configMapGenerator``: configuration files no generated ConfigMap carries
  (:data:`compiler.targets.base.CONFIG`), one ConfigMap per folder
  (``<name>-<folder>-files``, no name-suffix hash, so the name is stable and the
  rollback state replaces the same object).  Markdown, text and promtool test
  files are listed nowhere.

Nothing is parsed back: each target says what its files are.

``rollback/`` gets its own kustomization over the same rules, naming the same
objects, so applying it puts the rollback state in place.  The fleet
kustomization (``_fleet/kustomization.yaml``) points at every rollout's folder,
and ``_fleet/environments/<env>/`` at one environment's rollouts.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from compiler import serialize
from compiler.ir.fleet import FleetEntry
from compiler.ir.plan import Plan
from compiler.spec import names
from compiler.targets import kube
from compiler.targets.base import CONFIG, CONTROLLER, MANIFEST, FleetTarget, Rendered, Summary

KUSTOMIZATION = "kustomization.yaml"
API_VERSION = "kustomize.config.k8s.io/v1beta1"
ROLLBACK_DIR = "rollback"
ENVIRONMENTS_DIR = "environments"
GITOPS_DIR = "gitops"  # _fleet/gitops: the app of apps
FLEET_NAME = names.FLEET_PREFIX  # prefix of the fleet-wide objects' names


# --------------------------------------------------------------------------- one folder


def _by_folder(paths: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in paths:
        out.setdefault(posixpath.dirname(path), []).append(path)
    return out


def generator_name(plan: Plan, folder: str) -> str:
    return f"{plan.name}-{folder.replace('/', '-')}-files" if folder else f"{plan.name}-files"


def folder_kustomization(plan: Plan, kinds: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(the kustomization of a folder, {sub-folder: controller files}) for files of these kinds relative to it."""
    paths = sorted(kinds)
    resources = [p for p in paths if kinds[p] == MANIFEST]
    controllers = _by_folder([p for p in paths if kinds[p] == CONTROLLER])
    wrapped = _by_folder([p for p in paths if kinds[p] == CONFIG])
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Kustomization",
        "metadata": {"name": plan.name, "annotations": kube.metadata(plan, plan.name)["annotations"]},
        "resources": resources,
    }
    if wrapped:
        body["configMapGenerator"] = [
            {
                "name": generator_name(plan, folder),
                "namespace": plan.namespace,
                "files": folder_paths,
                "options": {"disableNameSuffixHash": True, "labels": kube.labels(plan)},
            }
            for folder, folder_paths in sorted(wrapped.items())
        ]
    return body, controllers


def _text(plan: Plan, body: dict[str, Any], what: str) -> str:
    return serialize.yaml_text(body, kube.header(plan) + "\n" + what)


def render_rollout(rendered: Rendered) -> dict[str, str]:
    plan, kinds = rendered.plan, rendered.kinds
    prefix = ROLLBACK_DIR + "/"
    live = {p: k for p, k in kinds.items() if not p.startswith(prefix)}
    rollback = {p[len(prefix):]: k for p, k in kinds.items() if p.startswith(prefix)}
    out: dict[str, str] = {}
    body, controllers = folder_kustomization(plan, live)
    out[KUSTOMIZATION] = _text(plan, body, f"What a GitOps controller applies for {plan.out}.")
    if rollback:
        body, _ = folder_kustomization(plan, rollback)
        out[f"{ROLLBACK_DIR}/{KUSTOMIZATION}"] = _text(
            plan,
            body,
            f"The rollback state of {plan.out}: `kubectl apply -k` this folder to put every route on stable.",
        )
    for folder, paths in sorted(controllers.items()):
        if not folder or folder == ROLLBACK_DIR:
            continue
        body = {"apiVersion": API_VERSION, "kind": "Kustomization",
                "resources": [posixpath.relpath(p, folder) for p in paths]}
        out[f"{folder}/{KUSTOMIZATION}"] = _text(
            plan,
            body,
            f"The GitOps controller object that points at {plan.out}: apply it once, or from an app of apps.",
        )
    return out


# --------------------------------------------------------------------------- the fleet


def _fleet_text(body: dict[str, Any], what: str) -> str:
    return serialize.yaml_text(body, f"{serialize.FLEET_HEADER}\n{what}")


def _relative(from_dir: str, to: str) -> str:
    return posixpath.relpath(to, from_dir)


def controller_folder(kinds: Mapping[str, str]) -> str | None:
    """The sub-folder of a rollout that holds its GitOps controller object (it has a kustomization of its own)."""
    folders = sorted(
        {posixpath.dirname(p) for p, k in kinds.items() if k == CONTROLLER and not p.startswith("rollback/")}
    )
    return folders[0] if folders else None


def render_fleet(plans: Sequence[FleetEntry], kinds: Mapping[str, str]) -> dict[str, str]:
    """``kinds``: the other fleet files, relative to ``_fleet/``."""
    if not plans:
        return {}
    paths = sorted(kinds)
    own_manifests = [p for p in paths if kinds[p] == MANIFEST]
    wrapped = _by_folder([p for p in paths if kinds[p] == CONFIG])
    out: dict[str, str] = {}
    # Environments usually share namespaces and names (staging and production of one service),
    # so they never meet in one kustomization: each has its own under environments/.
    plain = sorted(plan.out for plan in plans if not plan.environment)
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Kustomization",
                            "resources": [_relative("_fleet", o) for o in plain] + own_manifests}
    if wrapped:  # fleet-wide objects have no namespace of their own: the controller's destination
        body["configMapGenerator"] = [
            {"name": f"{FLEET_NAME}-{folder.replace('/', '-')}-files", "files": folder_paths,
             "options": {"disableNameSuffixHash": True, "labels": dict(kube.FLEET_LABELS)}}
            for folder, folder_paths in sorted(wrapped.items())
        ]
    out[KUSTOMIZATION] = _fleet_text(
        body, "Every rollout without an environment, and the fleet-wide objects (in the namespace the controller "
        "applies to); each environment's rollouts are in environments/<environment>/.")
    environments = sorted({plan.environment for plan in plans if plan.environment})
    for env in environments:
        here = f"_fleet/{ENVIRONMENTS_DIR}/{env}"
        body = {"apiVersion": API_VERSION, "kind": "Kustomization",
                "resources": [_relative(here, plan.out) for plan in sorted(plans, key=lambda p: p.out)
                              if plan.environment == env]}
        out[f"{ENVIRONMENTS_DIR}/{env}/{KUSTOMIZATION}"] = _fleet_text(body, f"The rollouts of environment {env}.")
    controller_folders = sorted(f"{p.out}/{p.controller_folder}" for p in plans if p.controller_folder)
    if controller_folders:
        here = f"_fleet/{GITOPS_DIR}"
        body = {"apiVersion": API_VERSION, "kind": "Kustomization",
                "resources": [_relative(here, folder) for folder in controller_folders]}
        out[f"{GITOPS_DIR}/{KUSTOMIZATION}"] = _fleet_text(
            body, "Every rollout's Argo CD Application or Flux Kustomization: an app of apps points here.")
    return out


SUMMARY: Summary = Summary("kustomize", render_rollout)
FLEET: FleetTarget = FleetTarget("kustomize-fleet", render_fleet)
