"""Name rules for every place a spec's strings land, and the names of generated objects.

Each ``check_*`` function returns the value unchanged or raises ``ValueError``
with a message that says which rule the value breaks.  The rules are those of
the consumers: Kubernetes (DNS-1123 / DNS-1035, label values), HTTP (header
tokens), the routers (host names, paths, server addresses) and the shells that
read environment variables.
"""

from __future__ import annotations

import hashlib
import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
HEADER_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
IPV4 = re.compile(r"^[0-9]+(\.[0-9]+){3}$")
HOST_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
URL_PATH = re.compile(r"^/[A-Za-z0-9/._~\-]*$")
ENV_VAR = re.compile(r"^[A-Z_][A-Z0-9_]*$")
FLAG_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
STAGE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Values a router compares a header against, and allowlisted targeting keys:
# printable ASCII without quotes, backslashes, spaces or config-language
# delimiters, so they land inert in HAProxy, nginx, PromQL and YAML alike.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:/@+=\-]*$")
PROM_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: Suffixes this compiler appends to ``metadata.name`` for the objects it
#: generates.  The longest one bounds the length of a rollout's name so that
#: every derived name stays a valid 63-character DNS label.
SUFFIXES = (
    "-canary",
    "-preview",
    "-haproxy",
    "-nginx",
    "-flags",
    "-dashboard",
    "-rules",
    "-alertmanager",
    "-rollout",
)
MAX_LABEL = 63
FLEET_PREFIX = "rollout-fleet"  # the fleet-wide objects' names begin with it
MAX_ROLLOUT_NAME = MAX_LABEL - max(len(s) for s in SUFFIXES)


def _subject(what: str, value: str) -> str:
    return f"{what} '{value}'" if what else f"'{value}'"


def check_dns1123_label(value: str, what: str = "") -> str:
    if len(value) > MAX_LABEL:
        raise ValueError(f"{_subject(what, value)} is {len(value)} characters; a DNS-1123 label has at most 63")
    if not DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            f"{_subject(what, value)} is not a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9](-?[a-z0-9])*$")
#: Labels the compiler sets on every object it writes (or on some, with a meaning): not for `metadata.labels`.
RESERVED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/managed-by", "app.kubernetes.io/component",
                   "grafana_dashboard")
RESERVED_LABEL_PREFIX = "rollout-compiler.dev/"


def check_dns1123_subdomain(value: str, what: str = "") -> str:
    """A name most Kubernetes objects take (a Secret's, a ConfigMap's): dot-separated DNS labels, 253 at most."""
    if len(value) > 253:
        raise ValueError(f"{_subject(what, value)} is {len(value)} characters; a Kubernetes object name has at "
                         "most 253")
    if not DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"{_subject(what, value)} is not a Kubernetes object name: lower-case letters, digits, "
                         "'-' and '.', starting and ending with a letter or digit")
    return value


def check_port_name(value: str, what: str = "") -> str:
    """A container port's name (IANA_SVC_NAME): at most 15 characters, a letter among them, no '--'."""
    if len(value) > 15 or not IANA_SVC_NAME.fullmatch(value):
        raise ValueError(f"{_subject(what, value)} is not a container port name: at most 15 lower-case letters, "
                         "digits and '-' (not at either end, never two in a row), with at least one letter")
    return value


def check_extra_label(value: str) -> str:
    """A label a spec adds to every object: not one the compiler sets itself."""
    if value in RESERVED_LABELS or value.startswith(RESERVED_LABEL_PREFIX):
        raise ValueError(f"'{value}' is a label rollout sets itself (it finds and sorts the objects it writes by "
                         "it): choose another key")
    return check_label_key(value)


def check_dns1035_label(value: str, what: str = "") -> str:
    if len(value) > MAX_LABEL:
        raise ValueError(
            f"{_subject(what, value)} is {len(value)} characters; a Kubernetes Service name has at most 63"
        )
    if not DNS1035_LABEL.fullmatch(value):
        raise ValueError(
            f"{_subject(what, value)} is not a DNS-1035 label (a Kubernetes Service name): lower-case letters, "
            "digits and '-', starting with a letter and ending with a letter or digit"
        )
    return value


def check_rollout_name(value: str) -> str:
    check_dns1035_label(value)
    if len(value) > MAX_ROLLOUT_NAME:
        longest = max(SUFFIXES, key=len)
        raise ValueError(
            f"'{value}' is {len(value)} characters; at most {MAX_ROLLOUT_NAME} so that "
            f"derived names such as '{value}{longest}' stay within 63"
        )
    if value == FLEET_PREFIX or value.startswith(f"{FLEET_PREFIX}-"):
        raise ValueError(f"'{value}': names beginning with '{FLEET_PREFIX}' are the fleet-wide objects'; choose "
                         "another name")
    return value


def check_label_value(value: str, what: str = "") -> str:
    if len(value) > MAX_LABEL or not LABEL_VALUE.fullmatch(value):
        raise ValueError(
            f"{_subject(what, value)} is not a valid Kubernetes label value: at most 63 characters of letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit"
        )
    return value


def check_label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if prefix:
        check_hostname(prefix, "label prefix")
    if len(name) > MAX_LABEL or not LABEL_NAME.fullmatch(name):
        raise ValueError(f"label key '{value}' is not a valid Kubernetes label key")
    if not PROM_LABEL_NAME.fullmatch(name.replace("-", "_").replace(".", "_")):
        raise ValueError(f"label key '{value}' cannot be used as a Prometheus label")
    return value


