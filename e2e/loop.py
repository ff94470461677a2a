"""The closed loop on 127.0.0.1 with the real programs: a breach becomes a rollback nobody typed.

Prometheus 2.42 scrapes two small backends (stable and canary, the canary's error rate switchable) through
the scrape job rollout generates, evaluates the generated rules and sends alerts to Alertmanager 0.25, whose
generated configuration sends the rollback alert, with the bearer token, to ``rollout serve``. ``serve``
commits the rollback to a Git repository; an applier standing in for the GitOps controller reads the
committed files every half second and reloads HAProxy (which splits 20 requests/s between the backends) and
Prometheus. Each run measures: fault -> alert firing -> webhook -> commit -> the canary gets no traffic.

Every wait is bounded, every process is stopped at the end (also on failure).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "e2e-bearer-token-0123456789abcdef"
RPS = 20
NAME, NAMESPACE = "shop-api", "shop"
OUT = f"{NAMESPACE}/{NAME}"
ALERT = "ShopApiErrorRateBreached"

SPEC = """apiVersion: rollout-compiler/v1
kind: Rollout
metadata: {{name: {name}, namespace: {namespace}, owner: shop-team}}
service:
  host: shop.example.com
  port: {haproxy_port}
  stable: {{version: v1, backend: shop-v1, servers: ["127.0.0.1:{stable_port}"]}}
  canary: {{version: v2, backend: shop-v2, servers: ["127.0.0.1:{canary_port}"]}}
traffic:
  targets: [haproxy]
  haproxy: {{exporter_port: {exporter_port}, admin_socket: {socket}, hosts: [127.0.0.1]}}
metrics:
  source: generic
  min_requests: {min_requests}
  window: {window}s
  scrape_interval: {interval}s
  evaluation_interval: {interval}s
stages:
  - {{name: canary, weight: 10%, hold: {hold}, {approve}gates: {{error_rate: "< 5%"}}}}
  - {{name: ramp, weight: 50%, hold: 1h, gates: {{error_rate: "< 5%"}}}}
  - {{name: full, weight: 100%}}
current: {current}
alerting:
  receivers:
    page: {{webhook: {{url: "http://127.0.0.1:{page_port}/page"}}}}
    bot: {{webhook: {{url: "http://127.0.0.1:{serve_port}/alerts", bearer_token_file: {token}}}}}
  routes: {{critical: [page], warning: [page], rollback: [bot]}}
rollback: {{within: {within}s}}
"""


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, never one this run gave already (the kernel may hand a closed port out again
    before the program it was given to binds it)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def wait_for(what: str, check: Callable[[], Any], budget: float, step: float = 0.2) -> Any:
    """``check()``'s first true answer, or a failure naming ``what`` after ``budget`` seconds."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError, http.client.HTTPException):
            value = None
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {budget:.0f}s waiting for {what}")


def get_json(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


# --------------------------------------------------------------------------- backends and load


class Backend:
    """A small application: counts its requests, fails a share of them on demand, exports its metrics."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.ok = self.failed = 0
        self.error_ratio = 0.0
        self.last_request = 0.0
        self._credit = 0.0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/metrics":
                    body = backend.metrics().encode()
                    self._send(200, body, "text/plain; version=0.0.4")
                    return
                status = backend.serve()
                self._send(status, b"failed\n" if status == 500 else b"ok\n", "text/plain")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self) -> int:
        with self.lock:
            self.last_request = time.monotonic()
            self._credit += self.error_ratio
            if self._credit >= 1:
                self._credit -= 1
                self.failed += 1
                return 500
            self.ok += 1
            return 200

    def requests(self) -> int:
        with self.lock:
            return self.ok + self.failed

    def metrics(self) -> str:
        with self.lock:
            ok, failed = self.ok, self.failed
        total = ok + failed
        return (f'http_requests_total{{code="200"}} {ok}\nhttp_requests_total{{code="500"}} {failed}\n'
                f'http_request_duration_seconds_bucket{{le="0.1"}} {total}\n'
                f'http_request_duration_seconds_bucket{{le="+Inf"}} {total}\n'
                f"http_request_duration_seconds_count {total}\n")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Load:
    """RPS requests per second through the router, each on a connection of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.running = True
        self.sent = self.errors = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while self.running:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/", headers={"Host": "shop.example.com"})
                conn.getresponse().read()
                conn.close()
                self.sent += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
            next_at += 1 / RPS
            time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=10)


