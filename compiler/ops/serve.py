"""``rollout serve``: turn a firing rollback alert into a rollback commit, for the sender that holds the token.

An HTTP(S) server for Alertmanager's webhook (payload version 4) on ``POST /alerts``:

- **Authenticated.** Every ``POST`` carries ``Authorization: Bearer <token>``, the token read from
  ``--token-file`` (Alertmanager sends it with ``http_config.authorization.credentials_file``; the
  spec's webhook receiver says ``bearer_token_file``), compared in constant time. The server does not
  start without a token unless ``--no-token`` is given and it listens on loopback only. TLS with
  ``--tls-cert`` and ``--tls-key``.
- **Only what the alert says, only when it is news.** A firing alert labelled ``action="rollback"``
  rolls back the rollout its ``rollout``, ``namespace`` and ``environment`` labels name, at the stage its
  ``stage`` label names: an alert about an earlier stage, or one that started before the stage last
  changed (a replay of an old payload), changes nothing. A new breach after a resume is news, and rolls
  back as fast as the first (the rolled-back rules let the gate alerts resolve, so Alertmanager sends
  the next one at once).
- **Isolated.** The rollout's spec is found through its folder's manifest, edited, compiled alone and
  committed with exactly the files that changed (:mod:`compiler.ops.repo`); a broken spec elsewhere
  cannot stop it. With ``--push`` the commit is pushed, rebased and retried when the remote moved.
  ``rollout advance`` takes the same repository lock: they never commit over each other.
- **Accountable.** One JSON line per decision on stderr (who asked, which alert, what was done; every
  value escaped), and ``GET /metrics`` for Prometheus. ``GET /healthz`` answers 200.

Requests are handled in threads behind one lock, bodies are bounded, the listen backlog takes bursts,
and nothing a request sends can stop the server: malformed JSON is a 400, a missing or wrong token a
401, a failure to roll back the rollout concerned a 500 (Alertmanager retries), everything else a 200.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import queue
import selectors
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click

from compiler import pipeline
from compiler.ir.plan import ROLLBACK, Plan
from compiler.ops import repo
from compiler.ops.edit import one_line
from compiler.ops.workflow import WorkflowError
from compiler.spec import names
from compiler.targets.observability.alertmanager import WEBHOOK_MAX_ALERTS

MAX_BODY = 4 << 20  # bytes of one webhook request
BIG_BODY = 256 << 10  # bytes from which a body is read, parsed and handled only BIG_PARSES at a time
BIG_PARSES = 2
READ_TIMEOUT = 30  # seconds one read from a client may take
REQUEST_DEADLINE = 60  # seconds a client may take to send one whole request (headers and body)
HEADER_DEADLINE = 10  # of which for its headers, before its token is known (slow clients cannot hold slots long)
MAX_CONNECTIONS = 64  # connections served at once; more get a 503 (Alertmanager retries) instead of a thread each
DISCARD = (16 << 20, 2.0)  # a refused request's body is read and dropped (bytes, seconds) so its sender sees the answer
BACKLOG = 256  # connections waiting to be accepted: a burst of Alertmanager retries is not reset
REPLAY_TOLERANCE = 10.0  # seconds: an alert that started this long before the stage changed is a replay
LOCK_TIMEOUT = 120.0
MAX_ALERTS = WEBHOOK_MAX_ALERTS  # alerts in one request: the `max_alerts` of the generated webhook configurations
STOP_SECONDS = 20.0  # on SIGTERM, how long the requests under way may take to finish and be answered


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


AUDIT_VALUE = 500  # characters of one value in an audit line: a label can be as long as a request allows


def audit(event: dict[str, Any]) -> None:
    """One JSON line per decision: label values can hold anything, and JSON escapes all of it."""
    event = {k: v[:AUDIT_VALUE] + "..." if isinstance(v, str) and len(v) > AUDIT_VALUE else v
             for k, v in event.items()}
    click.echo(json.dumps({"time": _now(), "server": "rollout serve", **event}, sort_keys=True), err=True)


class PayloadError(ValueError):
    """The request is not an Alertmanager webhook payload."""


@dataclass
class Outcome:
    alert: str
    rollout: str | None
    result: str  # rolled back | already rolled back | ignored | stale | replay | failed
    detail: str
    commit: str | None = None


# --------------------------------------------------------------------------- reading the payload


def alerts_of(payload: object) -> list[object]:
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise PayloadError("expected an Alertmanager webhook payload: an object with a list `alerts`")
    alerts: list[object] = payload["alerts"]
    if len(alerts) > MAX_ALERTS:
        raise PayloadError(f"{len(alerts)} alerts in one request, more than {MAX_ALERTS}: the webhook "
                           f"configurations rollout generates set `max_alerts: {MAX_ALERTS}`")
    return alerts


class Stopping(Exception):
    """The server is stopping: a request that has not begun is not begun (its sender retries elsewhere or later)."""


def _labels(alert: dict[str, Any], key: str) -> dict[str, str]:
    value = alert.get(key)
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, (str, int, float))}


def _alert_name(alert: object) -> str:
    return _labels(alert, "labels").get("alertname", "-") if isinstance(alert, dict) else "-"


def _not_a_rollout(labels: dict[str, str]) -> str | None:
    """Why the labels cannot name a rollout (None: they can): names are DNS labels, never paths."""
    for key in ("rollout", "namespace", "environment"):
        value = labels.get(key)
        if value is None and key == "environment":
            continue
        try:
            names.check_dns1123_label(value or "", key)
        except ValueError:
            return f"the `{key}` label {one_line(value or '')[:100]!r} names no rollout (a DNS label is expected)"
    return None


def find_unit(units: list[pipeline.Unit], labels: dict[str, str]) -> pipeline.Unit | None:
    """The rollout an alert's labels name; a rollout without environments also takes an alert whose
    ``environment`` label Prometheus' external labels added."""
    same = [u for u in units if u.plan.name == labels.get("rollout") and u.plan.namespace == labels.get("namespace")]
    environment = labels.get("environment") or None
    exact = [u for u in same if u.plan.environment == environment]
    if not exact and environment is not None:
        exact = [u for u in same if u.plan.environment is None]
    return exact[0] if len(exact) == 1 else None


