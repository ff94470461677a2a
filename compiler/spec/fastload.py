"""The loader's fast path: libyaml's C parser, ruamel.yaml's YAML 1.2 rules.

Most specs are plain YAML: mappings, sequences and scalars, no anchors, no tags.
Such a document is read here from libyaml's events (C), with every plain
scalar resolved by ruamel.yaml's YAML 1.2 resolver and numbers built by its
constructor, so the data and the positions are those of the full loader
(:func:`compiler.spec.load.parse_text`), which a test holds on a corpus.
Anything else (a syntax error, a duplicate key, an anchor or alias, an explicit
tag, a directive, a key that is not a string, a control character, a nesting
or size past the loader's bounds) raises :class:`Decline`, and the full loader
reads the document and reports it exactly as it always does.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

Loc = tuple[Any, ...]
Position = tuple[int, int]

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_Loader = getattr(yaml, "CSafeLoader", None)


class Decline(Exception):
    """The fast path does not read this document: the full loader will."""


@lru_cache(maxsize=1)
def _ruamel() -> tuple[VersionedResolver, Any]:
    loader = YAML(typ="rt")
    return VersionedResolver(version=(1, 2)), loader.constructor


@lru_cache(maxsize=8192)
def _plain(value: str) -> Any:
    """A plain scalar as ruamel.yaml's YAML 1.2 round-trip loader reads it (then made a plain Python value)."""
    resolver, constructor = _ruamel()
    tag = resolver.resolve(ScalarNode, value, (True, False))
    if tag == _STR:
        return value
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return value.lower() == "true"
    node = ScalarNode(tag, value)
    try:
        if tag == _INT:
            return int(constructor.construct_yaml_int(node))
        if tag == _FLOAT:
            return float(constructor.construct_yaml_float(node))
    except (ValueError, TypeError, OverflowError, IndexError):
        raise Decline(f"a {tag} the full loader reports") from None
    raise Decline(f"a plain scalar of type {tag}")


#: What a spec may not hold: control characters but tab and line breaks, C1 controls, lone surrogates, and the
#: bidirectional embeddings, overrides and isolates, which show text in another order than it is read
#: (the escapes are read by re).
NON_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def _is_text(value: str) -> bool:
    return NON_TEXT.search(value) is None


class TooDeep(Exception):
    """The document nests deeper than the loaders allow, from the node at (line, column)."""

    def __init__(self, line: int, col: int):
        super().__init__(f"{line}:{col}")
        self.line, self.col = line, col


def flow_too_deep(text: str, max_depth: int) -> tuple[int, int] | None:
    """Where flow collections (``[``, ``{``) first nest deeper than ``max_depth``, quoted text and comments
    aside; None when they never do."""
    depth, line, col, quote = 0, 1, 0, ""
    previous = "\n"
    comment = False
    for char in text:
        col += 1
        if char == "\n":
            line, col, comment, previous = line + 1, 0, False, char
            continue
        if comment:
            continue
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and previous in " \t\n":
            comment = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return line, col
        elif char in "]}":
            depth = max(depth - 1, 0)
        previous = char
    return None


class _Frame:
    __slots__ = ("container", "loc", "key", "key_pos", "depth")

    def __init__(self, container: Any, loc: Loc, depth: int):
        self.container = container
        self.loc = loc
        self.key: str | None = None
        self.key_pos: Position = (1, 1)
        self.depth = depth


def load(text: str, max_nodes: int, max_depth: int) -> tuple[Any, dict[Loc, Position], dict[Loc, Position]]:
    """(data, key positions, value positions) of a plain YAML document; :class:`Decline` for anything else."""
    if _Loader is None or "%" in text[:1]:
        raise Decline("no libyaml, or a directive")
    if any(c in text for c in "\x85\u2028\u2029"):
        raise Decline("a character libyaml counts as a line break")
    keys: dict[Loc, Position] = {}
    values: dict[Loc, Position] = {}
    stack: list[_Frame] = []
    root: list[Any] = []
    nodes = 0
    documents = 0
    parser = _Loader(text)
    try:
        while True:
            event = parser.get_event()
            if event is None:
                break
            kind = type(event).__name__
            if kind in ("StreamStartEvent", "StreamEndEvent", "DocumentEndEvent"):
                continue
            if kind == "DocumentStartEvent":
                documents += 1
                if documents > 1 or getattr(event, "explicit", False) and getattr(event, "version", None):
                    raise Decline("several documents, or a directive")
            elif kind in ("MappingEndEvent", "SequenceEndEvent"):
                stack.pop()
            else:
                nodes += 1
                if nodes > max_nodes:
                    raise Decline("too many nodes")
                _node(event, kind, stack, root, keys, values, max_depth)
    except yaml.YAMLError as exc:
        deep = flow_too_deep(text, max_depth)
        if deep is not None:  # libyaml stops at 1,000 levels, long after ours: say where ours was passed
            raise TooDeep(*deep) from None
        raise Decline(f"invalid YAML: {exc}") from None
    finally:
        parser.dispose()
    if len(root) != 1:
        raise Decline("no document")
    return root[0], keys, values


def _node(event: Any, kind: str, stack: list[_Frame], root: list[Any], keys: dict[Loc, Position],
          values: dict[Loc, Position], max_depth: int) -> None:
    """A scalar, or the start of a mapping or sequence, put into its place."""
    if kind == "AliasEvent" or getattr(event, "anchor", None) is not None:
        raise Decline("an anchor or alias")
    pos = (event.start_mark.line + 1, event.start_mark.column + 1)
    if kind == "ScalarEvent":
        tag, implicit = event.tag, event.implicit
        if tag is not None and not (implicit[0] or implicit[1]):
            raise Decline("an explicit tag")
        if not _is_text(event.value):
            raise Decline("a control character")
        if event.value == "" and event.style in ("", None):
            raise Decline("an empty value")  # the loaders place its position differently
        value = _plain(event.value) if event.style in ("", None) and implicit[0] else event.value
        _place(stack, root, value, pos, keys, values)
        return
    if kind not in ("MappingStartEvent", "SequenceStartEvent"):
        raise Decline(kind)
    if event.tag is not None and not event.implicit:
        raise Decline("an explicit tag")
    container: Any = {} if kind == "MappingStartEvent" else []
    loc = _place(stack, root, container, pos, keys, values)
    depth = (stack[-1].depth + 1) if stack else 1
    if depth > max_depth:
        raise TooDeep(*pos)  # either loader refuses it: no need for the slow one to find out
    stack.append(_Frame(container, loc, depth))


def _place(stack: list[_Frame], root: list[Any], value: Any, pos: Position,
           keys: dict[Loc, Position], values: dict[Loc, Position]) -> Loc:
    """Put a node into its parent; its location in the data."""
    if not stack:
        root.append(value)
        return ()
    frame = stack[-1]
    container = frame.container
    if isinstance(container, list):
        loc = frame.loc + (len(container),)
        container.append(value)
        values[loc] = pos
        return loc
    if frame.key is None:
        if not isinstance(value, str):
            raise Decline("a key that is not a string")
        if value in container:
            raise Decline("a duplicate key")
        frame.key, frame.key_pos = value, pos
        return frame.loc
    key = frame.key
    loc = frame.loc + (key,)
    container[key] = value
    keys[loc] = frame.key_pos
    values[loc] = pos
    frame.key = None
    return loc
