"""Checks of generated Kubernetes manifests, as the API server would make them.

- Core kinds against the OpenAPI schemas of Kubernetes 1.30 (``kubernetes-validate``, strict:
  unknown fields fail).
- Custom resources against the JSON Schemas of their CRDs in ``tests/schemas/crds/``
  (``<group>/<kind>_<version>.json``); a kind without a schema fails, it is never skipped.
  A few CEL rules of those CRDs that JSON Schema cannot express are checked here too.
- What neither checks: names (DNS-1123 subdomain; DNS-1035 label for Services), label keys and
  values, annotation keys, string values and their total size, the namespace, and that YAML 1.1
  readers (kubectl, Argo CD, Flux) read the same document as YAML 1.2 readers.

A manifest is any document of a generated ``.yaml`` file with ``apiVersion`` and ``kind``.
``kustomization.yaml`` files (``kustomize.config.k8s.io``) are build inputs, not API objects:
their ``resources`` must name files of the same output.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache, cache
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import jsonschema
import kubernetes_validate
import yaml
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

SCHEMAS = Path(__file__).resolve().parent / "schemas" / "crds"
KUBERNETES_VERSION = "1.30.0"
KUSTOMIZE_GROUP = "kustomize.config.k8s.io"

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ISTIO_HEADER_KEY = re.compile(r"^[-_A-Za-z0-9]+$")  # istio pkg/config/validation: validHeaderRegex
TOTAL_ANNOTATION_SIZE = 256 * 1024
MAX_OBJECT_BYTES = 1024 * 1024
TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec"}
METADATA_KEYS = {"name", "namespace", "labels", "annotations"}


@dataclass(frozen=True)
class Manifest:
    path: str
    index: int  # document number in the file
    doc: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.path}#{self.index} {self.doc.get('kind')}/{(self.doc.get('metadata') or {}).get('name')}"

    @property
    def api_version(self) -> str:
        return str(self.doc["apiVersion"])

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


# --------------------------------------------------------------------------- finding manifests


_RESOLVERS = (VersionedResolver(version=(1, 1)), VersionedResolver(version=(1, 2)))


def ambiguous_scalars(text: str) -> list[str]:
    """Plain scalars that a YAML 1.1 reader and a YAML 1.2 reader type differently (``on``, ``1:30``...)."""
    out = []
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.ScalarEvent) and event.tag is None and event.implicit[0]:
            tags = {r.resolve(ScalarNode, event.value, (True, False)) for r in _RESOLVERS}
            if len(tags) > 1:
                out.append(event.value)
    return out


@lru_cache(maxsize=4096)
def _read(text: str) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    try:
        docs = tuple(yaml.load_all(text, Loader=yaml.CSafeLoader))
        ambiguous = ambiguous_scalars(text)
    except yaml.YAMLError as exc:
        return (), (f"not YAML: {exc}",)
    if ambiguous:
        return docs, (f"YAML 1.1 and YAML 1.2 readers type {ambiguous[:5]} differently: quote them",)
    return docs, ()


def manifests(files: dict[str, str]) -> tuple[list[Manifest], list[str]]:
    """Every document with apiVersion and kind in the ``.yaml`` files, and the problems met reading them."""
    found: list[Manifest] = []
    problems: list[str] = []
    for path in sorted(files):
        if not path.endswith(".yaml"):
            continue
        docs, trouble = _read(files[path])
        problems.extend(f"{path}: {t}" for t in trouble)
        for index, doc in enumerate(docs):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                found.append(Manifest(path, index, copy.deepcopy(doc)))
    return found, problems


# --------------------------------------------------------------------------- schemas


def crd_schema_path(api_version: str, kind: str) -> Path | None:
    group, _, version = api_version.rpartition("/")
    if not group or "." not in group:
        return None
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    return path if path.is_file() else None


def is_core_group(group: str) -> bool:
    """Groups served by Kubernetes itself (``v1``, ``apps/v1``, ``networking.k8s.io/v1`` ...)."""
    return "." not in group or (
        group.endswith(".k8s.io") and group not in ("gateway.networking.k8s.io", KUSTOMIZE_GROUP)
    )


@cache
def _crd_validator(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def schema_errors(m: Manifest) -> list[str]:
    if m.group == KUSTOMIZE_GROUP:
        return []  # checked by kustomization_errors
    schema = crd_schema_path(m.api_version, m.kind)
    if schema is not None:
        errors = sorted(_crd_validator(schema).iter_errors(m.doc), key=lambda e: list(e.absolute_path))
        out = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5]]
        extra = sorted(set(m.doc) - TOP_LEVEL)
        if extra:
            out.append(f"unexpected top-level fields {extra}")
        return out + [f"CEL: {problem}" for problem in cel_errors(m)]
    if not is_core_group(m.group):
        return [f"no CRD schema for {m.api_version} {m.kind} in tests/schemas/crds/: add it (never skip a kind)"]
    meta = m.doc.get("metadata") if isinstance(m.doc.get("metadata"), dict) else {}
    stub = {**m.doc, "metadata": {k: meta[k] for k in ("name", "namespace") if k in meta}}
    return list(_core_errors(json.dumps(stub, sort_keys=True))) + [f"server: {p}" for p in cel_errors(m)]


@cache
def _core_errors(doc_json: str) -> tuple[str, ...]:
    """kubernetes-validate of a core object (metadata beyond name and namespace is checked here, stricter)."""
    try:
        kubernetes_validate.validate(json.loads(doc_json), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return (f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}",)
    except kubernetes_validate.SchemaNotFoundError as exc:
        return (f"unknown kind: {exc.message}",)
    return ()


# --------------------------------------------------------------------------- CEL rules of CRDs


def _walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, path + (i,))


def _http_route_cel(spec: dict[str, Any]) -> list[str]:
    out = []
    for host in spec.get("hostnames") or []:  # "IP addresses are not allowed" (the field's documentation)
        if re.match(r"^[0-9.]+$", host):
            out.append(f"hostname {host!r} is an IP address")
    rules = spec.get("rules") or []
    if sum(len(rule.get("matches") or []) for rule in rules) > 128:
        out.append("more than 128 matches across the rules of a route")
    names = [rule["name"] for rule in rules if "name" in rule]
    if len(names) != len(set(names)):
        out.append("rule names must be unique within the route")
    for path, node in _walk(spec):
        if not isinstance(node, dict):
            continue
        is_ref = path and path[-1] == "backendRef" or (len(path) >= 2 and path[-2] == "backendRefs")
        if is_ref and node.get("group", "") == "" and node.get("kind", "Service") == "Service" and "port" not in node:
            out.append(f"spec.{'.'.join(map(str, path))}: Must have port for Service reference")
        if path and path[-1] == "requestMirror":
            if "percent" in node and "fraction" in node:
                out.append("Only one of percent or fraction may be specified in HTTPRequestMirrorFilter")
            fraction = node.get("fraction")
            if fraction and fraction["numerator"] > fraction.get("denominator", 100):
                out.append("numerator must be less than or equal to denominator")
    return out


def _virtual_service_rules(spec: dict[str, Any]) -> list[str]:
    """Rules of Istio's validating webhook (header keys of lower-case letters, digits, '-' and '_';
    weights that route)."""
    out = []
    for i, route in enumerate(spec.get("http") or []):
        for match in route.get("match") or []:
            for key in match.get("headers") or {}:
                if key != key.lower():
                    out.append(f"http[{i}]: header match key '{key}' must be in lower case")
                if not ISTIO_HEADER_KEY.match(key):
                    out.append(f"http[{i}]: header match key '{key}' is not of letters, digits, '-' and '_'")
        destinations = route.get("route") or []
        if len(destinations) > 1 and sum(d.get("weight", 0) for d in destinations) <= 0:
            out.append(f"http[{i}]: total destination weight is 0")
    return out


def _destination_rule_rules(spec: dict[str, Any]) -> list[str]:
    """Rules of Istio's validating webhook for load balancing (an httpCookie hash needs a name and a ttl)."""
    out = []
    policies = [spec.get("trafficPolicy") or {}] + [s.get("trafficPolicy") or {} for s in spec.get("subsets") or []]
    for policy in policies:
        cookie = ((policy.get("loadBalancer") or {}).get("consistentHash") or {}).get("httpCookie")
        if cookie is not None:
            if not cookie.get("name"):
                out.append("name required for HttpCookie")
            if cookie.get("ttl") is None:
                out.append("ttl required for HttpCookie")
    return out


