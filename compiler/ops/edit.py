"""edit: set a spec's ``current`` in place, changing one line and no other byte.

The spec is read with ruamel.yaml's round-trip loader, which gives the position
of every key and value.  The new value is spliced into the text at that
position, in the quoting style the old value used, so comments, key order,
quoting, indentation and blank lines stay as they were; ruamel.yaml then reads
the result back, and the edit is refused unless the result holds exactly the
old data with the one value changed.

For an environment that does not set ``current`` yet, the key is added: as the
first entry of a flow mapping (``production: {}`` becomes ``production:
{current: x}``, one changed line) or as a new line under the environment's key
of a block mapping (one added line).

ruamel.yaml reads the text with every tab as a space (same offsets, same structure: a tab is only
separation or content where the spec's own loader accepts it, and ruamel.yaml refuses some of those),
and without a byte-order mark, which it drops from the first line's columns.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

from compiler.diagnostics import Diagnostic, SpecError
from compiler.spec.load import parse_text

KEY = "current"
ROLLBACK = "rollback"
BOM = "\ufeff"
REASON_PREFIX = "rolled back:"
_SIMPLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RESOLVERS = (VersionedResolver(version=(1, 2)), VersionedResolver(version=(1, 1)))
_STR = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class Edit:
    text: str  # the whole new spec text
    line: int  # 1-based line changed (or added)
    old: str | None  # the value before (None: the key was added)
    new: str
    note: str | None = None  # what the edit could not do as asked (and did without)


class EditError(Exception):
    def __init__(self, path: str, line: int, col: int, message: str):
        self.diagnostic = Diagnostic(path, line, col, "error", message, "edit")
        super().__init__(self.diagnostic.text())


def _plain_is_string(value: str) -> bool:
    return all(r.resolve(ScalarNode, value, (True, False)) == _STR for r in _RESOLVERS)


def scalar_token(value: str, style: str) -> str:
    """``value`` as a YAML scalar in ``style`` ("plain", "'" or '"'); plain only where it stays a string."""
    if not _SIMPLE.fullmatch(value):
        raise ValueError(f"'{value}' is not a stage name")
    if style == "plain" and not _plain_is_string(value):
        style = '"'
    return value if style == "plain" else f"{style}{value}{style}"


def _load(text: str, path: str) -> Any:
    yaml = YAML(typ="rt")
    try:
        return yaml.load(text.replace("\t", " "))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise EditError(path, line, col, f"cannot read the spec: {getattr(exc, 'problem', None) or exc}") from None


def _own(node: CommentedMap, key: str) -> bool:
    """``key`` is written in ``node`` itself (not merged into it from an anchor with ``<<``)."""
    positions = node.lc.data  # None for an empty mapping
    return key in positions if positions is not None else key in node


def _mapping_at(root: Any, environment: str | None, path: str) -> CommentedMap:
    if not isinstance(root, CommentedMap):
        raise EditError(path, 1, 1, "a spec is a mapping (apiVersion, kind, metadata, ...)")
    if environment is None:
        return root
    envs = root.get("environments")
    if not isinstance(envs, CommentedMap):
        raise EditError(path, 1, 1, f"--env {environment}: the spec has no `environments`")
    if environment not in envs:
        line, col = envs.lc.line + 1, envs.lc.col + 1
        known = ", ".join(str(k) for k in envs)
        raise EditError(path, line, col, f"no environment '{environment}' in `environments` ({known})")
    node = envs[environment]
    if not isinstance(node, CommentedMap):
        line, col = envs.lc.key(environment)
        raise EditError(path, line + 1, col + 1, f"environment '{environment}' must be a mapping of overrides")
    return node


def _replace(lines: list[str], node: CommentedMap, value: str, reason: str | None, path: str) -> tuple[int, str]:
    line_no, col = node.lc.value(KEY)
    line = lines[line_no]
    old = str(node[KEY])
    quote = line[col] if line[col] in "'\"" else ""
    token = f"{quote}{old}{quote}"
    if not line.startswith(token, col) or not _SIMPLE.fullmatch(old):
        raise EditError(path, line_no + 1, col + 1, f"cannot edit `{KEY}` in place: write it as a plain stage name")
    rest = line[col + len(token):]
    body = rest.rstrip("\r\n")
    newline = rest[len(body):]
    # The line's own comment stays; the reason of an earlier rollback (the line's last comment, after a block
    # value or after the rest of a flow mapping) no longer applies once the value leaves rollback, or when a
    # new reason replaces it. _verify proves the data did not change.
    marker = f"# {REASON_PREFIX}"
    at = body.find(marker) if old == ROLLBACK else -1
    while at > 0 and body[at - 1] not in " \t":
        at = body.find(marker, at + 1)
    tail = body[:at].rstrip() if at > 0 else body
    if reason is not None:
        tail += f"  # {REASON_PREFIX} {one_line(reason)}"
    lines[line_no] = line[:col] + scalar_token(value, quote or "plain") + tail + newline
    return line_no + 1, old


def _insert(lines: list[str], root: CommentedMap, environment: str, value: str, reason: str | None,
            path: str) -> tuple[int, str | None]:
    """``current`` added to the environment's mapping; (line, what could not be done as asked)."""
    comment = f"  # {REASON_PREFIX} {one_line(reason)}" if reason is not None else ""
    return _add(lines, root, environment, f"{KEY}: {scalar_token(value, 'plain')}", comment, path)


