"""Secrets that must never reach a generated file: found in URLs and in free text, refused where the spec says them.

Generated files are committed to Git and applied by controllers: a webhook URL that carries a token, a
runbook link with a share key, or a description with an API key would be published with them. A URL is
refused when its user part is set, when its host is a service whose webhook URLs are credentials
(Slack, Discord, Microsoft Teams, PagerDuty's events API), or when a path segment looks like a token;
free text is refused when it holds a known token format or such a URL. Links people follow (runbooks,
dashboards, commit permalinks) keep their ids: lowercase hex (page and commit ids), UUIDs, short
mixed-case ids (dashboard uids) and CamelCase names pass; a random mix of both cases and digits does
not. A webhook URL, which is itself the credential of many services, is judged more strictly: a
segment of 24 letters and digits is a key.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

#: Token formats with a known prefix (whatever field they appear in).
KNOWN = [
    ("a Slack token", re.compile(r"xox[abposr]-[0-9A-Za-z-]{10,}")),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("an AWS access key", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Stripe key", re.compile(r"\b[sr]k_(live|test)_[0-9A-Za-z]{16,}")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a JSON Web Token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
]

#: Services whose webhook URLs are credentials: (what, host, path).
HOSTS = [
    ("a Slack webhook URL", re.compile(r"(^|\.)slack\.com$"), re.compile(r"^/(services|workflows|triggers)/")),
    ("a Discord webhook URL", re.compile(r"(^|\.)(discord|discordapp)\.com$"), re.compile(r"^/api/webhooks/")),
    ("a Microsoft Teams webhook URL", re.compile(r"(^|\.)(webhook\.office\.com|logic\.azure\.com)$|"
                                                 r"(^|\.)outlook\.office(365)?\.com$"), re.compile(r"/")),
    ("a PagerDuty integration key", re.compile(r"(^|\.)events(\.eu)?\.pagerduty\.com$"),
     re.compile(r"/(integration|generic|x-ere)/|^/v2/enqueue/.")),
    ("a Google Chat webhook URL", re.compile(r"^chat\.googleapis\.com$"), re.compile(r"/messages")),
]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_HEX = re.compile(r"^[0-9a-f]+$")
_ALNUM = re.compile(r"^[A-Za-z0-9_\-]+$")
_COMMITTISH = {"blob", "tree", "commit", "commits", "raw", "blame", "-", "src", "rev", "sha", "ref", "refs"}
_URL_IN_TEXT = re.compile(r"https?://[^\s\"'<>`]+")


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _tokenish(segment: str, previous: str, strict: bool) -> bool:
    """A path segment that looks like a credential rather than a name or an id."""
    core = segment.rsplit(".", 1)[0] if "." in segment[-6:] else segment  # a file extension is no part of a key
    if len(core) < 20 or not _ALNUM.fullmatch(core) or _UUID.fullmatch(core):
        return False
    if _HEX.fullmatch(core) and previous in _COMMITTISH and len(core) in (40, 64):
        return False  # a commit permalink
    if strict and any(c.isdigit() for c in core) and len(core) >= 24:
        return True  # a webhook's path: a long run of letters and digits is a key
    return any(_random(word) for word in re.split(r"[-_]", core))


def _random(word: str) -> bool:
    """Letters of both cases and digits, changing kind often and evenly spread: a random key, not an id (lowercase
    hex), not a CamelCase phrase (few changes), not a date."""
    if len(word) < 20 or not any(c.isdigit() for c in word):
        return False
    if not (any(c.islower() for c in word) and any(c.isupper() for c in word)):
        return False
    kinds = ["d" if c.isdigit() else "u" if c.isupper() else "l" for c in word]
    changes = sum(a != b for a, b in zip(kinds, kinds[1:]))
    return changes >= len(word) / 4 and _entropy(word) >= 3.5


def in_url(url: str, strict: bool = False) -> str | None:
    """What secret ``url`` seems to carry, in words; None when it looks like a plain address."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None:
        return "a user name or password"
    host = (parts.hostname or "").lower()
    for what, hosts, paths in HOSTS:
        if hosts.search(host) and paths.search(parts.path):
            return what
    for what, pattern in KNOWN:
        if pattern.search(url):
            return what
    previous = ""
    for segment in parts.path.split("/"):
        if _tokenish(segment, previous, strict):
            return "a path segment that looks like a token"
        previous = segment.lower()
    if parts.query or parts.fragment:
        for value in re.split(r"[&;#=]", f"{parts.query}#{parts.fragment}"):
            if _tokenish(value, "", strict):
                return "a query or fragment that looks like a token"
    return None


#: Any of the known formats (one search finds whether one is there; which one is asked only then).
_ANY_KNOWN = re.compile("|".join(f"(?:{pattern.pattern})" for _, pattern in KNOWN))


@lru_cache(maxsize=8192)
def in_text(text: str) -> str | None:
    """What secret free ``text`` (a description, an owner) seems to hold; None when it holds none."""
    if not _ANY_KNOWN.search(text) and "://" not in text:
        return None  # what most strings of a spec are: names, numbers, words
    for what, pattern in KNOWN:
        if pattern.search(text):
            return what
    for url in _URL_IN_TEXT.findall(text):
        found = in_url(url)
        if found is not None:
            return found
    return None


def redacted(url: str) -> str:
    """``url`` with its path and user part hidden, for a message that may land in a CI log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the URL"
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}/…" if parts.path not in ("", "/") or parts.username else f"{parts.scheme}://{host}"


#: Fields whose whole value is a URL: the model judges them, with a fix that fits the field.
URL_FIELDS = frozenset({"runbook", "grafana_url", "url", "repo_url", "destination_server"})


def anywhere(data: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(where, what) of every string of a spec's data (keys included) that holds a secret."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and (found := in_text(key)) is not None:
                yield at + (key,), found
            if not (isinstance(key, str) and key in URL_FIELDS and isinstance(value, str)):
                yield from anywhere(value, at + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from anywhere(value, at + (index,))
    elif isinstance(data, str) and (found := in_text(data)) is not None:
        yield at, found
