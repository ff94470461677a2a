"""``rollout serve``: turn a firing rollback alert into a rollback commit.

An HTTP server for Alertmanager's webhook (payload version 4) on ``POST /alerts``.
For each firing alert labelled ``action="rollback"``, the spec under ``--specs``
whose rollout matches the alert's ``rollout``, ``namespace`` and ``environment``
labels gets ``current: rollback`` (the edit of ``rollout rollback``, with the
alert as the reason), ``--specs`` is recompiled into ``--output``, and with
``--commit`` the spec and the output are committed in the spec's Git
repository (never pushed).  A rollout already rolled back, a resolved alert, an
alert without ``action="rollback"`` and an unknown rollout change nothing.

Requests are handled one at a time (a lock), bodies are bounded, and nothing a
request sends can stop the server: malformed JSON is a 400, a failure to roll
back a 500 (Alertmanager retries), everything else a 200 with a JSON summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click

from compiler import build
from compiler import pipeline
from compiler.ops.edit import one_line
from compiler.ir.plan import ROLLBACK
from compiler.ops.workflow import WorkflowError, apply_edit

MAX_BODY = 4 << 20  # bytes of one webhook request
READ_TIMEOUT = 30  # seconds a client may take to send its request
GIT_TIMEOUT = 60


def log(message: str) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    click.echo(f"{stamp} rollout serve: {message}", err=True)


class PayloadError(ValueError):
    """The request is not an Alertmanager webhook payload."""


@dataclass
class Outcome:
    alert: str
    rollout: str | None
    result: str  # rolled back | already rolled back | ignored | failed
    detail: str
    commit: str | None = None


# --------------------------------------------------------------------------- reading the payload


def alerts_of(payload: object) -> list[object]:
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise PayloadError("expected an Alertmanager webhook payload: an object with a list `alerts`")
    alerts: list[object] = payload["alerts"]
    return alerts


def _labels(alert: dict[str, Any], key: str) -> dict[str, str]:
    value = alert.get(key)
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, (str, int, float))}


def find_unit(units: list[pipeline.Unit], labels: dict[str, str]) -> pipeline.Unit | None:
    """The rollout an alert's labels name; a rollout without environments also takes an alert whose
    ``environment`` label Prometheus' external labels added."""
    same = [u for u in units if u.plan.name == labels.get("rollout") and u.plan.namespace == labels.get("namespace")]
    environment = labels.get("environment") or None
    exact = [u for u in same if u.plan.environment == environment]
    if not exact and environment is not None:
        exact = [u for u in same if u.plan.environment is None]
    return exact[0] if len(exact) == 1 else None


# --------------------------------------------------------------------------- acting


@dataclass
class Rollbacks:
    specs: Path
    output: Path
    commit: bool

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def handle(self, payload: object) -> list[Outcome]:
        alerts = alerts_of(payload)
        outcomes = []
        with self.lock:
            analysis = pipeline.analyse([self.specs])
            for alert in alerts:
                outcomes.append(self._one(alert, analysis))
                if outcomes[-1].result == "rolled back":  # later alerts of the payload see the rollback
                    analysis = pipeline.analyse([self.specs])
        for outcome in outcomes:
            log(f"{outcome.result}: {outcome.rollout or '-'} ({outcome.alert}): {outcome.detail}")
        return outcomes

    def _one(self, alert: object, analysis: pipeline.Result) -> Outcome:
        if not isinstance(alert, dict):
            return Outcome("-", None, "ignored", "not an alert object")
        labels = _labels(alert, "labels")
        name = labels.get("alertname", "-")
        named = (
            "/".join(v for v in (labels.get("environment"), labels.get("namespace"), labels.get("rollout")) if v)
            or None
        )
        if alert.get("status") != "firing":
            return Outcome(name, named, "ignored", f"status {alert.get('status')!r}, not firing")
        if labels.get("action") != ROLLBACK:
            return Outcome(name, named, "ignored", f"action {labels.get('action')!r}, not rollback")
        unit = find_unit(analysis.units, labels)
        if unit is None:
            return Outcome(name, named, "ignored", f"no rollout {named or '(no rollout label)'} in {self.specs}")
        plan = unit.plan
        if plan.is_rollback:
            return Outcome(name, plan.out, "already rolled back", f"{unit.doc.path} has current: rollback")
        if not analysis.ok:
            first = next(d for d in analysis.diagnostics if d.severity == "error")
            return Outcome(name, plan.out, "failed", f"{self.specs} does not compile: {first.text()}")
        gate = labels.get("gate", "-")
        summary = _labels(alert, "annotations").get("summary", "")
        reason = one_line(f"{name} ({gate})" + (f": {summary}" if summary else ""))
        spec = Path(unit.doc.path)
        try:
            written = self._roll_back(spec, plan.environment, reason)
            subject = one_line(f"rollback {plan.out}: {name} ({gate})")
            commit = git_commit(spec, self.output, f"{subject}\n\n{reason}\n") if self.commit else None
        except (OSError, WorkflowError, GitError) as exc:
            return Outcome(name, plan.out, "failed", one_line(str(exc)))
        done = f"{spec}: current: rollback ({reason}); {written} files written into {self.output}"
        return Outcome(name, plan.out, "rolled back", done + (f"; commit {commit[:12]}" if commit else ""), commit)

    def _roll_back(self, spec: Path, environment: str | None, reason: str) -> int:
        """Set the spec to rollback and recompile; the spec is restored when the compile fails."""
        before = spec.read_bytes()
        try:
            apply_edit(spec, ROLLBACK, environment, reason)
        except WorkflowError:  # no room for a comment on that line: the reason stays in the commit message
            apply_edit(spec, ROLLBACK, environment)
        report = build.build([self.specs], self.output)
        if not report.ok:
            _restore(spec, before)
            raise WorkflowError(d for d in report.diagnostics if d.severity == "error")
        return len(report.written)