def _add(lines: list[str], root: CommentedMap, environment: str, entry: str, comment: str,
         path: str) -> tuple[int, str | None]:
    """``entry`` (``key: value``) added to the environment's mapping, with ``comment`` at the end of its line:
    first in a flow mapping (``{entry, ...}``), or a new line under the environment's key of a block mapping.
    Returns the 1-based line changed or added, and a note when the comment had no place (and was left out)."""
    envs = root["environments"]
    node = envs[environment]
    line_no, col = envs.lc.value(environment)
    line = lines[line_no]
    if line.startswith("{", col):
        rest = line[col + 1:]
        sep = "" if rest.lstrip().startswith("}") else ", "
        body = rest.rstrip("\r\n")
        note = None
        if comment and not body.rstrip().endswith("}"):
            comment, note = "", ("a reason is recorded only where the flow mapping ends on its line with no comment "
                                 "after it: not recorded")
        end = rest[len(body):]
        lines[line_no] = line[:col + 1] + entry + sep + (body.rstrip() + comment if comment else body) + end
        return int(line_no) + 1, note
    own = [k for k in node if _own(node, k)]
    if not own:
        raise EditError(path, line_no + 1, col + 1, f"cannot add `{entry.split(':')[0]}` to environment "
                        f"'{environment}' in place")
    key_line, _ = envs.lc.key(environment)
    _, indent = node.lc.key(own[0])
    _insert_line(lines, key_line + 1, " " * indent + entry + comment)
    return int(key_line) + 2, None


def _insert_line(lines: list[str], at: int, text: str) -> None:
    """``text`` inserted as line ``at`` (0-based), ended as the line before it is (which gets an end of line
    when it was the last and had none)."""
    before = lines[at - 1]
    ending = _newline(before)
    if not before.endswith(("\n", "\r")):
        lines[at - 1] = before + ending
    lines.insert(at, text + ending)


def _newline(line: str) -> str:
    """The line ending of ``line`` (a spec written with CRLF keeps CRLF), LF on a last line without one."""
    return line[len(line.rstrip("\r\n")):] or "\n"


def one_line(text: str) -> str:
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:200]


def _without_bom(edit: Callable[[str], Edit], text: str) -> Edit:
    """``edit`` of the text after a byte-order mark, which the new text keeps."""
    if not text.startswith(BOM):
        return edit(text)
    done = edit(text[1:])
    return Edit(BOM + done.text, done.line, done.old, done.new, done.note)


def set_current(text: str, value: str, environment: str | None, path: str, reason: str | None = None) -> Edit:
    """The spec ``text`` with ``current`` (or ``environments.<environment>.current``) set to ``value``."""
    return _without_bom(lambda body: _set_current(body, value, environment, path, reason), text)


def _set_current(text: str, value: str, environment: str | None, path: str, reason: str | None) -> Edit:
    root = _load(text, path)
    node = _mapping_at(root, environment, path)
    if not _SIMPLE.fullmatch(value):
        row, col = node.lc.value(KEY) if _own(node, KEY) else (0, 0)
        raise EditError(path, row + 1, col + 1, f"'{value}' is not a stage name (nor 'rollback')")
    lines = text.splitlines(keepends=True)
    note = None
    if _own(node, KEY):
        if str(node[KEY]) == value and reason is None:
            return Edit(text, node.lc.value(KEY)[0] + 1, value, value)  # as it is, with its comment
        line, old = _replace(lines, node, value, reason, path)
    else:
        if environment is None:
            raise EditError(path, 1, 1, f"the spec has no `{KEY}`")
        (line, note), old = _insert(lines, root, environment, value, reason, path), None
    new_text = "".join(lines)
    _verify(text, new_text, environment, value, path, line)
    return Edit(new_text, line, old, value, note)