def check_prom_label(value: str) -> str:
    """A Prometheus label name of an exporter's series (not one of Prometheus' own ``__`` labels)."""
    if not PROM_LABEL_NAME.fullmatch(value) or value.startswith("__") or len(value) > 128:
        raise ValueError(f"'{value}' is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)")
    return value


def check_header_name(value: str) -> str:
    if not HEADER_TOKEN.fullmatch(value) or len(value) > 128:
        raise ValueError(
            f"header name '{value}' is not an HTTP header name (RFC 9110 token: letters, digits and !#$%&'*+-.^_`|~)"
        )
    return value


def check_istio_gateway(value: str) -> str:
    """An Istio Gateway as a VirtualService names it: ``name`` (in the rollout's namespace) or ``namespace/name``."""
    parts = value.split("/")
    if len(parts) > 2 or value == "mesh":
        raise ValueError(f"'{value}' is not a Gateway: give `name` or `namespace/name` (the mesh is always bound)")
    for part in parts:
        check_dns1123_label(part, "a Gateway's namespace and name")
    return value


def check_tester_header(value: str) -> str:
    check_header_name(value)
    if value.lower() in ("cookie", "set-cookie"):
        raise ValueError(f"testers match the whole value of one request header, and a browser's '{value}' header "
                         "holds all of its cookies at once, so it would rarely match: name a header of its own "
                         "(for example X-Canary: always) that the testers' client or an edge proxy sets")
    return value


def check_sticky_header(value: str) -> str:
    check_header_name(value)
    if value.lower() in ("cookie", "set-cookie"):
        raise ValueError(f"the '{value}' header holds all of a client's cookies: write `sticky: {{cookie: NAME}}` "
                         "to keep clients on a version by one cookie")
    return value


def check_safe_value(value: str, what: str = "") -> str:
    if len(value) > 128 or not SAFE_VALUE.fullmatch(value):
        raise ValueError(
            f"{_subject(what, value)} may contain only letters, digits and . _ ~ : / @ + = -, "
            "start with a letter or digit, and be at most 128 characters"
        )
    return value


def check_hostname(value: str, what: str = "") -> str:
    text = value[2:] if value.startswith("*.") else value
    if len(value) > 253 or not text:
        raise ValueError(f"{_subject(what, value)} is not a DNS name (at most 253 characters)")
    for label in text.split("."):
        if len(label) > MAX_LABEL or not HOST_LABEL.fullmatch(label):
            raise ValueError(
                f"{_subject(what, value)} is not a lower-case DNS name: each dot-separated part is 1-63 "
                "letters, digits or '-', not starting or ending with '-'"
            )
    return value


def check_service_host(value: str, what: str = "") -> str:
    """The host clients send: a DNS name (Ingress rules and HTTPRoute hostnames refuse IP addresses)."""
    check_hostname(value, what)
    if IPV4.fullmatch(value):
        raise ValueError(
            f"{_subject(what, value)} is an IP address; routers match requests by host name "
            "(an Ingress host and an HTTPRoute hostname must be DNS names): give the name clients use"
        )
    return value


def check_url_path(value: str, what: str = "") -> str:
    dotted = "/../" in value + "/" or "/./" in value + "/"
    if len(value) > 1024 or not URL_PATH.fullmatch(value) or "//" in value or dotted:
        raise ValueError(
            f"{_subject(what, value)} must start with '/' and contain only letters, digits and / . _ ~ -, "
            "without empty, '.' or '..' segments"
        )
    return value


def check_server_address(value: str) -> tuple[str, int]:
    """``10.0.0.11:8080`` or ``backend-1.internal:8080`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"server '{value}' must be HOST:PORT, e.g. '10.0.0.11:8080'")
    number = int(port)
    if not 1 <= number <= 65535 or port != str(number):
        raise ValueError(f"server '{value}' has port {port}; a port is 1-65535")
    if IPV4.fullmatch(host):
        if any(int(part) > 255 or (len(part) > 1 and part.startswith("0")) for part in host.split(".")):
            raise ValueError(f"server '{value}' is not a valid IPv4 address")
    else:
        check_hostname(host, "server host")
    return host, number


def check_env_var(value: str) -> str:
    if not ENV_VAR.fullmatch(value) or len(value) > 128:
        raise ValueError(
            f"environment variable '{value}' must be upper-case letters, digits and '_', not starting with a digit"
        )
    return value


def check_flag_key(value: str, what: str = "") -> str:
    if not FLAG_KEY.fullmatch(value) or len(value) > 63:
        raise ValueError(
            f"{_subject(what, value)} must be lower-case letters, digits and '_', starting with a letter, at most 63"
        )
    return value


def check_stage_name(value: str) -> str:
    if value == "rollback":
        raise ValueError("'rollback' is reserved: `current: rollback` means everything back on stable")
    if len(value) > 40 or not STAGE_NAME.fullmatch(value):
        raise ValueError(
            f"stage name '{value}' must be lower-case letters, digits and '-', starting with a letter, at most 40"
        )
    return value


def controller_name(environment: str | None, namespace: str, name: str) -> str:
    """The Argo CD Application and Flux Kustomization of a rollout: its folder's parts joined by '-', at most 63
    characters (Argo CD puts it in a label); a longer join keeps 50 and adds a hash of the parts, so that two
    long names that begin alike never meet."""
    parts = [p for p in (environment, namespace, name) if p]
    joined = "-".join(parts)
    if len(joined) <= 63:
        return joined
    return joined[:50].rstrip("-") + "-" + short_hash(*parts, length=12)


def short_hash(*parts: str, length: int = 12) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return digest[:length]