def _ingress_rules(spec: dict[str, Any]) -> list[str]:
    """The API server's validation of Ingress hosts and paths (not in the OpenAPI schema)."""
    out = []
    for rule in spec.get("rules") or []:
        host = str(rule.get("host", ""))
        if re.match(r"^[0-9.]+$", host) or ":" in host:
            out.append(f"host {host!r} must be a DNS name, not an IP address")
        for path in (rule.get("http") or {}).get("paths") or []:
            if path.get("pathType") not in ("Exact", "Prefix", "ImplementationSpecific"):
                out.append(f"pathType {path.get('pathType')!r} is not Exact, Prefix or ImplementationSpecific")
            if not str(path.get("path", "")).startswith("/"):
                out.append(f"path {path.get('path')!r} must be absolute")
    return out


def _service_rules(spec: dict[str, Any]) -> list[str]:
    """The API server's validation of Service ports and selectors (not in the OpenAPI schema)."""
    out = []
    for port in spec.get("ports") or []:
        for key in ("port", "targetPort"):
            value = port.get(key)
            if isinstance(value, int) and not 1 <= value <= 65535:
                out.append(f"{key} {value} is not 1-65535")
    for key, value in (spec.get("selector") or {}).items():
        out.extend(qualified_key_errors(key, "selector"))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            out.append(f"selector '{key}': {value!r} is not a label value")
    return out


