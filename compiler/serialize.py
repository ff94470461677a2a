"""Structured outputs -> deterministic text: YAML, JSON, and the generated-file header.

Targets build Python data and call these functions; no YAML or JSON is ever
produced by templating.  Strings that a YAML 1.1 reader (Go's yaml.v2, used by
kubectl, Prometheus and Alertmanager) or a YAML 1.2 reader would take for a
boolean, a null or a number are quoted, so ``"yes"``, ``"on"``, ``"1:30"`` and
``"1e3"`` stay strings.  The bytes are those of PyYAML's libyaml emitter (ruamel.yaml
reads specs, where comments and positions matter): block mappings and sequences of
ASCII scalars, most of what targets write, are laid out in Python exactly as libyaml
lays them out (see "the block layout" below); everything else goes through libyaml,
with :mod:`compiler.libyaml` building the nodes directly from the few types targets use.
JSON is written by orjson (deterministic bytes, keys sorted where asked, no float
drift between runs).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import yaml

from compiler import libyaml

GENERATOR = "rollout"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML12_ONLY = libyaml.YAML12_ONLY
_float_text = libyaml.float_text


def yaml_text(documents: Any | list[Any], header: str | None = None, multi: bool = False) -> str:
    """One document (or several, when ``multi``) as YAML, preceded by ``header`` as comments."""
    docs = list(documents) if multi else [documents]
    try:
        body = _block_documents(docs, multi)
    except _Unusual:
        body = _libyaml(docs, multi)
    return (comment(header, "#") if header else "") + body


def block_yaml(document: dict[str, Any]) -> str | None:
    """A mapping as :func:`yaml_text` writes it (no header) when the block layout writes it alone; None when
    libyaml would have a say. Such text nests: under a key, each line indented by two spaces is what
    :func:`yaml_text` writes for the mapping there (see :func:`nested_yaml`)."""
    try:
        return _block_documents([document], False)
    except _Unusual:
        return None


def nested_yaml(document: dict[str, Any], key: str, block: str, header: str | None = None) -> str | None:
    """:func:`yaml_text` of ``document`` with ``key`` added last, whose value :func:`block_yaml` wrote as
    ``block``; None when libyaml would write ``document`` (write the whole with :func:`yaml_text`)."""
    head = block_yaml(document) if document else ""
    if head is None:
        return None
    return (comment(header, "#") if header else "") + head + _key(key) + "\n" + _indented(block, "  ")


def _libyaml(docs: list[Any], multi: bool) -> str:
    return libyaml.dump(docs, multi)


# --------------------------------------------------------------------------- the block layout, in Python
#
# Most of what targets write is block mappings and sequences of short ASCII strings and numbers.  Calling
# into libyaml costs two Python callbacks per scalar (the resolver) and a node object per value, more than
# the layout itself; so the layout is written here, byte for byte as libyaml writes it, and every scalar
# this code does not decide alone (non-ASCII, control characters, several lines) is written by libyaml on
# its own and placed.  Anything else (keys that are not short ASCII strings, a scalar at the root)
# goes to libyaml whole.  tests/test_serialize.py holds the two writers to the same bytes.


class _Unusual(Exception):
    """Data the block layout leaves to libyaml."""


_ASCII_LINE = re.compile(r"[\x20-\x7e]*")
_ASCII_TEXT = re.compile(r"[\x20-\x7e\n]*")
# What keeps an ASCII line from being a plain scalar in block context (libyaml's analysis): an indicator
# first, a space first or last, ": " or " #" inside, a ":" last, a document marker first.
_NOT_PLAIN = re.compile(r"[-?:](?: |$)|[#,\[\]{}&*!|>'\"%@`]| |(?:---|\.\.\.)(?: |$)|.*(?:: | #|:$| $)")
_OTHER_BREAKS = re.compile("[\r\x85\u2028\u2029]")  # line breaks to libyaml besides "\n"
_IMPLICIT = libyaml.Dumper.yaml_implicit_resolvers  # PyYAML's resolver table (first character -> tag, pattern)
_SCALARS: dict[str, str] = {}  # string -> its text as a block value (literal blocks indented for column 0)
_KEYS: dict[str, str] = {}  # string -> its text as a mapping key, with the colon


def _string(value: str) -> str:
    text = _SCALARS.get(value)
    if text is None:
        if _ASCII_LINE.fullmatch(value):
            text = _line(value)
        elif _ASCII_TEXT.fullmatch(value) and not value.startswith(("\n", " ")) and not value.endswith("\n\n"):
            text = _literal(value)
        else:
            text = _alone(value)
        if len(value) <= 256:
            _keep(_SCALARS, value, text)
    return text


def _keep(memo: dict[Any, str], key: Any, text: str) -> str:
    """``text`` remembered under ``key``, in a memo emptied when it grows past 20,000 entries."""
    if len(memo) > 20_000:
        memo.clear()
    memo[key] = text
    return text


def _line(value: str) -> str:
    """A one-line ASCII string as libyaml writes it given :func:`_str_node`'s style."""
    if _YAML12_ONLY.match(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    implicit = value != "" and not any(pattern.match(value) for _, pattern in _IMPLICIT.get(value[0], ()))
    if implicit and not _NOT_PLAIN.match(value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _literal(value: str) -> str:
    """ASCII lines as a literal block (indented for column 0), or as libyaml quotes them when a line ends in a
    space (which a literal block would keep but a reader could not see)."""
    block = _literal_block(value, "  ")
    return _alone(value) if block is None else block


def _literal_block(value: str, pad: str) -> str | None:
    """ASCII lines (what :func:`_string` writes as a literal block) with ``pad`` before each; None when libyaml
    would write them otherwise."""
    if value.startswith(("\n", " ")) or value.endswith("\n\n"):
        return None
    final = value.endswith("\n")
    body = value if final else value + "\n"
    if " \n" in body:
        return None
    return ("|\n" if final else "|-\n") + _indented(body, pad)


_LINE_START = re.compile(r"(?m)^(?=.)")  # the start of a line that is not empty


def _indented(lines: str, pad: str) -> str:
    """Lines (each ending in a newline) with ``pad`` before each that is not empty."""
    if not lines.endswith("\n") or lines.startswith("\n") or "\n\n" in lines:
        return _LINE_START.sub(pad, lines)
    return pad + lines[:-1].replace("\n", "\n" + pad) + "\n"  # no empty line: the same, without a regex


def _alone(value: str) -> str:
    """libyaml's text of one scalar on its own: one line, or a literal block (indented for column 0)."""
    text = _libyaml([value], False)
    head, _, rest = text.partition("\n")
    if (rest and (not head.startswith("|") or "+" in head)) or _OTHER_BREAKS.search(text):
        raise _Unusual  # quoted across lines, a kept final newline (which ends the document), other line breaks
    return text


def _key(key: Any) -> str:
    """A mapping key and its colon."""
    text = _KEYS.get(key)
    if text is None:
        if type(key) is not str or len(key) > 128 or not _ASCII_LINE.fullmatch(key):
            raise _Unusual  # a long key becomes a complex key ("? "), others need libyaml's judgement
        text = _keep(_KEYS, key, _string(key) + ":")
    return text


def _scalar(value: Any, indent: int) -> str:
    """A scalar's text after "key: " or "- ", with its newline; literal lines indented under ``indent``."""
    kind = type(value)
    if kind is str:
        if indent and len(value) > 256 and "\n" in value and _ASCII_TEXT.fullmatch(value):
            block = _literal_block(value, " " * (indent + 2))
            if block is not None:  # a long text (a file in a ConfigMap): indented once, where it goes
                return block
        text = _string(value)
        if "\n" not in text:
            return text + "\n"
        if not indent:
            return text
        head, _, lines = text.partition("\n")
        return head + "\n" + _indented(lines, " " * indent)
    if kind is bool:
        return "true\n" if value else "false\n"
    if kind is int:
        return f"{value}\n"
    if kind is float:
        return _float_text(value) + "\n"
    if value is None:
        return "null\n"
    raise _Unusual


def _block_mapping(data: dict[Any, Any], indent: int, out: list[str], inline: bool) -> None:
    pad = " " * indent
    for key, value in data.items():
        out.append(_key(key) if inline else pad + _key(key))
        inline = False
        kind = type(value)
        if kind is dict:
            if value:
                out.append("\n")
                _block_mapping(value, indent + 2, out, False)
            else:
                out.append(" {}\n")
        elif kind is list or kind is tuple:
            if value:
                out.append("\n")
                _block_sequence(value, indent, out, False)  # libyaml does not indent a sequence in a mapping
            else:
                out.append(" []\n")
        else:
            out.append(" " + _scalar(value, indent))


def _block_sequence(items: list[Any] | tuple[Any, ...], indent: int, out: list[str], inline: bool) -> None:
    dash = " " * indent + "- "
    for item in items:
        out.append("- " if inline else dash)
        inline = False
        kind = type(item)
        if kind is dict:
            if item:
                _block_mapping(item, indent + 2, out, True)
            else:
                out.append("{}\n")
        elif kind is list or kind is tuple:
            if item:
                _block_sequence(item, indent + 2, out, True)
            else:
                out.append("[]\n")
        else:
            out.append(_scalar(item, indent))


def _block_documents(docs: list[Any], multi: bool) -> str:
    out: list[str] = []
    for doc in docs:
        kind = type(doc)
        if kind is dict and doc:
            out.append("---\n" if multi else "")
            _block_mapping(doc, 0, out, False)
        elif (kind is list or kind is tuple) and doc:
            out.append("---\n" if multi else "")
            _block_sequence(doc, 0, out, False)
        else:
            raise _Unusual  # a scalar or an empty collection at the root
    return "".join(out)


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