class Pager(ThreadingHTTPServer):
    """Alertmanager's page receiver: every notification a person would get."""

    def __init__(self) -> None:
        self.pages: list[dict[str, Any]] = []
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                pager.pages.extend(a for a in body.get("alerts", []) if a.get("status") == "firing")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()


# --------------------------------------------------------------------------- the loop


@dataclass
class Loop:
    """Every process of one run, in a folder of its own."""

    folder: Path
    interval: int
    hold: str = "1h"
    approve: bool = False
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    applied: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.repo = self.folder / "repo"
        self.stable, self.canary = Backend(), Backend()
        self.pager = Pager()
        self.ports = {k: free_port() for k in ("haproxy", "exporter", "prometheus", "alertmanager", "serve")}
        self.token = self.folder / "token"
        self.token.write_text(TOKEN + "\n")
        self.window = max(4 * self.interval, 20)
        self.within = max(60, self.window + 2 * self.interval)
        self.applier_stop = threading.Event()

    # ---- the repository

    def spec_text(self, current: str = "canary") -> str:
        return SPEC.format(
            name=NAME, namespace=NAMESPACE, haproxy_port=self.ports["haproxy"], stable_port=self.stable.port,
            canary_port=self.canary.port, exporter_port=self.ports["exporter"], socket=self.folder / "admin.sock",
            min_requests=max(10, 2 * self.window // 10), window=self.window, interval=self.interval, hold=self.hold,
            approve="approve: manual, " if self.approve else "", current=current, page_port=self.pager.server_port,
            serve_port=self.ports["serve"], token=self.token, within=self.within)

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.com",
               "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.com"}
        done = subprocess.run(["git", *args], cwd=self.repo, capture_output=True, text=True, timeout=60, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {done.stderr}")
        return done.stdout.strip()

    def rollout(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ROLLOUT_CACHE_DIR": "", "GIT_AUTHOR_NAME": "e2e",
               "GIT_AUTHOR_EMAIL": "e2e@example.com", "GIT_COMMITTER_NAME": "e2e",
               "GIT_COMMITTER_EMAIL": "e2e@example.com"}
        return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=self.repo, capture_output=True,
                              text=True, timeout=300, env=env)

    def commit(self, message: str) -> None:
        done = self.rollout("compile", "specs", "-o", "generated")
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)

    def setup(self) -> None:
        (self.repo / "specs").mkdir(parents=True)
        (self.repo / "specs" / "shop.yaml").write_text(self.spec_text())
        self.git("init", "--quiet", "--initial-branch=main")
        self.commit("shop-api at canary")

    def committed(self, path: str) -> bytes:
        return subprocess.run(["git", "show", f"HEAD:generated/{OUT}/{path}"], cwd=self.repo, capture_output=True,
                              timeout=30).stdout

    # ---- the programs

    def start(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        handle = (self.folder / log).open("ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ROLLOUT_CACHE_DIR": "", "GIT_AUTHOR_NAME": "serve",
               "GIT_AUTHOR_EMAIL": "serve@example.com", "GIT_COMMITTER_NAME": "serve",
               "GIT_COMMITTER_EMAIL": "serve@example.com"}
        process = subprocess.Popen(argv, stdout=handle, stderr=handle, cwd=self.repo, env=env)
        self.processes.append(process)
        return process

    def prometheus_config(self) -> None:
        snippet = _yaml(self.committed("prometheus/scrape-config.yaml"))
        config = {
            "global": {"scrape_interval": f"{self.interval}s", "evaluation_interval": f"{self.interval}s"},
            "rule_files": [str(self.folder / "rules" / "*.yaml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [
                f"127.0.0.1:{self.ports['alertmanager']}"]}]}]},
            "scrape_configs": snippet["scrape_configs"],
        }
        (self.folder / "prometheus.yml").write_text(json.dumps(config))

    def launch(self) -> None:
        from compiler.ops import serve  # noqa: F401  # importable before anything starts

        (self.folder / "rules").mkdir()
        self.apply_once()
        self.prometheus_config()
        self.start([_tool("prometheus"), f"--config.file={self.folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:"
                    f"{self.ports['prometheus']}", "--web.enable-lifecycle", "--log.level=warn"], "prometheus.log")
        config = _yaml(self.committed("alertmanager/alertmanager.yaml"))
        (self.folder / "alertmanager.yml").write_text(json.dumps(config))
        self.start([_tool("prometheus-alertmanager", "alertmanager"),
                    f"--config.file={self.folder / 'alertmanager.yml'}",
                    f"--storage.path={self.folder / 'am'}", f"--web.listen-address=127.0.0.1:"
                    f"{self.ports['alertmanager']}", "--cluster.listen-address=", "--log.level=warn"], "am.log")
        self.serve = self.start([sys.executable, "-m", "compiler", "serve", "--specs", "specs", "-o", "generated",
                                 "--listen", f"127.0.0.1:{self.ports['serve']}", "--token-file", str(self.token),
                                 "--commit"], "serve.log")
        wait_for("Prometheus", lambda: get_json(self.prom("/api/v1/status/config")), 60)
        wait_for("Alertmanager", lambda: get_json(f"http://127.0.0.1:{self.ports['alertmanager']}/api/v2/status"), 60)
        wait_for("rollout serve", lambda: get_json(f"http://127.0.0.1:{self.ports['serve']}/healthz"), 60)
        threading.Thread(target=self.applier, daemon=True).start()
        self.load = Load(self.ports["haproxy"])

    def prom(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}{path}"

    # ---- the applier: what a GitOps controller would do with each commit

    def apply_once(self) -> list[str]:
        changed = []
        config = self.committed("haproxy/haproxy.cfg")
        if config and config != self.applied.get("haproxy"):
            (self.folder / "haproxy.cfg").write_bytes(config)
            if "haproxy" not in self.applied:
                self.haproxy = self.start([_tool("haproxy"), "-W", "-db", "-f", str(self.folder / "haproxy.cfg")],
                                          "haproxy.log")
            else:
                self.haproxy.send_signal(signal.SIGUSR2)  # the master re-reads its configuration
            self.applied["haproxy"] = config
            changed.append("haproxy")
        rules = self.committed("prometheus/rules.yaml")
        if rules and rules != self.applied.get("rules"):
            (self.folder / "rules" / "shop.yaml").write_bytes(rules)
            if "rules" in self.applied:
                urllib.request.urlopen(urllib.request.Request(self.prom("/-/reload"), method="POST"), timeout=10)
            self.applied["rules"] = rules
            changed.append("rules")
        return changed

    def applier(self) -> None:
        while not self.applier_stop.wait(0.5):
            try:
                self.apply_once()
            except (OSError, urllib.error.URLError):
                pass

    # ---- what Prometheus and the backends say

    def firing(self, name: str = ALERT) -> bool:
        data = get_json(self.prom("/api/v1/alerts"))
        return any(a["labels"].get("alertname") == name and a["state"] == "firing" for a in data["data"]["alerts"])

    def judging(self) -> bool:
        """The gate's recorded series exist for the canary (it can judge)."""
        from compiler.gates.algebra import window

        series = f"rollout_variant:requests:rate{window(self.window)}"
        query = urllib.parse.urlencode({"query": f'{series}{{variant="canary"}}'})
        data = get_json(self.prom(f"/api/v1/query?{query}"))
        return bool(data["data"]["result"])

    def canary_quiet(self, seconds: float) -> float | None:
        """When the canary got its last request, once it has had none for ``seconds``."""
        last = self.canary.last_request
        return last if time.monotonic() - last >= seconds else None

    def heads(self) -> int:
        return int(self.git("rev-list", "--count", "HEAD"))

    def close(self) -> None:
        self.applier_stop.set()
        if hasattr(self, "load"):
            self.load.stop()
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for closing in (self.stable.close, self.canary.close, self.pager.shutdown):
            closing()