CEL: dict[tuple[str, str], Callable[[dict[str, Any]], list[str]]] = {
    ("gateway.networking.k8s.io", "HTTPRoute"): _http_route_cel,
    ("networking.istio.io", "VirtualService"): _virtual_service_rules,
    ("networking.istio.io", "DestinationRule"): _destination_rule_rules,
    ("networking.k8s.io", "Ingress"): _ingress_rules,
    ("", "Service"): _service_rules,
}


def cel_errors(m: Manifest) -> list[str]:
    """Rules of CRDs (CEL) and of the API server that no JSON Schema holds."""
    check = CEL.get((m.group, m.kind))
    return check(m.doc.get("spec") or {}) if check else []


# --------------------------------------------------------------------------- names, labels, annotations


def qualified_key_errors(key: Any, what: str) -> list[str]:
    if not isinstance(key, str):
        return [f"{what} key {key!r} is not a string"]
    prefix, slash, name = key.rpartition("/")
    out = []
    if slash and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        out.append(f"{what} key '{key}': prefix is not a DNS-1123 subdomain")
    if len(name) > 63 or not QUALIFIED_NAME.match(name):
        out.append(f"{what} key '{key}': name part is not a qualified name (at most 63 of [-A-Za-z0-9_.])")
    return out


def name_errors(m: Manifest) -> list[str]:
    name = (m.doc.get("metadata") or {}).get("name")
    if not isinstance(name, str):
        return ["metadata.name is missing or not a string"]
    if m.kind == "Service" and m.group == "":
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            return [f"Service name '{name}' is not a DNS-1035 label"]
        return []
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return [f"name '{name}' is not a DNS-1123 subdomain"]
    return []


def metadata_errors(m: Manifest, namespace: str | None) -> list[str]:
    meta = m.doc.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata is missing"]
    out = name_errors(m)
    extra = sorted(set(meta) - METADATA_KEYS)
    if extra:
        out.append(f"unexpected metadata fields {extra}")
    actual = meta.get("namespace")
    if actual is None and namespace is None:
        pass  # a fleet-wide object: it goes where the controller applies the fleet
    elif not isinstance(actual, str) or len(actual) > 63 or not DNS1123_LABEL.match(actual):
        out.append(f"metadata.namespace {actual!r} is not a DNS-1123 label")
    elif namespace is not None and actual != namespace:
        out.append(f"metadata.namespace is '{actual}', expected '{namespace}'")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        out.append("metadata.labels is not a mapping")
        labels = {}
    for key, value in labels.items():
        out.extend(qualified_key_errors(key, "label"))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            out.append(
                f"label '{key}': value {value!r} is not a valid label value (a string of at most 63 [-A-Za-z0-9_.])"
            )
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        return out + ["metadata.annotations is not a mapping"]
    total = 0
    for key, value in annotations.items():
        out.extend(qualified_key_errors(key, "annotation"))
        if not isinstance(value, str):
            out.append(f"annotation '{key}': value {value!r} is not a string")
            continue
        total += len(str(key).encode()) + len(value.encode())
    if total > TOTAL_ANNOTATION_SIZE:
        out.append(f"annotations hold {total} bytes; the limit is {TOTAL_ANNOTATION_SIZE}")
    return out


def kustomization_errors(m: Manifest, files: dict[str, str]) -> list[str]:
    if posixpath.basename(m.path) != "kustomization.yaml":
        return [f"{m.kind} of {KUSTOMIZE_GROUP} outside a kustomization.yaml"]
    out = []
    base = posixpath.dirname(m.path)
    for entry in m.doc.get("resources") or []:
        if not isinstance(entry, str):
            out.append(f"resources entry {entry!r} is not a string")
            continue
        target = posixpath.normpath(posixpath.join(base, entry))
        if target not in files and not any(p.startswith(target + "/") for p in files):
            out.append(f"resources entry '{entry}' names nothing in the output")
    return out