def parse_rfc3339(text: str) -> float | None:
    """Alertmanager's times (nanoseconds, ``Z``) as Unix seconds; None when it is not one."""
    import re

    match = re.fullmatch(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
                         r"(Z|[+-][0-9]{2}:[0-9]{2})", text)
    if match is None:
        return None
    fraction = (match.group(2) or "")[:7]  # Python reads at most microseconds
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        return datetime.fromisoformat(match.group(1) + fraction + zone).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------- metrics


class Metrics:
    """Counters for ``GET /metrics`` (the Prometheus text format)."""

    HELP = {
        "rollout_serve_requests_total": ("Webhook requests, by HTTP status.", "code"),
        "rollout_serve_alerts_total": ("Alerts received, by what was done.", "result"),
        "rollout_serve_refused_total": ("Requests refused before reading an alert, by reason.", "reason"),
        "rollout_serve_broken_specs_total": ("Specs found broken while looking for a rollout.", None),
    }

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, name: str, value: str = "") -> None:
        with self.lock:
            self.counts[(name, value)] += 1

    def text(self) -> str:
        lines = []
        with self.lock:
            counts = dict(self.counts)
        for name, (help_text, label) in self.HELP.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            values = sorted((v, n) for (m, v), n in counts.items() if m == name)
            if label is None:
                lines.append(f"{name} {sum(n for _, n in values)}")
            for value, count in values if label is not None else []:
                escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                lines.append(f'{name}{{{label}="{escaped}"}} {count}')
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- acting


