"""kustomization.yaml files: exactly what a GitOps controller applies.

Argo CD reads every ``.yaml``/``.json`` of a plain directory as a manifest, and
Flux generates a kustomization of every manifest it finds.  A rollout's folder
also holds files that are not Kubernetes objects (haproxy.cfg, flagd.json, rule
files, promtool tests, Markdown), so each folder a controller may point at gets
a ``kustomization.yaml`` and the controller applies only what it lists:

- ``resources``: every file whose documents are all Kubernetes objects
  (detected by parsing: a mapping with ``apiVersion`` and ``kind``), except
  GitOps controller objects (Argo CD Applications, Flux Kustomizations), which
  get a kustomization of their own folder: a controller must not manage the
  object that points it at its own folder.
- ``configMapGenerator``: configuration files no generated ConfigMap already
  carries byte for byte, one ConfigMap per folder (``<name>-<folder>-files``,
  no name-suffix hash, so the name is stable and the rollback state replaces
  the same object).  Markdown, text and promtool test files are listed nowhere.

``rollback/`` gets its own kustomization over the same rules, naming the same
objects, so applying it puts the rollback state in place.  The fleet
kustomization (``_fleet/kustomization.yaml``) points at every rollout's folder,
and ``_fleet/environments/<env>/`` at one environment's rollouts.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any
from collections.abc import Iterable, Mapping, Sequence


from compiler.targets import kube
from compiler import serialize
from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets.base import FleetTarget, Rendered, Summary

KUSTOMIZATION = "kustomization.yaml"
API_VERSION = "kustomize.config.k8s.io/v1beta1"
ROLLBACK_DIR = "rollback"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
CONFIG_SUFFIXES = (".cfg", ".conf", ".json", ".yaml", ".yml", ".env")
CONTROLLER_KINDS = {("argoproj.io", "Application"), ("kustomize.toolkit.fluxcd.io", "Kustomization")}
ENVIRONMENTS_DIR = "environments"
GITOPS_DIR = "gitops"  # _fleet/gitops: the app of apps
FLEET_NAME = "rollout-fleet"  # prefix of the fleet-wide objects' names


# --------------------------------------------------------------------------- reading generated files


def documents(path: str, text: str) -> list[Any] | None:
    """The YAML/JSON documents of a file, or None when it is not YAML/JSON."""
    if not path.endswith(MANIFEST_SUFFIXES):
        return None
    if path.endswith(".json"):
        try:
            return [json.loads(text)]
        except ValueError:
            return None
    try:
        return serialize.read_yaml(text)
    except serialize.YAMLError:
        return None


def is_object(doc: Any) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str)
            and isinstance(doc.get("metadata"), dict))


def is_manifest(docs: list[Any] | None) -> bool:
    return bool(docs) and all(is_object(d) for d in docs)


def is_controller(docs: list[Any]) -> bool:
    return all((d["apiVersion"].split("/")[0], d["kind"]) in CONTROLLER_KINDS for d in docs)


def is_promtool_test(docs: list[Any] | None) -> bool:
    return bool(docs) and isinstance(docs[0], dict) and "tests" in docs[0] and "rule_files" in docs[0]


def carried_texts(manifests: Iterable[list[Any]]) -> set[str]:
    """The values of every ConfigMap's ``data``: files already wrapped by a target."""
    out: set[str] = set()
    for docs in manifests:
        for doc in docs:
            if doc.get("apiVersion") == "v1" and doc.get("kind") == "ConfigMap" and isinstance(doc.get("data"), dict):
                out.update(v for v in doc["data"].values() if isinstance(v, str))
    return out


# --------------------------------------------------------------------------- one folder


def config_files(parsed: Mapping[str, list[Any] | None], files: Mapping[str, str],
                 manifests: Mapping[str, list[Any]]) -> dict[str, list[str]]:
    """{folder: configuration files to wrap in a ConfigMap}: those that are no manifest, no promtool test,
    and not already carried byte for byte by a generated ConfigMap."""
    carried = carried_texts(manifests.values())
    wrapped: dict[str, list[str]] = {}
    for path, docs in parsed.items():
        if path in manifests or not path.endswith(CONFIG_SUFFIXES) or is_promtool_test(docs) or files[path] in carried:
            continue
        wrapped.setdefault(posixpath.dirname(path), []).append(path)
    return wrapped


def _generator_name(plan: Plan, folder: str) -> str:
    return f"{plan.name}-{folder.replace('/', '-')}-files" if folder else f"{plan.name}-files"