# --------------------------------------------------------------------------- all together


def problems(m: Manifest, files: dict[str, str], namespace: str | None) -> list[str]:
    """Everything wrong with one manifest (``namespace``: the one expected, or None for any)."""
    if m.group == KUSTOMIZE_GROUP:
        return [f"{m.where}: {p}" for p in kustomization_errors(m, files)]
    out = schema_errors(m) + metadata_errors(m, namespace)
    size = len(json.dumps(m.doc))
    if size > MAX_OBJECT_BYTES:
        out.append(f"object is {size} bytes; keep it under {MAX_OBJECT_BYTES}")
    return [f"{m.where}: {p}" for p in out]


def check_files(
    files: dict[str, str], namespace_of: Callable[[Manifest], str | None]
) -> tuple[list[Manifest], list[str]]:
    """All manifests of ``files`` and every problem found; identical documents are checked once."""
    found, issues = manifests(files)
    seen: set[str] = set()
    for m in found:
        namespace = namespace_of(m)
        key = json.dumps([m.path, namespace, m.doc], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        issues.extend(problems(m, files, namespace))
    return found, issues


# --------------------------------------------------------------------------- what the routers do with a request
#
# Exact models of how each router picks a backend for one request, from its documented
# semantics: the Gateway API's match precedence and relative weights; ingress-nginx's canary
# order (header, then weight out of 100 or out of a total above 100, as its balancer.lua does)
# including the annotation validation that silently drops a value; Istio's first matching
# route and relative weights.  Shares are exact fractions, not samples.


@dataclass(frozen=True)
class Request:
    host: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass(frozen=True)
class Outcome:
    shares: dict[str, Fraction]  # backend (Istio: "host/subset") -> share of such requests
    mirrored: dict[str, Fraction]  # backend -> share of such requests copied to it


def _segment_prefix(prefix: str, path: str) -> bool:
    stem = prefix.rstrip("/")
    return stem == "" or path == stem or path.startswith(stem + "/")


def _host_matches(pattern: str, host: str) -> bool:
    return host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))


def _weighted(entries: list[tuple[str, int]]) -> dict[str, Fraction]:
    total = sum(w for _, w in entries)
    out: dict[str, Fraction] = {}
    for name, weight in entries:
        if weight:
            out[name] = out.get(name, Fraction(0)) + Fraction(weight, total)
    return out


def route_http_route(route: dict[str, Any], request: Request) -> Outcome | None:
    """The backends an HTTPRoute sends ``request`` to, or None when the route does not match it."""
    spec = route["spec"]
    if spec.get("hostnames") and not any(_host_matches(h, request.host) for h in spec["hostnames"]):
        return None
    best: tuple | None = None
    for index, rule in enumerate(spec["rules"]):
        for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
            path = match.get("path", {"type": "PathPrefix", "value": "/"})
            if path["type"] == "Exact" and request.path != path["value"]:
                continue
            if path["type"] == "PathPrefix" and not _segment_prefix(path["value"], request.path):
                continue
            headers = match.get("headers") or []
            if not all(request.header(h["name"]) == h["value"] for h in headers):
                continue
            # precedence: exact path, longest path, most header matches, then rule order
            key = (path["type"] == "Exact", len(path["value"]), len(headers), -index)
            if best is None or key > best[0]:
                best = (key, rule)
    if best is None:
        return None
    rule = best[1]
    shares = _weighted([(ref["name"], ref.get("weight", 1)) for ref in rule.get("backendRefs") or []])
    mirrored: dict[str, Fraction] = {}
    for f in rule.get("filters") or []:
        if f["type"] == "RequestMirror":
            m = f["requestMirror"]
            share = (Fraction(m["percent"], 100) if "percent" in m else
                     Fraction(m["fraction"]["numerator"], m["fraction"].get("denominator", 100)) if "fraction" in m
                     else Fraction(1))
            mirrored[m["backendRef"]["name"]] = share
    return Outcome(shares, mirrored)


INGRESS_PREFIX = "nginx.ingress.kubernetes.io/"
_BASIC_CHARS = re.compile(r"^[/\-._~a-zA-Z0-9:]*$")
_REGEX_CHARS = re.compile(r"^[/\-._~a-zA-Z0-9:^$\[\](){}*+?|&=\\]*$")
_NGINX_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")