@dataclass
class Rollbacks:
    specs: Path
    output: Path
    commit: bool
    push: bool = False
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._analysis: pipeline.Result | None = None
        # What one request learns once, however many of its alerts name the same rollout:
        self._since: dict[tuple[str, str | None, str], float | None] = {}  # when each stage began (git history)
        self._dirty: dict[str, bool] = {}  # which specs differ from HEAD
        self._located: dict[tuple[str | None, ...], tuple[pipeline.Unit | None, list[str]]] = {}

    def handle(self, payload: object, client: str = "-") -> list[Outcome]:
        alerts = alerts_of(payload)
        outcomes = []
        with self.lock:
            if self.stopping.is_set():
                raise Stopping()
            self._recover()
            self._analysis = None  # every spec, read at most once per request
            self._since.clear()
            self._dirty.clear()
            self._located.clear()
            for alert in alerts:
                try:
                    outcome = self._one(alert)
                except Exception as exc:  # a bug: this alert fails (a 500, retried), the others are still handled
                    outcome = Outcome(_alert_name(alert), None, "failed",
                                      f"internal error: {type(exc).__name__}: {one_line(str(exc))}")
                outcomes.append(outcome)
                self.metrics.add("rollout_serve_alerts_total", outcome.result.replace(" ", "_"))
                audit({"client": client, "alert": outcome.alert, "rollout": outcome.rollout, "result": outcome.result,
                       "detail": outcome.detail, "commit": outcome.commit})
        return outcomes

    def _locate(self, labels: dict[str, str]) -> tuple[pipeline.Unit | None, list[str]]:
        """The rollout the labels name, once per request until a change is made."""
        key = tuple(labels.get(k) for k in ("rollout", "namespace", "environment"))
        if key not in self._located:
            self._located[key] = self._find(labels)
        return self._located[key]

    def _find(self, labels: dict[str, str]) -> tuple[pipeline.Unit | None, list[str]]:
        """The rollout the labels name: through its folder's manifest (its spec alone is read), else by reading
        every spec (a broken one is reported, and never stops the others)."""
        name, namespace, environment = labels.get("rollout"), labels.get("namespace"), labels.get("environment")
        folders = ([f"{environment}/{namespace}/{name}"] if environment else []) + [f"{namespace}/{name}"]
        for out in folders:
            spec = repo.one_spec_of(self.output, out) if name and namespace else None
            if spec is not None:
                units, found = pipeline.analyse_file(spec)
                unit = find_unit(units, labels)
                if unit is not None:
                    return unit, []
        analysis = self._analysis
        if analysis is None:
            analysis = self._analysis = pipeline.analyse([self.specs])
            for _ in {d.path for d in analysis.diagnostics if d.severity == "error"}:
                self.metrics.add("rollout_serve_broken_specs_total")
        broken = sorted({d.path for d in analysis.diagnostics if d.severity == "error"})
        return find_unit(analysis.units, labels), broken

    def _one(self, alert: object) -> Outcome:
        if not isinstance(alert, dict):
            return Outcome("-", None, "ignored", "not an alert object")
        labels = _labels(alert, "labels")
        name = labels.get("alertname", "-")
        named = "/".join(v for v in (labels.get("environment"), labels.get("namespace"), labels.get("rollout")) if v)
        if alert.get("status") != "firing":
            return Outcome(name, named or None, "ignored", f"status {alert.get('status')!r}, not firing")
        if labels.get("action") != ROLLBACK:
            return Outcome(name, named or None, "ignored", f"action {labels.get('action')!r}, not rollback")
        unnamed = _not_a_rollout(labels)
        if unnamed is not None:
            return Outcome(name, named or None, "ignored", unnamed)
        started = parse_rfc3339(str(alert.get("startsAt", "")))
        if started is None:
            return Outcome(name, named, "ignored", f"startsAt {one_line(str(alert.get('startsAt')))!r} is not an "
                           "RFC 3339 time: without it a replay cannot be told from a new breach")
        unit, broken = self._locate(labels)
        warning = f" (broken specs elsewhere, left alone: {', '.join(broken)})" if broken else ""
        if unit is None:
            return Outcome(name, named or None, "ignored", f"no rollout {named or '(no rollout label)'} in "
                           f"{self.specs}{warning}")
        plan = unit.plan
        spec = Path(unit.doc.path)
        if self.commit and self._uncommitted(spec):
            return Outcome(name, plan.out, "failed", f"{unit.doc.path} has uncommitted changes in this repository: "
                           "the stage deployed is HEAD's, and a rollback commit would take them along; commit or "
                           f"discard them (serve works in a clone of its own){warning}")
        if plan.is_rollback:
            self._push_pending(spec)
            return Outcome(name, plan.out, "already rolled back", f"{unit.doc.path} has current: rollback{warning}")
        late = self._not_now(name, labels, plan, spec, started, str(alert.get("startsAt")), warning)
        if late is not None:
            return late
        gate = labels.get("gate", "-")
        summary = _labels(alert, "annotations").get("summary", "")
        reason, subject = _committed_words(plan.out, name, gate, summary)
        try:
            with repo.lock_for(spec, self.commit, LOCK_TIMEOUT):
                if self._rolled_back_meanwhile(spec, labels):  # by another server on this repository
                    return Outcome(name, plan.out, "already rolled back", f"{unit.doc.path} has current: rollback "
                                   f"(set while this alert waited){warning}")
                change = repo.change_spec(spec, ROLLBACK, plan.environment, self.output, f"{subject}\n\n{reason}\n",
                                          reason=reason, commit=self.commit, push=self.push)
        except (OSError, WorkflowError, repo.GitError) as exc:
            self._located.clear()
            self._dirty.clear()
            return Outcome(name, plan.out, "failed", one_line(str(exc)) + warning)
        self._located.clear()  # the spec changed: its plan is read again
        self._dirty.clear()
        done = f"{spec}: current: rollback ({reason}); {len(change.written)} files written into {self.output}"
        if change.commit:
            done += f"; commit {change.commit[:12]}" + ("; pushed" if change.pushed else "")
        return Outcome(name, plan.out, "rolled back", done + warning, change.commit)

    def _not_now(self, name: str, labels: dict[str, str], plan: Plan, spec: Path, started: float, starts_at: str,
                 warning: str) -> Outcome | None:
        """Why an alert for a rollout that is not rolled back is not acted on: no stage, another stage, a replay."""
        stage = labels.get("stage")
        if stage is None:
            return Outcome(name, plan.out, "ignored", f"the alert has no `stage` label: every rollback alert rollout "
                           f"writes names the stage it judges{warning}")
        if stage != plan.current.name:
            return Outcome(name, plan.out, "stale", f"the alert is about stage {stage}; {plan.out} is at "
                           f"{plan.current.name}{warning}")
        key = (str(spec), plan.environment, plan.current.name)
        if key not in self._since:  # once per request: a payload may repeat one rollout's alerts by the thousand
            self._since[key] = repo.stage_since(spec, plan.environment, plan.current.name)
        changed = self._since[key]
        if changed is not None and started < changed - REPLAY_TOLERANCE:
            return Outcome(name, plan.out, "replay", f"the alert started at {starts_at}, before the stage "
                           f"last changed ({datetime.fromtimestamp(changed, UTC).isoformat()}){warning}")
        return None

    def _uncommitted(self, spec: Path) -> bool:
        if str(spec) not in self._dirty:
            try:
                self._dirty[str(spec)] = repo.uncommitted(spec)
            except repo.GitError:
                self._dirty[str(spec)] = False  # outside a repository: the commit says what is wrong
        return self._dirty[str(spec)]

    @staticmethod
    def _rolled_back_meanwhile(spec: Path, labels: dict[str, str]) -> bool:
        units, _ = pipeline.analyse_file(spec)
        unit = find_unit(units, labels)
        return unit is not None and unit.plan.is_rollback

    def recover(self) -> None:
        """What a killed server left half made, made whole at start (before a person's commit could take a
        stale index along) and before each request."""
        with self.lock:
            self._recover()

    def _recover(self) -> None:
        """A change a killed server left half made is undone before any spec is read."""
        if not self.commit:
            return
        try:
            with repo.lock_for(self.specs, True, LOCK_TIMEOUT):
                said = repo.recover(repo.toplevel(self.specs))
        except (OSError, WorkflowError, repo.GitError) as exc:
            audit({"event": "recover", "result": "failed", "detail": one_line(str(exc))})
            return
        if said:
            audit({"event": "recover", "result": "done", "detail": one_line(said)})

    def _push_pending(self, spec: Path) -> None:
        """A rollback committed earlier whose push failed is pushed when its alert comes again."""
        if self.commit and self.push:
            try:
                top = repo.toplevel(spec)
                with repo.locked(top, LOCK_TIMEOUT):
                    if repo.unpushed(top):
                        repo.push_head(top)
            except repo.GitError as exc:
                audit({"event": "push", "result": "failed", "detail": one_line(str(exc))})


