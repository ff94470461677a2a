"""Quoting and validation for the router configuration languages: HAProxy and nginx.

Two kinds of helpers:

- ``*_problem`` functions say why a spec value cannot be expressed in a router's
  language (``None`` when it can).  Targets call them from ``lint`` so that the
  user gets a located error before anything is rendered.
- Filters turn a value into text for a template.  Strings that are data (tester
  values, paths of files) are quoted so that they land inert whatever they
  contain; names and hosts are checked against what the directive accepts;
  numbers are checked to be integers within the directive's range (``haproxy
  -c`` silently accepts ``weight 1.5`` or ``inter abc``).  A value a filter
  cannot write raises :class:`Unrepresentable`: lint or the spec language
  rejected such values before, so reaching it is a bug, never a broken file.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from collections.abc import Callable

# Characters no configuration line of either router may carry, quoted or not.
_LINE_BREAKERS = ("\n", "\r", "\x00")

# HAProxy sample-fetch arguments (``req.fhdr(NAME)``, ``req.cook(NAME)``) are parsed a second
# time, where ``,`` ``)`` quotes and backslashes are syntax: names there are restricted instead.
HAPROXY_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
HAPROXY_COOKIE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:/@+=\-]*$")
HAPROXY_PROXY_NAME = re.compile(r"^[A-Za-z0-9_.:\-]+$")  # proxy and server names (cfgparse's invalid_char)
# nginx reads a request header through $http_NAME (lower case, '-' -> '_'); headers with '_'
# are dropped by default (underscores_in_headers off), so only letters, digits and '-' work.
NGINX_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-]*$")
# ... and a cookie through $cookie_NAME, whose name is a variable name: letters, digits, '_'.
NGINX_COOKIE = re.compile(r"^[A-Za-z0-9_]+$")
NGINX_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # upstream names and variable names we generate
HOST = re.compile(r"^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$")  # a DNS name or an IPv4 address
SERVER_NAME = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$")  # nginx server_name, wildcard allowed
PATH = re.compile(r"^/[A-Za-z0-9/._~\-]*$")  # what names.check_url_path lets through
MAX_NAME = 128

Check = Callable[[str], "str | None"]


class Unrepresentable(ValueError):
    """A value reached a filter that cannot write it; lint should have rejected it."""


# --------------------------------------------------------------------------- checks for lint


def _problem(pattern: re.Pattern[str], message: str) -> Check:
    def check(name: str) -> str | None:
        return None if pattern.fullmatch(name) and len(name) <= MAX_NAME else message.format(name=name)

    return check


haproxy_header_problem = _problem(
    HAPROXY_HEADER,
    "the haproxy target reads header '{name}' with req.fhdr(); use only letters, digits, '-', '_' and '.'",
)
haproxy_cookie_problem = _problem(
    HAPROXY_COOKIE,
    "the haproxy target reads cookie '{name}' with req.cook(); use only letters, digits and . _ ~ : / @ + = -",
)
nginx_cookie_problem = _problem(
    NGINX_COOKIE, "the nginx target reads cookie '{name}' as a $cookie_NAME variable: use only letters, digits and '_'"
)


def nginx_header_problem(name: str) -> str | None:
    if NGINX_HEADER.fullmatch(name) and len(name) <= MAX_NAME:
        return None
    return (
        f"the nginx target reads header '{name}' as $http_{nginx_variable_part(name)}: use only letters, digits "
        "and '-' (nginx drops headers with '_' by default)"
    )


def name_problems(plan: Any, header_problem: Check, cookie_problem: Check) -> list[tuple[tuple[str, ...], str]]:
    """``(spec location, message)`` for each sticky or tester name a router cannot read."""
    out: list[tuple[tuple[str, ...], str]] = []
    if plan.sticky is not None:
        check = header_problem if plan.sticky.kind == "header" else cookie_problem
        problem = check(plan.sticky.name)
        if problem:
            out.append((("traffic", "sticky", plan.sticky.kind), problem))
    if plan.testers is not None:
        problem = header_problem(plan.testers.header)
        if problem:
            out.append((("traffic", "testers", "header"), problem))
    return out


def is_host_name(host: str) -> bool:
    """A DNS name (resolved by the router) rather than an IP address."""
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        return True


# --------------------------------------------------------------------------- filters of both languages


def _one_line(value: Any, what: str) -> str:
    text = str(value)
    if any(ch in text for ch in _LINE_BREAKERS):
        raise Unrepresentable(f"{what} {text!r} contains a line break or NUL")
    return text


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    """A filter that passes values matching ``pattern`` through and refuses the rest."""

    def write(value: Any) -> str:
        text = _one_line(value, what)
        if not pattern.fullmatch(text):
            raise Unrepresentable(f"{what} {text!r} has characters this directive does not accept")
        return text

    return write


def _checked(check: Check, what: str) -> Callable[[Any], str]:
    """A filter that passes names ``check`` accepts through and refuses the rest."""

    def write(value: Any) -> str:
        text = _one_line(value, what)
        problem = check(text)
        if problem:
            raise Unrepresentable(problem)
        return text

    return write


def integer(value: Any, low: int, high: int, what: str = "number") -> str:
    """An integer within ``[low, high]`` as text; anything else (bool, float, text) is refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unrepresentable(f"{what} {value!r} is not an integer")
    if not low <= value <= high:
        raise Unrepresentable(f"{what} {value} is outside {low}..{high}")
    return str(value)


