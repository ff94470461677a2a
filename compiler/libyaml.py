"""The libyaml side of :mod:`compiler.serialize`: PyYAML's C emitter, fed nodes built from plain data.

A module of its own so that the native build (:mod:`compiler.native`) compiles the block-layout writer
and leaves this one, whose dumper subclasses a C extension's class, to the interpreter.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# PyYAML's resolver is YAML 1.1: it quotes what a 1.1 reader would take for a
# boolean, null, number or timestamp.  These are the plain scalars it leaves
# unquoted that another reader would not take for strings: YAML 1.2 numbers,
# and the one-letter booleans of Go's yaml.v2.
YAML12_ONLY = re.compile(
    r"^([yYnN]|0o[0-7]+|[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$"
)


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_RESOLVED: dict[tuple[str, tuple[bool, bool]], str] = {}


def _str_node(value: str) -> ScalarNode:
    if "\n" in value and not any(line != line.rstrip() for line in value.split("\n")) and not value.startswith(" "):
        return ScalarNode(_STR, value, style="|")
    if YAML12_ONLY.match(value):
        return ScalarNode(_STR, value, style='"')
    return ScalarNode(_STR, value)


def float_text(data: float) -> str:
    if data != data:
        return ".nan"
    if data in (float("inf"), float("-inf")):
        return ".inf" if data > 0 else "-.inf"
    value = repr(data).lower()
    return value.replace("e", ".0e", 1) if "." not in value and "e" in value else value


def node(data: Any) -> Node:
    """The YAML node of plain data (dict, list, tuple, str, int, float, bool, None), for libyaml."""
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
        return ScalarNode("tag:yaml.org,2002:float", float_text(data))
    if data is None:
        return ScalarNode("tag:yaml.org,2002:null", "null")
    raise TypeError(f"cannot write {kind.__name__} as YAML")


class _OutputDumper(Dumper):  # type: ignore[misc, valid-type]  # libyaml's dumper when present, else PyYAML's
    """Block style, keys in the order the target built them, no line wrapping; nodes built without aliases."""

    def represent(self, data: Any) -> None:
        self.serialize(node(data))

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not ScalarNode or len(value) > 64:  # long values (a dashboard in a ConfigMap) are not kept
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        found = _RESOLVED.get(key)
        if found is None:
            if len(_RESOLVED) > 20_000:
                _RESOLVED.clear()
            found = _RESOLVED[key] = super().resolve(kind, value, implicit)
        return found


def dump(docs: list[Any], multi: bool) -> str:
    """``docs`` as libyaml writes them in block style (a ``---`` before each when ``multi``)."""
    text: str = yaml.dump_all(docs, None, _OutputDumper, explicit_start=multi, sort_keys=False,
                              default_flow_style=False, allow_unicode=True, width=1 << 30, indent=2)
    return text
