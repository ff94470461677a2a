"""Structured outputs -> deterministic text: YAML, JSON, and the generated-file header.

Targets build Python data and call these functions; no YAML or JSON is ever
produced by templating.  Strings that a YAML 1.1 reader (Go's yaml.v2, used by
kubectl, Prometheus and Alertmanager) or a YAML 1.2 reader would take for a
boolean, a null or a number are quoted, so ``"yes"``, ``"on"``, ``"1:30"`` and
``"1e3"`` stay strings.  PyYAML's libyaml emitter writes the YAML: the output
is machine-made, and it is an order of magnitude faster than a pure-Python
emitter on fleets of specs (ruamel.yaml reads specs, where comments and
positions matter).  The representer is PyYAML's part in Python: :class:`_OutputDumper`
builds the nodes directly from the few types targets use, without alias tracking, and
remembers how each scalar resolves.  JSON is written by orjson (deterministic bytes,
keys sorted where asked, no float drift between runs).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

GENERATOR = "rollout"

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# PyYAML's resolver is YAML 1.1: it quotes what a 1.1 reader would take for a
# boolean, null, number or timestamp.  These are the plain scalars it leaves
# unquoted that another reader would not take for strings: YAML 1.2 numbers,
# and the one-letter booleans of Go's yaml.v2.
_YAML12_ONLY = re.compile(
    r"^([yYnN]|0o[0-7]+|[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$"
)


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_RESOLVED: dict[tuple[str, tuple[bool, bool]], str] = {}


def _str_node(value: str) -> ScalarNode:
    if "\n" in value and not any(line != line.rstrip() for line in value.split("\n")) and not value.startswith(" "):
        return ScalarNode(_STR, value, style="|")
    if _YAML12_ONLY.match(value):
        return ScalarNode(_STR, value, style='"')
    return ScalarNode(_STR, value)


def _float_text(data: float) -> str:
    if data != data:
        return ".nan"
    if data in (float("inf"), float("-inf")):
        return ".inf" if data > 0 else "-.inf"
    value = repr(data).lower()
    return value.replace("e", ".0e", 1) if "." not in value and "e" in value else value


def node(data: Any) -> Node:
    """The YAML node of plain data (dict, list, tuple, str, int, float, bool, None); nodes pass through, so a
    part written into two files is represented once."""
    kind = type(data)
    if kind is str:
        return _str_node(data)
    if kind is dict:
        return MappingNode(_MAP, [(node(k), node(v)) for k, v in data.items()], flow_style=False)
    if kind is list or kind is tuple:
        return SequenceNode(_SEQ, [node(item) for item in data], flow_style=False)
    if kind is bool:
        return ScalarNode("tag:yaml.org,2002:bool", "true" if data else "false")
    if kind is int:
        return ScalarNode("tag:yaml.org,2002:int", str(data))
    if kind is float:
        return ScalarNode("tag:yaml.org,2002:float", _float_text(data))
    if data is None:
        return ScalarNode("tag:yaml.org,2002:null", "null")
    if isinstance(data, Node):
        return data
    raise TypeError(f"cannot write {kind.__name__} as YAML")


class _OutputDumper(_Dumper):  # type: ignore[misc, valid-type]  # libyaml's dumper when present, else PyYAML's
    """Block style, keys in the order the target built them, no line wrapping; nodes built without aliases."""

    def represent(self, data: Any) -> None:
        self.serialize(node(data))

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not ScalarNode or len(value) > 64:  # long values (a dashboard in a ConfigMap) are not kept
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        found = _RESOLVED.get(key)
        if found is None:
            found = _RESOLVED[key] = super().resolve(kind, value, implicit)
            if len(_RESOLVED) > 20_000:
                _RESOLVED.clear()
        return found


def yaml_text(documents: Any | list[Any], header: str | None = None, multi: bool = False) -> str:
    """One document (or several, when ``multi``) as YAML, preceded by ``header`` as comments."""
    body: str = yaml.dump_all(list(documents) if multi else [documents], None, _OutputDumper, explicit_start=multi,
                              sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 30, indent=2)
    return (comment(header, "#") if header else "") + body


def read_yaml(text: str) -> list[Any]:
    """The documents of a generated YAML file (a fast C parser; these files are the compiler's own)."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


YAMLError = yaml.YAMLError


def json_text(data: Any, sort_keys: bool = True) -> str:
    """Two-space indented JSON and a final newline; keys sorted unless the target's order matters."""
    options = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    return orjson.dumps(data, option=options).decode()


def comment(text: str, prefix: str = "#") -> str:
    return "".join(f"{prefix} {line}".rstrip() + "\n" for line in text.splitlines())


def header(source_path: str) -> str:
    """The first lines of every generated file that allows comments (the spec's hash is in the rollout's
    .rollout-manifest, not here: a change of the spec changes only the files whose content it changes)."""
    return (
        f"Generated by {GENERATOR} from {source_path}.\n"
        "Do not edit: change the spec and run `rollout compile`."
    )


FLEET_HEADER = (f"Generated by {GENERATOR} from every spec compiled together.\n"
                "Do not edit: change the specs and run `rollout compile`.")  # files under _fleet/


def markdown_header(source_path: str) -> str:
    """The header as an HTML comment, which no ``--`` in a file name can close early."""
    text = re.sub(r"-(?=-)", "- ", " ".join(header(source_path).splitlines()))
    return f"<!-- {text} -->\n"