def _yaml(data: bytes) -> Any:
    import yaml

    return yaml.safe_load(data)


def _tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/usr/local/bin")
        if found:
            return found
    raise RuntimeError(f"{names[0]} is not installed: `make test` installs it")


@contextmanager
def running(interval: int, **options: Any) -> Iterator[Loop]:
    folder = Path(tempfile.mkdtemp(prefix="rollout-e2e-"))
    loop = Loop(folder, interval, **options)
    try:
        loop.setup()
        loop.launch()
        yield loop
    finally:
        loop.close()
        if os.environ.get("ROLLOUT_E2E_KEEP") != "1":
            shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- measurements


@dataclass
class Breach:
    """Seconds from the fault: the alert fires, serve gets the webhook and commits, the canary is left alone."""

    label: str
    firing: float
    commit: float
    no_traffic: float

    def line(self) -> str:
        return (f"{self.label}: alert firing after {self.firing:.1f}s, rollback commit after {self.commit:.1f}s, "
                f"canary without traffic after {self.no_traffic:.1f}s")


def warm_up(loop: Loop) -> None:
    """Healthy traffic until the gate judges, and past one window of it (old errors have left the window)."""
    wait_for("the canary's recorded series", loop.judging, 30 + 6 * loop.interval)
    time.sleep(loop.window + 2 * loop.interval)
    if loop.firing():
        raise AssertionError("the gate fires on healthy traffic")


