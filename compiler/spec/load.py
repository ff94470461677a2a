"""load: YAML 1.2 text -> plain Python data, with the line and column of every node.

Hostile input is expected: the file size, the nesting depth and the number of
nodes after alias expansion are bounded; duplicate keys, tags, non-string keys
and multiple documents are errors.  Every failure becomes a located
:class:`~compiler.diagnostics.Diagnostic`.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode

from compiler.diagnostics import Diagnostic, SpecError
from compiler.sources import display_path
from compiler.spec import fastload

MAX_BYTES = 256 << 10  # a spec of hundreds of lines is a few kilobytes
MAX_NODES = 50_000  # after alias expansion
MAX_WRITTEN_NODES = 20_000  # as written: the largest real specs hold a few thousand
MAX_DEPTH = 64
_DIRECTIVE = re.compile(r"^%YAML[ \t]+(\S+)", re.M)
_LONG_NUMBER = re.compile(r"[0-9_]{4000,}")

Loc = tuple[Any, ...]


@dataclass
class Document:
    """One loaded spec: its data and where each part of it stands in the file."""

    path: str
    data: Any
    sha256: str
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    text: str = ""  # the source, for hints that read it (a `#` that began a comment)

    def swallowed_by_comment(self, loc: Loc) -> bool:
        """The key at ``loc`` has no value because what followed it began a comment: ``channel: #alerts``."""
        line, col = self.keys.get(loc, (0, 0))
        lines = self.text.splitlines()
        if not 0 < line <= len(lines):
            return False
        rest = lines[line - 1][col - 1:]
        key, colon, after = rest.partition(":")
        return bool(colon) and after.startswith((" #", "\t#"))

    def locate(self, loc: Loc, prefer_key: bool = True) -> tuple[int, int]:
        """The position of the deepest node along ``loc`` (1-based line and column)."""
        path: Loc = ()
        node = self.data
        for part in loc:
            if isinstance(node, dict) and isinstance(part, str) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            else:
                continue
            path = path + (part,)
        while path:
            table = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            for positions in table:
                if path in positions:
                    return positions[path]
            path = path[:-1]
        return (1, 1)

    def error(self, loc: Loc, message: str, code: str = "spec", prefer_key: bool = True) -> Diagnostic:
        line, col = self.locate(loc, prefer_key)
        return Diagnostic(self.path, line, col, "error", message, code)

    def warning(self, loc: Loc, message: str, code: str = "spec", prefer_key: bool = True) -> Diagnostic:
        line, col = self.locate(loc, prefer_key)
        return Diagnostic(self.path, line, col, "warning", message, code)


def _position_of_offset(raw: bytes, offset: int) -> tuple[int, int]:
    before = raw[:offset]
    line = before.count(b"\n") + 1
    col = offset - (before.rfind(b"\n") + 1) + 1
    return line, col


def _at(path: str, line: int, col: int, message: str, code: str = "yaml") -> SpecError:
    return SpecError([Diagnostic(path, line, col, "error", message, code)])


