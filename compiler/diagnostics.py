"""Located messages for users: ``path:line:col: severity: message``, as text, GitHub annotations or JSON."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Literal
from collections.abc import Iterable

Severity = Literal["error", "warning"]
MAX_MESSAGE = 2000  # characters of one message


#: Characters a located message never holds raw: controls (line breaks among them) and bidirectional controls.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub(_escaped, text) if _UNPRINTABLE.search(text) else text


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or f"\\u{ord(char):04x}"


@dataclass(frozen=True, order=True)
class Diagnostic:
    path: str
    line: int
    col: int
    severity: Severity
    message: str
    code: str = "spec"

    def __post_init__(self) -> None:
        if len(self.message) > MAX_MESSAGE:  # a message quotes values, which can be as long as a file
            cut = self.message[:MAX_MESSAGE]
            object.__setattr__(self, "message", f"{cut}... ({len(self.message) - MAX_MESSAGE} more characters)")

    def text(self) -> str:
        """One line, shown as read: the line breaks and controls of a value the message quotes are escaped."""
        return _printable(f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message}")

    def github(self) -> str:
        # Workflow commands: properties escape % \r \n : , ; the message escapes % \r \n.
        def prop(value: str) -> str:
            return (
                value.replace("%", "%25")
                .replace("\r", "%0D")
                .replace("\n", "%0A")
                .replace(":", "%3A")
                .replace(",", "%2C")
            )

        message = self.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return (
            f"::{self.severity} file={prop(self.path)},line={self.line},col={self.col},"
            f"title={prop('rollout ' + self.code)}::{message}"
        )


class SpecError(Exception):
    """Raised with every diagnostic of a file when it cannot be used."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(d.text() for d in self.diagnostics))


FORMATS = ("text", "github", "json")


def render(diagnostics: Iterable[Diagnostic], fmt: str) -> str:
    items = sorted(diagnostics)
    if fmt == "json":
        return json.dumps([asdict(d) for d in items], indent=2) + "\n"
    if fmt == "github":
        return "".join(d.github() + "\n" for d in items)
    return "".join(d.text() + "\n" for d in items)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def by_environment(found: Iterable[tuple[Diagnostic, str | None]]) -> list[Diagnostic]:
    """Diagnostics of a spec's environments, each finding once: the same message at the same place in several
    environments (a mistake in the base every environment inherits) names them all in one line."""
    envs: dict[tuple[str, int, int, str, str], tuple[Diagnostic, list[str]]] = {}
    for diagnostic, env in found:
        key = (diagnostic.path, diagnostic.line, diagnostic.col, diagnostic.severity, diagnostic.message)
        names = envs.setdefault(key, (diagnostic, []))[1]
        if env is not None and env not in names:
            names.append(env)
    out = []
    for d, names in envs.values():
        if names:
            quoted = [f"'{name}'" for name in sorted(names)]
            where = (f"environment {quoted[0]}" if len(quoted) == 1
                     else f"environments {', '.join(quoted[:-1])} and {quoted[-1]}")
            d = Diagnostic(d.path, d.line, d.col, d.severity, f"{d.message} ({where})", d.code)
        out.append(d)
    return sorted(out)