def _annotation(ingress: dict[str, Any], name: str, valid: re.Pattern[str]) -> str | None:
    """An annotation as the controller reads it: a value its validator refuses counts as absent."""
    value = (ingress["metadata"].get("annotations") or {}).get(INGRESS_PREFIX + name)
    if value is None or not valid.match(value.replace(" ", "") if valid is _BASIC_CHARS else value):
        return None
    return value


def _ingress_matches(ingress: dict[str, Any], request: Request) -> str | None:
    for rule in ingress["spec"]["rules"]:
        if "host" in rule and not _host_matches(rule["host"], request.host):
            continue
        for path in rule["http"]["paths"]:
            if path["pathType"] == "Prefix" and _segment_prefix(path["path"], request.path) or \
                    path["pathType"] == "Exact" and request.path == path["path"]:
                return path["backend"]["service"]["name"]
    return None


def route_ingress_nginx(main: dict[str, Any], canary: dict[str, Any], request: Request) -> Outcome | None:
    stable_backend = _ingress_matches(main, request)
    if stable_backend is None:
        return None
    mirrored: dict[str, Fraction] = {}
    target = _annotation(main, "mirror-target", _REGEX_CHARS)
    if target:
        mirrored[target.split("//", 1)[1].split(".", 1)[0]] = Fraction(1)
    canary_backend = _ingress_matches(canary, request)
    if canary_backend is None or _annotation(canary, "canary", re.compile("^true$")) is None:
        return Outcome({stable_backend: Fraction(1)}, mirrored)
    header = _annotation(canary, "canary-by-header", _BASIC_CHARS)
    if header and _NGINX_HEADER_NAME.match(header):  # nginx drops other header names
        sent = request.header(header)
        if sent is not None:
            value = _annotation(canary, "canary-by-header-value", _BASIC_CHARS)
            pattern = _annotation(canary, "canary-by-header-pattern", _REGEX_CHARS)
            if value:
                if sent == value:
                    return Outcome({canary_backend: Fraction(1)}, mirrored)
            elif pattern:
                if re.search(pattern, sent):  # ngx.re.match: unanchored unless the pattern anchors
                    return Outcome({canary_backend: Fraction(1)}, mirrored)
            elif sent == "always":
                return Outcome({canary_backend: Fraction(1)}, mirrored)
            elif sent == "never":
                return Outcome({stable_backend: Fraction(1)}, mirrored)
    integer = re.compile(r"^[0-9]+$")
    weight = int(_annotation(canary, "canary-weight", integer) or 0)
    total = int(_annotation(canary, "canary-weight-total", integer) or 100)
    total = total if total > 100 else 100
    share = Fraction(min(weight, total), total)  # math.random(total) <= weight
    return Outcome({k: v for k, v in ((stable_backend, 1 - share), (canary_backend, share)) if v}, mirrored)


def _istio_uri(match: dict[str, Any], path: str) -> bool:
    uri = match.get("uri")
    if uri is None:
        return True
    if "exact" in uri:
        return path == uri["exact"]
    if "prefix" in uri:
        return path.startswith(uri["prefix"])
    return re.fullmatch(uri["regex"], path) is not None


def _istio_headers(match: dict[str, Any], request: Request) -> bool:
    for name, condition in (match.get("headers") or {}).items():
        sent = request.header(name)
        if sent is None:
            return False
        if "exact" in condition and sent != condition["exact"]:
            return False
        if "prefix" in condition and not sent.startswith(condition["prefix"]):
            return False
        if "regex" in condition and re.fullmatch(condition["regex"], sent) is None:
            return False
    return True


def _istio_destination(d: dict[str, Any]) -> str:
    return d["host"] + ("/" + d["subset"] if "subset" in d else "")


def route_istio(virtual_service: dict[str, Any], service: str, request: Request) -> Outcome | None:
    """Where mesh traffic for ``service`` goes: the first route whose match holds (Istio's order)."""
    spec = virtual_service["spec"]
    if service not in spec["hosts"]:
        return None
    for route in spec["http"]:
        matches = route.get("match") or [{}]
        if any(_istio_uri(m, request.path) and _istio_headers(m, request) for m in matches):
            destinations = route["route"]
            entries = [(_istio_destination(d["destination"]), d.get("weight", 1 if len(destinations) == 1 else 0))
                       for d in destinations]
            mirrored = {}
            if "mirror" in route:
                percent = Fraction(str(route.get("mirrorPercentage", {}).get("value", 100)))
                mirrored[_istio_destination(route["mirror"])] = percent / 100
            return Outcome(_weighted(entries), mirrored)
    return None