def _same_but(old_text: str, new_text: str, environment: str | None, key: str, value: object, path: str,
              line: int) -> None:
    """The new text reads as the old data with ``key`` (at the top level or in the environment) set to ``value``."""
    try:  # tabs read as spaces, as _load reads them (the candidate is analysed by the spec's own loader too)
        before, _, _ = parse_text(old_text.replace("\t", " "), path)
        after, _, _ = parse_text(new_text.replace("\t", " "), path)
    except SpecError as exc:
        d = exc.diagnostics[0]
        raise EditError(path, d.line, d.col, f"the edit would not leave a valid YAML file: {d.message}") from None
    expected = copy.deepcopy(before)
    target = expected if environment is None else expected["environments"][environment]
    target[key] = value
    if after != expected:
        raise EditError(path, line, 1, f"cannot set `{key}` without changing other values; edit the spec by hand")


def _verify(old_text: str, new_text: str, environment: str | None, value: str, path: str, line: int) -> None:
    """The new text reads as the old data with the one value set, and differs in one line."""
    _same_but(old_text, new_text, environment, KEY, value, path, line)
    old_lines, new_lines = old_text.splitlines(keepends=True), new_text.splitlines(keepends=True)
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    if len(new_lines) == len(old_lines):
        ok = len(changed) <= 1
    else:
        added = len(new_lines) - len(old_lines) == 1
        ok = added and new_lines[:line - 1] + new_lines[line:] == old_lines
    if not ok:
        raise EditError(path, line, 1, f"cannot set `{KEY}` by changing a single line; edit the spec by hand")


# --------------------------------------------------------------------------- approvals

APPROVED = "approved"


def approval_token(stage: str, by: str, at: str) -> str:
    """``{stage: NAME, by: "WHO", at: "TIME"}``: one line, quoted where a person's words could be read as YAML
    (a JSON string is a YAML double-quoted scalar; letters beyond ASCII are written as they are)."""
    import json

    if not _SIMPLE.fullmatch(stage):
        raise ValueError(f"'{stage}' is not a stage name")
    who = json.dumps(one_line(by), ensure_ascii=False)
    return f"{{stage: {scalar_token(stage, 'plain')}, by: {who}, at: {json.dumps(at)}}}"


def record_approval(text: str, stage: str, by: str, at: str, environment: str | None, path: str) -> Edit:
    """The spec ``text`` with ``approved`` (at the top level or in the environment) set to the approval, on one
    line: replacing the one there, added after ``current``, or added to the environment's mapping (every other
    byte kept)."""
    return _without_bom(lambda body: _record_approval(body, stage, by, at, environment, path), text)


def _record_approval(text: str, stage: str, by: str, at: str, environment: str | None, path: str) -> Edit:
    root = _load(text, path)
    node = _mapping_at(root, environment, path)
    token = approval_token(stage, by, at)
    lines = text.splitlines(keepends=True)
    old = None
    if _own(node, APPROVED):
        key_line, key_col = node.lc.key(APPROVED)
        value = node[APPROVED]
        end_line = value.lc.line if hasattr(value, "lc") else key_line
        line = lines[key_line]
        if end_line != key_line or not line.rstrip("\r\n").rstrip().endswith("}") or line.lstrip().startswith("{"):
            raise EditError(path, key_line + 1, key_col + 1, f"cannot replace `{APPROVED}` in place: write it on "
                            "one line as a flow mapping {stage, by, at}, or remove it")
        newline = line[len(line.rstrip("\r\n")):]
        lines[key_line] = line[:key_col] + f"{APPROVED}: {token}" + newline
        changed = key_line + 1
        old = str(dict(value)) if isinstance(value, dict) else None
    elif _own(node, KEY) and not _flow(lines, node):
        key_line, key_col = node.lc.key(KEY)
        _insert_line(lines, key_line + 1, " " * key_col + f"{APPROVED}: {token}")
        changed = key_line + 2
    elif environment is not None:
        changed, _ = _add(lines, root, environment, f"{APPROVED}: {token}", "", path)
    else:
        line, col = (node.lc.line + 1, node.lc.col + 1)
        raise EditError(path, line, col, f"cannot add `{APPROVED}` here: write `current` in block style (one key "
                        "per line)")
    new_text = "".join(lines)
    _same_but(text, new_text, environment, APPROVED, {"stage": stage, "by": one_line(by), "at": at}, path, changed)
    return Edit(new_text, changed, old, token)


def _flow(lines: list[str], node: CommentedMap) -> bool:
    """The mapping is written in flow style (``{current: x, ...}``) on its line."""
    line, col = node.lc.key(KEY)
    return col > 0 and "{" in lines[line][:col]