def breach(loop: Loop, label: str, error_ratio: float = 1.0, budget: float = 120) -> Breach:
    commits = loop.heads()
    loop.canary.error_ratio = error_ratio
    start = time.monotonic()
    wait_for(f"{ALERT} to fire", loop.firing, budget, 0.1)
    firing = time.monotonic() - start
    wait_for("the rollback commit", lambda: loop.heads() > commits, budget, 0.1)
    commit = time.monotonic() - start
    last = wait_for("the canary to get no traffic", lambda: loop.canary_quiet(3.0), budget, 0.1)
    loop.canary.error_ratio = 0.0
    subject = loop.git("log", "-1", "--format=%s")
    if not subject.startswith(f"rollback {OUT}: {ALERT}"):
        raise AssertionError(f"unexpected commit: {subject}")
    return Breach(label, firing, commit, last - start)


def resume(loop: Loop) -> None:
    """A person resumes the rollout at canary, and the applier applies it."""
    done = loop.rollout("set-stage", "specs/shop.yaml", "canary")
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    loop.commit("resume shop-api at canary")
    wait_for("the canary to get traffic again", lambda: loop.canary_quiet(0.0) is None or
             time.monotonic() - loop.canary.last_request < 1.0, 60, 0.2)


def refused(loop: Loop) -> str:
    """A request without the token changes nothing."""
    commits = loop.heads()
    body = json.dumps({"version": "4", "alerts": [{"status": "firing", "startsAt": "2030-01-01T00:00:00Z",
                                                  "labels": {"alertname": ALERT, "rollout": NAME,
                                                             "namespace": NAMESPACE, "stage": "canary",
                                                             "action": "rollback"}}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{loop.ports['serve']}/alerts", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status != 401 or loop.heads() != commits:
        raise AssertionError(f"a request without the token got {status} and left {loop.heads() - commits} commits")
    return "a request without the token: 401, nothing committed"