# --------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    server_version = "rollout-serve"
    timeout = READ_TIMEOUT
    server: Server

    def handle_one_request(self) -> None:
        """One request, whose reading is bounded as a whole: a client sending a byte at a time is cut off at
        HEADER_DEADLINE until its headers (and token) are in, at REQUEST_DEADLINE for the whole request, whatever
        READ_TIMEOUT allows each read."""
        self._expired = False
        self._started = time.monotonic()
        self._deadline = threading.Timer(HEADER_DEADLINE, self._expire)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._deadline.cancel()

    def _extend(self) -> None:
        """The headers are in and the token is right: the rest of REQUEST_DEADLINE for the body."""
        self._deadline.cancel()
        left = max(0.0, REQUEST_DEADLINE - (time.monotonic() - self._started))
        self._deadline = threading.Timer(left, self._expire)
        self._deadline.daemon = True
        self._deadline.start()

    def _expire(self) -> None:
        self._expired = True
        self.server.rollbacks.metrics.add("rollout_serve_refused_total", "timeout")
        audit({"client": self.client_address[0], "event": "request", "result": "refused",
               "detail": "not sent whole in time (headers within "
                         f"{HEADER_DEADLINE}s, the request within {REQUEST_DEADLINE}s)"})
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._deadline.cancel()
        if self.path == "/healthz":
            self._reply(200, {"status": "ok"})
        elif self.path == "/metrics":
            self._send(200, self.server.rollbacks.metrics.text().encode(), "text/plain; version=0.0.4")
        else:
            self._reply(404, {"error": "not found: POST /alerts, GET /healthz, GET /metrics"})

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        offered = self.headers.get("Authorization", "")
        scheme, _, credentials = offered.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token)

    def do_POST(self) -> None:  # noqa: N802
        client = self.client_address[0]
        if self.path != "/alerts":
            self._reply(404, {"error": "not found: POST /alerts, GET /healthz, GET /metrics"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if self._expired:  # cut off while its headers came: already counted and logged as a timeout
            self.close_connection = True
            return
        if not self._authorized():
            self._refuse("token", 401, {"error": "a valid bearer token is required"}, client)
            self._discard(length)
            return
        self._extend()
        if length < 0:
            self._refuse("length", 411, {"error": "a Content-Length is required"}, client)
            self.close_connection = True
            return
        if length > MAX_BODY:
            self._refuse("size", 413, {"error": f"the body is limited to {MAX_BODY} bytes"}, client)
            self._discard(length)
            return
        # A large body becomes many objects once parsed, held while the request waits for the lock: only
        # BIG_PARSES of them are read, parsed and handled at once (the others wait before reading theirs).
        with self.server.parsing if length > BIG_BODY else contextlib.nullcontext():
            outcomes = self._handle(length, client)
        if outcomes is None:
            return
        failed = [o for o in outcomes if o.result == "failed"]
        self._reply(500 if failed else 200, summary(outcomes))

    def _handle(self, length: int, client: str) -> list[Outcome] | None:
        """The request's body read and handled; None when it was answered (or cut off) already."""
        try:
            body = self.rfile.read(length)
        except OSError as exc:  # a client that stops sending
            audit({"client": client, "event": "request", "result": "unreadable", "detail": str(exc)})
            self.close_connection = True
            return None
        self._deadline.cancel()  # the request is read: handling it may wait for the lock
        if len(body) < length:
            audit({"client": client, "event": "request", "result": "unreadable", "detail": "the body ended early"})
            self.close_connection = True
            return None
        try:
            payload = json.loads(body)
            del body
            return self.server.rollbacks.handle(payload, client)
        except Stopping:
            self._reply(503, {"error": "stopping: send it again"}, {"Retry-After": "1"})
        except (ValueError, RecursionError) as exc:  # PayloadError and JSON errors are ValueErrors
            self._refuse("payload", 400, {"error": one_line(str(exc))[:200]}, client)
        except Exception as exc:  # a bug: one line in the log, a 500 for the sender to retry
            audit({"client": client, "event": "request", "result": "internal error",
                   "detail": f"{type(exc).__name__}: {one_line(str(exc))[:200]}"})
            self._reply(500, {"error": "internal error"})
        return None

    def _discard(self, length: int) -> None:
        """Read and drop what is left of a refused request's body (bounded in bytes and time), then close: a
        client still sending reads the answer instead of a reset."""
        self.close_connection = True
        limit, seconds = DISCARD
        left = min(length, limit) if length >= 0 else 0
        ends = time.monotonic() + seconds
        try:
            while left > 0 and time.monotonic() < ends:
                self.connection.settimeout(max(0.01, ends - time.monotonic()))
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _refuse(self, reason: str, status: int, body: dict[str, Any], client: str) -> None:
        self.server.rollbacks.metrics.add("rollout_serve_refused_total", reason)
        audit({"client": client, "event": "request", "result": "refused", "detail": f"{status}: {body['error']}"})
        self._reply(status, body, {"WWW-Authenticate": 'Bearer realm="rollout serve"'} if status == 401 else None)

    def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, (json.dumps(body, sort_keys=True) + "\n").encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        if self.command == "POST":
            self.server.rollbacks.metrics.add("rollout_serve_requests_total", str(status))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per decision is logged by the handling itself


def _committed_words(out: str, name: str, gate: str, summary: str) -> tuple[str, str]:
    """(reason, subject) of a rollback commit, from the alert's words where they hold no secret (both are
    committed: the reason in the spec, the subject in the history)."""
    from compiler.spec import secrets

    if summary and secrets.in_text(summary) is not None:
        summary = "(its summary is left out: it seems to hold a secret)"
    said = f"{name} ({gate})"
    if secrets.in_text(said) is not None:
        said = "a rollback alert (its name is left out: it seems to hold a secret)"
    reason = one_line(said + (f": {summary}" if summary else ""))
    return reason, one_line(f"rollback {out}: {said}")


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    def rollouts(result: str) -> list[str]:
        return sorted({o.rollout for o in outcomes if o.result == result and o.rollout})

    rolled = rollouts("rolled back")
    return {
        "rolled_back": rolled,
        "unchanged": [r for r in rollouts("already rolled back") if r not in rolled],  # not a second alert of one
        "failed": rollouts("failed"),
        "ignored": sum(o.result in ("ignored", "stale", "replay") for o in outcomes),
        "alerts": [asdict(o) for o in outcomes],
    }


BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
ALIVE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n"
         b'{"status": "ok"}\n')


class Busy:
    """Answers the connections that find every slot taken, all in one thread and without blocking: a
    ``GET /healthz`` gets its 200 (the server is alive, only busy: a liveness probe must not restart it in the
    middle of a burst of rollbacks), anything else a 503 that Alertmanager retries. The request line is read
    for HEAD seconds at most; after the answer, what the client still sends is read and dropped for LINGER
    seconds at most before the socket closes (closing on unread data resets the connection, and the client may
    then never read the answer). Past MAX_WAITING connections at once, one is closed without an answer."""

    HEAD = 1.0
    LINGER = 2.0
    MAX_WAITING = 256

    def __init__(self) -> None:
        self.waiting: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self.count = 0
        self.guard = threading.Lock()
        threading.Thread(target=self._run, name="rollout-busy", daemon=True).start()

    def add(self, sock: socket.socket) -> None:
        with self.guard:
            if self.count >= self.MAX_WAITING:
                sock.close()
                return
            self.count += 1
        sock.setblocking(False)
        self.waiting.put(sock)

    def _run(self) -> None:
        chooser = selectors.DefaultSelector()
        state: dict[socket.socket, tuple[float, bytes | None]] = {}  # deadline, what was read (None: answered)
        while True:
            while True:
                try:
                    sock = self.waiting.get(block=not state)
                except queue.Empty:
                    break
                state[sock] = (time.monotonic() + self.HEAD, b"")
                chooser.register(sock, selectors.EVENT_READ)
                if self.waiting.empty():
                    break
            for key, _ in chooser.select(timeout=0.1):
                conn = key.fileobj
                if not isinstance(conn, socket.socket):
                    continue
                try:
                    more = conn.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    more = b""
                end, head = state[conn]
                if not more:
                    state[conn] = (0.0, head)
                elif head is not None:
                    head += more[:1024]
                    state[conn] = (end, head)
                    if b"\n" in head or len(head) >= 1024:
                        self._answer(conn, state, head)
            now = time.monotonic()
            for conn, (end, head) in list(state.items()):
                if end > now:
                    continue
                if head is not None and end > 0.0:
                    self._answer(conn, state, head)  # no request line within HEAD seconds: busy
                    continue
                chooser.unregister(conn)
                conn.close()
                del state[conn]
                with self.guard:
                    self.count -= 1

    def _answer(self, conn: socket.socket, state: dict[socket.socket, tuple[float, bytes | None]],
                head: bytes) -> None:
        health = head.startswith(b"GET /healthz ") or head.startswith(b"GET /healthz?")
        try:
            conn.send(ALIVE if health else BUSY)  # under 200 bytes: the socket's buffer takes them at once
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            state[conn] = (0.0, None)
            return
        state[conn] = (time.monotonic() + self.LINGER, None)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], rollbacks: Rollbacks, token: bytes | None = None,
                 tls: ssl.SSLContext | None = None):
        super().__init__(address, Handler)
        self.rollbacks = rollbacks
        self.token = token
        self.tls = tls is not None
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.parsing = threading.BoundedSemaphore(BIG_PARSES)  # a large body becomes many objects: a few at once
        self.busy = Busy()
        self.active = 0  # requests being served (their threads)
        self.idle = threading.Condition()
        if tls is not None:  # the handshake happens in the request's thread, not in the accepting loop
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]  # socketserver's
        if not self.slots.acquire(blocking=False):  # busy: an answer now, never a thread more
            self.rollbacks.metrics.add("rollout_serve_refused_total", "busy")
            if self.tls:
                self.shutdown_request(request)
                return
            self.busy.add(request)  # answered in the busy thread: 200 for /healthz, 503 for the rest
            return
        with self.idle:
            self.active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        self.slots.release()
        with self.idle:
            self.active -= 1
            self.idle.notify_all()

    def wait_idle(self, seconds: float) -> bool:
        """Wait until no request is being served (at most ``seconds``); whether none is."""
        with self.idle:
            return self.idle.wait_for(lambda: self.active == 0, timeout=seconds)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]  # socketserver's signature
        error = sys.exc_info()[1]
        audit({"client": client_address[0], "event": "connection", "result": "error",
               "detail": f"{type(error).__name__}: {one_line(str(error))[:200]}"})


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{value}' is not HOST:PORT (e.g. 127.0.0.1:9095)")
    return host, int(port)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> bytes:
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if len(token) < 16 or any(b < 0x21 or b > 0x7E for b in token):
        raise click.ClickException(f"{path}: the token must be at least 16 printable characters without spaces")
    return token


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--specs", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The folder of specs (as given to `rollout compile`).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The output folder the specs compile into (e.g. generated).")
@click.option("--listen", default="127.0.0.1:9095", show_default=True, callback=_listen,
              help="HOST:PORT to serve on.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The bearer token every POST must carry (Alertmanager: http_config.authorization).")