def _restore(spec: Path, data: bytes) -> None:
    tmp = spec.with_name(f".{spec.name}.restore")
    tmp.write_bytes(data)
    os.replace(tmp, spec)


# --------------------------------------------------------------------------- git


class GitError(Exception):
    pass


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT,
                              stdin=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {args[0]}: {exc}") from None
    if done.returncode != 0:
        raise GitError(f"git {args[0]} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


def git_commit(spec: Path, output: Path, message: str) -> str:
    """Commit the spec and the output folder (whatever of it is in the spec's repository); the new commit's id."""
    top = Path(_git(spec.resolve().parent, "rev-parse", "--show-toplevel")).resolve()
    paths = []
    for path in (spec.resolve(), output.resolve()):
        try:
            paths.append(path.relative_to(top).as_posix() or ".")
        except ValueError:
            log(f"warning: {path} is outside the repository {top}: not committed")
    _git(top, "add", "--all", "--", *paths)
    _git(top, "commit", "--quiet", "--message", message, "--", *paths)
    return _git(top, "rev-parse", "HEAD")


# --------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    server_version = "rollout-serve"
    timeout = READ_TIMEOUT
    server: Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/healthz":
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": "not found: POST /alerts, GET /healthz"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/alerts":
            self._reply(404, {"error": "not found: POST /alerts, GET /healthz"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, {"error": "a Content-Length is required"})
            return
        if length < 0 or length > MAX_BODY:
            log(f"refused {length} bytes from {self.client_address[0]} (at most {MAX_BODY})")
            self._reply(413, {"error": f"the body is limited to {MAX_BODY} bytes"})
            self.close_connection = True
            return
        try:
            body = self.rfile.read(length)
        except OSError as exc:  # a client that stops sending
            log(f"cannot read the request from {self.client_address[0]}: {exc}")
            self.close_connection = True
            return
        try:
            payload = json.loads(body)
            outcomes = self.server.rollbacks.handle(payload)
        except (ValueError, RecursionError) as exc:  # PayloadError and JSON errors are ValueErrors
            log(f"bad request from {self.client_address[0]}: {one_line(str(exc))[:120]}")
            self._reply(400, {"error": one_line(str(exc))[:200]})
            return
        except Exception as exc:  # a bug: one line in the log, a 500 for the sender to retry
            log(f"internal error: {type(exc).__name__}: {one_line(str(exc))[:200]}")
            self._reply(500, {"error": "internal error"})
            return
        failed = [o for o in outcomes if o.result == "failed"]
        self._reply(500 if failed else 200, summary(outcomes))

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per action is logged by the handling itself


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    def rollouts(result: str) -> list[str]:
        return sorted({o.rollout for o in outcomes if o.result == result and o.rollout})

    return {
        "rolled_back": rollouts("rolled back"),
        "unchanged": rollouts("already rolled back"),
        "failed": rollouts("failed"),
        "ignored": sum(o.result == "ignored" for o in outcomes),
        "alerts": [asdict(o) for o in outcomes],
    }


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], rollbacks: Rollbacks):
        super().__init__(address, Handler)
        self.rollbacks = rollbacks

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        error = sys.exc_info()[1]
        log(f"error serving {client_address[0]}: {type(error).__name__}: {one_line(str(error))[:200]}")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{value}' is not HOST:PORT (e.g. 127.0.0.1:9095)")
    return host, int(port)


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
@click.option("--commit/--no-commit", default=False, show_default=True,
              help="Commit the changed spec and output in the spec's Git repository (never pushed).")
def serve(specs: Path, output: Path, listen: tuple[str, int], commit: bool) -> None:
    """Serve Alertmanager's webhook: a firing rollback alert sets its spec to rollback and recompiles.

    POST /alerts takes Alertmanager webhook payloads (version 4).  For each
    firing alert labelled action="rollback", the spec in SPECS whose rollout
    matches the labels rollout, namespace and environment gets `current:
    rollback` (the edit of `rollout rollback`, the alert as the reason), SPECS
    is recompiled into OUTPUT, and with --commit the spec and OUTPUT are
    committed (no push).  Repeated and resolved alerts, other actions and
    unknown rollouts change nothing.  GET /healthz answers 200.

    Point a webhook receiver named in the spec's `alerting.routes.rollback` at
    http://HOST:PORT/alerts.  One line per action is logged to stderr.
    """
    rollbacks = Rollbacks(specs, output, commit)
    try:
        server = Server(listen, rollbacks)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}") from None
    signal.signal(signal.SIGTERM, _stop)
    host, port = str(server.server_address[0]), server.server_address[1]
    log(f"listening on http://{host}:{port}/alerts (specs {specs}, output {output}, "
        f"{'commit' if commit else 'no commit'})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.server_close()