def folder_kustomization(plan: Plan, files: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(the kustomization of a folder, {sub-folder: controller files}) for ``files`` relative to the folder."""
    parsed = {path: documents(path, text) for path, text in sorted(files.items())}
    manifests = {p: d for p, d in parsed.items() if is_manifest(d)}
    resources: list[str] = []
    controllers: dict[str, list[str]] = {}
    for path, docs in manifests.items():
        if is_controller(docs):
            controllers.setdefault(posixpath.dirname(path), []).append(path)
        else:
            resources.append(path)
    wrapped = config_files(parsed, files, manifests)
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Kustomization",
        "metadata": {
            "name": plan.name,
            "annotations": {**kube.metadata(plan, plan.name)["annotations"], kube.ANNOTATION_STAGE: plan.current.name},
        },
        "resources": resources,
    }
    if wrapped:
        body["configMapGenerator"] = [
            {
                "name": _generator_name(plan, folder),
                "namespace": plan.namespace,
                "files": paths,
                "options": {"disableNameSuffixHash": True, "labels": kube.labels(plan)},
            }
            for folder, paths in sorted(wrapped.items())
        ]
    return body, controllers


def _text(plan: Plan, body: dict[str, Any], what: str) -> str:
    return serialize.yaml_text(body, kube.header(plan) + "\n" + what)


def render_rollout(rendered: Rendered) -> dict[str, str]:
    plan = rendered.plan
    prefix = ROLLBACK_DIR + "/"
    live = {p: t for p, t in rendered.files.items() if not p.startswith(prefix)}
    rollback = {p[len(prefix):]: t for p, t in rendered.files.items() if p.startswith(prefix)}
    out: dict[str, str] = {}
    body, controllers = folder_kustomization(plan, live)
    out[KUSTOMIZATION] = _text(plan, body, f"What a GitOps controller applies for {plan.out} at stage {plan.current.name}.")
    if rollback:
        body, _ = folder_kustomization(plan.at(ROLLBACK), rollback)
        out[f"{ROLLBACK_DIR}/{KUSTOMIZATION}"] = _text(
            plan, body, f"The rollback state of {plan.out}: `kubectl apply -k` this folder to put every route on stable.")
    for folder, paths in sorted(controllers.items()):
        if not folder or folder == ROLLBACK_DIR:
            continue
        body = {"apiVersion": API_VERSION, "kind": "Kustomization",
                "resources": [posixpath.relpath(p, folder) for p in paths]}
        out[f"{folder}/{KUSTOMIZATION}"] = _text(
            plan, body, f"The GitOps controller object that points at {plan.out}: apply it once, or from an app of apps.")
    return out


# --------------------------------------------------------------------------- the fleet


def _fleet_text(body: dict[str, Any], what: str) -> str:
    return serialize.yaml_text(body, f"{serialize.FLEET_HEADER}\n{what}")


def _relative(from_dir: str, to: str) -> str:
    return posixpath.relpath(to, from_dir)


def _controller_folders(outs: Sequence[str], files: Mapping[str, str]) -> list[str]:
    """Folders of rollouts holding GitOps controller objects: those with a kustomization besides rollback/."""
    found = []
    for out in outs:
        for path in files:
            rest = path[len(out) + 1:] if path.startswith(out + "/") else None
            if rest and rest.count("/") == 1 and rest.endswith("/" + KUSTOMIZATION) and not rest.startswith(ROLLBACK_DIR + "/"):
                if posixpath.dirname(path) not in outs:
                    found.append(posixpath.dirname(path))
    return sorted(found)


def render_fleet(plans: Sequence[Plan], files: Mapping[str, str]) -> dict[str, str]:
    if not plans:
        return {}
    fleet_prefix = "_fleet/"
    own = {p[len(fleet_prefix):]: t for p, t in files.items() if p.startswith(fleet_prefix)}
    parsed = {p: documents(p, t) for p, t in sorted(own.items())}
    own_manifests = [p for p, docs in parsed.items() if is_manifest(docs)]
    wrapped = config_files(parsed, own, {p: parsed[p] for p in own_manifests})
    outs = sorted(plan.out for plan in plans)
    out: dict[str, str] = {}
    # Environments usually share namespaces and names (staging and production of one service),
    # so they never meet in one kustomization: each has its own under environments/.
    plain = sorted(plan.out for plan in plans if not plan.environment)
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Kustomization",
                            "resources": [_relative("_fleet", o) for o in plain] + own_manifests}
    if wrapped:  # fleet-wide objects have no namespace of their own: the controller's destination
        body["configMapGenerator"] = [
            {"name": f"{FLEET_NAME}-{folder.replace('/', '-')}-files", "files": paths,
             "options": {"disableNameSuffixHash": True, "labels": dict(kube.FLEET_LABELS)}}
            for folder, paths in sorted(wrapped.items())
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
    controller_folders = _controller_folders(outs, files)
    if controller_folders:
        here = f"_fleet/{GITOPS_DIR}"
        body = {"apiVersion": API_VERSION, "kind": "Kustomization",
                "resources": [_relative(here, folder) for folder in controller_folders]}
        out[f"{GITOPS_DIR}/{KUSTOMIZATION}"] = _fleet_text(
            body, "Every rollout's Argo CD Application or Flux Kustomization: an app of apps points here.")
    return out


SUMMARY = Summary("kustomize", render_rollout)
FLEET = FleetTarget("kustomize-fleet", render_fleet)