def port(value: Any) -> str:
    return integer(value, 1, 65535, "port")


def seconds(value: Any) -> str:
    """A duration in whole seconds with the ``s`` unit both routers read (at most ~23 days, HAProxy's timer range)."""
    return integer(value, 1, 2_000_000, "duration in seconds") + "s"


def count(value: Any) -> str:
    """A small positive count (health check fall/rise, max_fails)."""
    return integer(value, 1, 1000, "count")


def status(value: Any) -> str:
    return integer(value, 100, 599, "HTTP status")


def comment(value: Any) -> str:
    """Text for a ``#`` comment in either language: one line, whatever the value held."""
    return " ".join(str(value).replace("\x00", " ").split())


host = _matching(HOST, "host")
path = _matching(PATH, "path")


# --------------------------------------------------------------------------- HAProxy


def haproxy_string(value: Any) -> str:
    """One HAProxy word that is exactly ``value``: strong (single) quoting, ``'`` written as ``'\\''``.

    Inside single quotes HAProxy interprets nothing: no ``#`` comment, no ``$`` variable, no
    backslash escape, no word break on spaces.
    """
    text = _one_line(value, "HAProxy string")
    return "'" + text.replace("'", "'\\''") + "'"


haproxy_name = _matching(HAPROXY_PROXY_NAME, "HAProxy name")


def haproxy_bucket(value: Any) -> str:
    """A bucket count or threshold of the split: 0 .. 2^31-1 (HAProxy integers are signed 64-bit)."""
    return integer(value, 0, 2**31 - 1, "bucket")


HAPROXY_FILTERS = {
    "hstr": haproxy_string,
    "hname": haproxy_name,
    "hheader": _checked(haproxy_header_problem, "header name"),
    "hcookie": _checked(haproxy_cookie_problem, "cookie name"),
    "hhost": host,
    "hpath": path,
    "hport": port,
    "hsec": seconds,
    "hcount": count,
    "hstatus": status,
    "hbucket": haproxy_bucket,
    "comment": comment,
}


# --------------------------------------------------------------------------- nginx


def nginx_string(value: Any) -> str:
    """A double-quoted nginx string; ``\\`` and ``"`` escaped (``;`` ``{`` ``}`` ``#`` are inert in quotes).

    Only for places nginx does not interpolate variables (map keys, literal parameters); ``$``
    would start a variable in a complex value.
    """
    text = _one_line(value, "nginx string")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx_exact_match(value: Any) -> str:
    """A ``map`` key that matches exactly ``value`` as a quoted, case-sensitive regex ``~^...$``.

    A regex rather than a string key: string keys go into a hash whose buckets (64 bytes by
    default) refuse keys of about 50 characters, and a plain key could read as a parameter
    (``default``, ``include``) or a regex (``~``), and string keys ignore case where every other
    target compares tester values exactly.  Every character but letters, digits, ``_``
    and ``-`` is escaped with a backslash, which PCRE reads as that character (``-`` is literal
    outside a character class, and ``[`` is escaped).
    """
    text = _one_line(value, "nginx map key")
    return nginx_string("~^" + re.sub(r"([^A-Za-z0-9_-])", r"\\\1", text) + "$")


def nginx_variable_part(header: str) -> str:
    """The part of ``$http_...`` nginx gives a header: lower case, ``-`` as ``_``."""
    return header.lower().replace("-", "_")


def nginx_header_variable(value: Any) -> str:
    return "$http_" + nginx_variable_part(_checked(nginx_header_problem, "header name")(value))


def nginx_cookie_variable(value: Any) -> str:
    return "$cookie_" + _checked(nginx_cookie_problem, "cookie name")(value)


NGINX_FILTERS = {
    "nmatch": nginx_exact_match,
    "nname": _matching(NGINX_NAME, "nginx name"),
    "nheader": nginx_header_variable,
    "nhost": host,
    "nport": port,
    "nsec": seconds,
    "ncount": count,
    "nlocation": path,
    "nserver": _matching(SERVER_NAME, "server_name"),
    "comment": comment,
}