def decode(raw: bytes, path: str) -> str:
    if len(raw) > MAX_BYTES:
        raise _at(path, 1, 1, f"file is larger than {MAX_BYTES} bytes, the most a spec may be")
    if b"\x00" in raw:
        line, col = _position_of_offset(raw, raw.index(b"\x00"))
        raise _at(path, line, col, "file contains a NUL byte: this is binary data, not a YAML spec")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position_of_offset(raw, exc.start)
        raise _at(path, line, col, f"file is not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    index = _first_non_text(text)  # decoded UTF-8 holds no surrogate: this is a control character
    if index is not None:
        raise _at(path, *_offset_position(text, index), f"{_kind_of(text[index])} is not allowed in a spec")
    return text


def _kind_of(char: str) -> str:
    """What a character :func:`_first_non_text` found is, with its code point."""
    code = ord(char)
    if _is_control(char):
        return f"control character U+{code:04X}"
    if 0xD800 <= code <= 0xDFFF:
        return f"lone surrogate U+{code:04X}"
    return f"bidirectional control character U+{code:04X} (it shows text in another order than it is read)"


def _is_control(char: str) -> bool:
    code = ord(char)
    return char not in "\t\n\r" and (code < 0x20 or 0x7F <= code < 0xA0)


def _first_non_text(text: str) -> int | None:
    """The index of the first character a spec may not hold (a control character or a lone surrogate)."""
    found = fastload.NON_TEXT.search(text)
    return found.start() if found else None


def _text_problem(text: str) -> str | None:
    """What a string from the YAML (after its escapes) holds that is not text, or None."""
    index = _first_non_text(text)
    if index is None:
        return None
    kind = _kind_of(text[index])
    if kind.startswith("lone surrogate"):
        return f"a string holds the {kind}, which is not text"
    return f"a string holds the {kind}, which is not allowed in a spec"


def _yaml_message(exc: MarkedYAMLError) -> str:
    problem = (exc.problem or "invalid YAML").strip()
    if "found character '\\t'" in problem:
        return "tab character: YAML indentation must use spaces"
    if "found duplicate key" in problem:
        return problem.replace("found duplicate key", "duplicate key") + ": each key may appear once in a mapping"
    context = (exc.context or "").strip()
    return f"{problem} ({context})" if context else problem


class _Converter:
    """CommentedMap/Seq -> dict/list, recording positions and bounding the size."""

    def __init__(self, path: str):
        self.path = path
        self.nodes = 0
        self.keys: dict[Loc, tuple[int, int]] = {}
        self.values: dict[Loc, tuple[int, int]] = {}

    def _count(self, pos: tuple[int, int], depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _at(
                self.path, *pos,
                f"document expands to more than {MAX_NODES} nodes (aliases are expanded): refusing to load it",
                "yaml-size",
            )
        if depth > MAX_DEPTH:
            raise _at(self.path, *pos, f"document nests deeper than {MAX_DEPTH} levels", "yaml-size")

    def convert(self, node: Any, loc: Loc, pos: tuple[int, int], depth: int) -> Any:
        self._count(pos, depth)
        if isinstance(node, CommentedMap):
            out: dict[str, Any] = {}
            for key in node:
                key_pos = _lc(node, "key", key, pos)
                value_pos = _lc(node, "value", key, key_pos)
                if not isinstance(key, str):
                    raise _at(self.path, *key_pos, f"mapping key {key!r} is not a string", "yaml")
                problem = _text_problem(key)
                if problem:
                    raise _at(self.path, *key_pos, f"mapping key: {problem}", "yaml")
                self.keys[loc + (key,)] = key_pos
                self.values[loc + (key,)] = value_pos
                out[key] = self.convert(node[key], loc + (key,), value_pos, depth + 1)
            return out
        if isinstance(node, CommentedSeq):
            items = []
            for index, item in enumerate(node):
                item_pos = _lc(node, "item", index, pos)
                self.values[loc + (index,)] = item_pos
                items.append(self.convert(item, loc + (index,), item_pos, depth + 1))
            return items
        tag = getattr(getattr(node, "tag", None), "value", None)
        if isinstance(node, TaggedScalar) and tag == "tag:yaml.org,2002:str":
            return str(node.value)
        if isinstance(node, TaggedScalar) or (tag and not tag.startswith("tag:yaml.org,2002:")):
            shown = (tag or "?").replace("tag:yaml.org,2002:", "!!")
            raise _at(self.path, *pos, f"YAML tag {shown} is not supported in a spec", "yaml")
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, str):
            problem = _text_problem(node)
            if problem:
                raise _at(self.path, *pos, problem, "yaml")
            return str(node)
        if isinstance(node, (datetime.date, datetime.datetime)):
            return node.isoformat()
        raise _at(self.path, *pos, f"unsupported YAML value of type {type(node).__name__}", "yaml")


class _BoundedComposer(Composer):
    """Stops reading a document of more than MAX_WRITTEN_NODES nodes, before aliases are even expanded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.rollout_nodes = getattr(self, "rollout_nodes", 0) + 1
        if self.rollout_nodes > MAX_WRITTEN_NODES:
            mark = self.parser.peek_event().start_mark
            raise MarkedYAMLError(problem=f"document has more than {MAX_WRITTEN_NODES} nodes: refusing to load it",
                                  problem_mark=mark)
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        for key, _ in node.value:
            if not isinstance(key, ScalarNode):  # a complex key (`? [a, b]: 1`) is no field of a spec
                raise MarkedYAMLError(problem="a key must be a string, not a mapping or a list (`? ` begins such "
                                      "a key)", problem_mark=key.start_mark)
        return node


def _lc(node: Any, kind: str, key: Any, default: tuple[int, int]) -> tuple[int, int]:
    try:
        line, col = getattr(node.lc, kind)(key)
    except (KeyError, IndexError, TypeError, AttributeError):
        return default
    return line + 1, col + 1


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def parse_text(text: str, path: str) -> tuple[Any, dict[Loc, tuple[int, int]], dict[Loc, tuple[int, int]]]:
    directive = _DIRECTIVE.search(text)
    if directive and directive.group(1) != "1.2":
        raise _at(path, *_offset_position(text, directive.start()),
                  f"%YAML {directive.group(1)}: specs are read as YAML 1.2 only; remove the directive")
    long_number = _LONG_NUMBER.search(text)
    if long_number:
        raise _at(path, *_offset_position(text, long_number.start()),
                  "a run of more than 4000 digits: no value in a spec is that long")
    yaml = YAML(typ="rt")
    yaml.Composer = _BoundedComposer
    yaml.allow_duplicate_keys = False
    try:
        node = _load_separated_by_tabs(yaml, text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise _at(path, line, col, _yaml_message(exc)) from None
    except YAMLError as exc:
        raise _at(path, 1, 1, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise _at(path, 1, 1, f"document nests deeper than {MAX_DEPTH} levels", "yaml-size") from None
    converter = _Converter(path)
    data = converter.convert(node, (), (1, 1), 0)
    return data, converter.keys, converter.values


#: Tabs between tokens read as spaces, one at a time, before a spec is refused for its tabs.
MAX_TAB_RETRIES = 100


def _load_separated_by_tabs(yaml: YAML, text: str) -> Any:
    """``yaml.load(text)``, reading a tab that separates tokens on a line (``port:<TAB>8080``, a tab before a
    comment) as the space YAML 1.2 allows it to be, as libyaml does: ruamel.yaml's scanner refuses some. A tab
    that indents a line stays an error; so does one in a value, which the scanner reads as part of it."""
    for _ in range(MAX_TAB_RETRIES):
        try:
            return yaml.load(text)
        except MarkedYAMLError as exc:
            at = _separating_tab(text, exc)
            if at is None:
                raise
            text = f"{text[:at]} {text[at + 1:]}"
    return yaml.load(text)


def _separating_tab(text: str, exc: MarkedYAMLError) -> int | None:
    """The offset of the tab the scanner refused, when something other than indentation comes before it."""
    mark = exc.problem_mark
    if mark is None or "found character '\\t'" not in (exc.problem or ""):
        return None
    line, column = int(mark.line), int(mark.column)
    start = 0
    for _ in range(line):
        start = text.find("\n", start) + 1
        if start == 0:
            return None
    at = start + column + (1 if line == 0 and text.startswith("\ufeff") else 0)
    if at >= len(text) or text[at] != "\t" or not text[start:at].strip(" \t\ufeff"):
        return None
    return at


def read(text: str, path: str) -> tuple[Any, dict[Loc, tuple[int, int]], dict[Loc, tuple[int, int]]]:
    """Data and positions: libyaml's fast path for plain documents, the full loader for everything else."""
    try:
        return fastload.load(text, MAX_WRITTEN_NODES, MAX_DEPTH)
    except fastload.Decline:
        deep = fastload.flow_too_deep(text, MAX_DEPTH)
        if deep is None:
            return parse_text(text, path)
        raise _at(path, *deep, f"document nests deeper than {MAX_DEPTH} levels", "yaml-size") from None
    except fastload.TooDeep as deep:
        raise _at(path, deep.line, deep.col, f"document nests deeper than {MAX_DEPTH} levels", "yaml-size") from None


def load_bytes(raw: bytes, path: str) -> Document:
    text = decode(raw, path)
    if not text.strip() or all(line.lstrip().startswith("#") or not line.strip() for line in text.splitlines()):
        raise _at(
            path,
            1,
            1,
            "file is empty: expected a Rollout spec (apiVersion: rollout-compiler/v1, kind: Rollout)",
            "spec",
        )
    data, keys, values = read(text, path)
    if not isinstance(data, dict):
        raise _at(
            path, 1, 1, f"a spec is a mapping (apiVersion, kind, metadata, ...), not a {type(data).__name__}", "spec"
        )
    return Document(path=path, data=data, sha256=hashlib.sha256(raw).hexdigest(), keys=keys, values=values,
                    text=text)


def load_file(path: Path) -> Document:
    shown = display_path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _at(shown, 1, 1, f"cannot read file: {exc.strerror or exc}", "io") from None
    return load_bytes(raw, shown)