@click.option("--no-token", is_flag=True, help="Serve without a token: only on a loopback address.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve HTTPS with this certificate (PEM, with its chain).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate's private key (PEM).")
@click.option("--commit/--no-commit", default=False, show_default=True,
              help="Commit the changed spec and files in the spec's Git repository.")
@click.option("--push", is_flag=True, help="Also push each rollback commit (rebasing and retrying when the remote "
              "moved): for branches a rollback may reach without review.")
def serve(specs: Path, output: Path, listen: tuple[str, int], token_file: Path | None, no_token: bool,
          tls_cert: Path | None, tls_key: Path | None, commit: bool, push: bool) -> None:
    """Serve Alertmanager's webhook: a firing rollback alert sets its spec to rollback and recompiles.

    POST /alerts takes Alertmanager webhook payloads (version 4) with
    `Authorization: Bearer TOKEN`. For each firing alert labelled
    action="rollback" about the stage in effect, the spec whose rollout matches
    the labels rollout, namespace and environment gets `current: rollback`, that
    spec alone is recompiled into OUTPUT, and with --commit the spec and the files
    that changed are committed (with --push, pushed). Replays of alerts older
    than the stage, repeated and resolved alerts, other actions and unknown
    rollouts change nothing. GET /healthz and GET /metrics answer without a
    token.

    Point the webhook receiver named in the spec's `alerting.routes.rollback` at
    http://HOST:PORT/alerts, with `bearer_token_file` holding the same token.
    """
    host = listen[0]
    if token_file is None and not no_token:
        raise click.UsageError("give --token-file: without a token anyone who reaches the server can roll back any "
                               "rollout (--no-token serves a loopback address only)")
    if token_file is None and not loopback(host):
        raise click.UsageError(f"--no-token serves a loopback address only, not {host}: give --token-file")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("give both --tls-cert and --tls-key, or neither")
    if push and not commit:
        raise click.UsageError("--push needs --commit")
    token = read_token(token_file) if token_file is not None else None
    tls = None
    if tls_cert is not None and tls_key is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise click.ClickException(f"cannot load the TLS certificate and key: {exc}") from None
    rollbacks = Rollbacks(specs, output, commit, push)
    try:
        server = Server(listen, rollbacks, token, tls)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{listen[1]}: {exc.strerror or exc}") from None
    signal.signal(signal.SIGTERM, _stop)
    rollbacks.recover()
    bound_host, port = str(server.server_address[0]), server.server_address[1]
    scheme = "https" if tls else "http"
    audit({"event": "start", "detail": f"listening on {scheme}://{bound_host}:{port}/alerts (specs {specs}, output "
           f"{output}, {'commit' + (' and push' if push else '') if commit else 'no commit'}, "
           f"{'token required' if token else 'no token: loopback only'})"})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        # No new connection is taken and no waiting request begins (a 503 its sender retries); the rollback under
        # way is finished (its change committed or undone) and every answer sent, within STOP_SECONDS.
        rollbacks.stopping.set()
        finished = server.wait_idle(STOP_SECONDS)
        audit({"event": "stop", "detail": "every request answered" if finished else
               f"requests still under way after {STOP_SECONDS:g}s were cut off (a change they made is undone by "
               "the next start)"})
    finally:
        server.server_close()
