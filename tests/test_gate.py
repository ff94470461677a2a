"""`rollout gate` against a real Prometheus holding only exporter metrics made for the test.

The TSDB is built with `promtool tsdb create-blocks-from openmetrics` from the `generic`
source's metrics of tests/golden/in-checkout.yaml (stage canary: error rate < 1%, p99 < 200ms,
min_requests 200, window 5m, breach action rollback), in four 15-minute phases that end ten
minutes before now: healthy, a 10x error breach, a starved canary, a latency breach.
"""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import promql_parser
import pytest
from click.testing import CliRunner

from compiler.gates import alerts, conventions
from compiler.gates.algebra import render
from compiler.cli import main
from conftest import ALL_SPECS, GOLDEN, ROOT, free_port, plans_of, tool

SPEC = GOLDEN / "in-checkout.yaml"
SCRAPE = 15
PHASE = 900
STABLE, CANARY = "v1.9.0", "v2.0.0"
BUCKETS = ("0.05", "0.1", "0.2", "0.5", "1", "+Inf")
FAST = (0.6, 0.995, 1.0, 1.0, 1.0, 1.0)  # cumulative share of requests per bucket: p99 about 0.1s
SLOW = (0.3, 0.4, 0.5, 1.0, 1.0, 1.0)  # half the requests slower than 200ms


@dataclass(frozen=True)
class Phase:
    name: str
    canary_rps: float
    canary_errors: float  # share of canary requests answered 5xx
    canary_latency: tuple[float, ...]


PHASES = (
    Phase("healthy", 2.0, 0.005, FAST),
    Phase("errors", 2.0, 0.10, FAST),  # 10x the gate's 1%
    Phase("starved", 0.2, 0.005, FAST),  # 60 requests per 5m, below min_requests 200
    Phase("latency", 2.0, 0.005, SLOW),
)


def openmetrics(start: int) -> str:
    """Counters of both versions scraped every 15s through the phases, one series after another."""
    series: dict[str, list[str]] = {}
    totals: dict[str, float] = {}

    def add(name: str, labels: str, t: int, increase: float) -> None:
        key = f"{name}{{{labels}}}"
        totals[key] = totals.get(key, 0.0) + increase
        series.setdefault(key, []).append(f"{key} {totals[key]:.4f} {t}")

    for i, phase in enumerate(PHASES):
        for t in range(start + i * PHASE + (SCRAPE if i else 0), start + (i + 1) * PHASE + 1, SCRAPE):
            step = 0 if t == start else SCRAPE
            for version, rps, errors, latency in (
                (STABLE, 5.0, 0.005, FAST),
                (CANARY, phase.canary_rps, phase.canary_errors, phase.canary_latency),
            ):
                common = f'namespace="shop",service="checkout",version="{version}"'
                add("http_requests_total", f'code="200",{common}', t, rps * (1 - errors) * step)
                add("http_requests_total", f'code="500",{common}', t, rps * errors * step)
                for le, share in zip(BUCKETS, latency):
                    add("http_request_duration_seconds_bucket", f'{common},le="{le}"', t, rps * share * step)
    return "".join(line + "\n" for lines in series.values() for line in lines) + "# EOF\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prometheus")
    start = (int(time.time()) // SCRAPE * SCRAPE) - 600 - len(PHASES) * PHASE
    (folder / "data.om").write_text(openmetrics(start))
    created = subprocess.run([tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(folder / "data.om"),
                              str(folder / "tsdb")], capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    (folder / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    process = subprocess.Popen(
        [tool("prometheus"), f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
         f"--config.file={folder / 'prometheus.yml'}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("Prometheus did not become ready")
        yield url, {phase.name: start + (i + 1) * PHASE for i, phase in enumerate(PHASES)}
    finally:
        process.terminate()
        process.wait(timeout=20)


def gate(url: str, *args: object, spec: Path = SPEC):
    result = CliRunner().invoke(main, ["gate", str(spec), "--prometheus", url, *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def report(url: str, at: int, spec: Path = SPEC, *args: str) -> tuple[int, dict]:
    result = gate(url, "--at", at, "--format", "json", *args, spec=spec)
    return result.exit_code, json.loads(result.stdout)


def verdicts(data: dict) -> dict[str, str]:
    return {g["gate"]: g["verdict"] for g in data["gates"]}


def test_a_healthy_canary_may_be_promoted(prometheus):
    url, at = prometheus
    code, data = report(url, at["healthy"])
    assert (code, data["decision"], data["next_stage"]) == (0, "promote", "ramp")
    assert verdicts(data) == {"error_rate": "pass", "p99_latency": "pass"}
    error_rate = data["gates"][0]
    assert error_rate["requests"] == pytest.approx(600, rel=0.01)  # 2 requests/s over 5m
    assert error_rate["measured"] == pytest.approx(0.005, rel=0.01)
    assert 0 <= error_rate["judged"] < 0.005  # the lower confidence bound, below the measurement
    assert data["traffic"] == [
        {"window": "5m", "requests": error_rate["requests"], "min_requests": 200, "starved": False, "measured": True}
    ]
    assert data["command"] == "rollout promote tests/golden/in-checkout.yaml"


def test_a_tenfold_error_rate_rolls_back(prometheus):
    url, at = prometheus
    code, data = report(url, at["errors"])
    assert (code, data["decision"], data["exit_code"]) == (4, "rollback", 4)
    assert verdicts(data) == {"error_rate": "breached", "p99_latency": "pass"}
    assert data["gates"][0]["measured"] == pytest.approx(0.10, rel=0.01)
    assert data["gates"][0]["judged"] > 0.01
    assert data["command"].startswith("rollout rollback tests/golden/in-checkout.yaml --reason ")


def test_a_starved_canary_holds(prometheus):
    url, at = prometheus
    code, data = report(url, at["starved"])
    assert (code, data["decision"], data["exit_code"]) == (3, "hold", 3)
    assert verdicts(data) == {"error_rate": "not judged", "p99_latency": "not judged"}
    assert data["traffic"][0]["starved"] and data["traffic"][0]["requests"] == pytest.approx(60, rel=0.01)
    assert data["command"] is None


def test_a_latency_breach_rolls_back(prometheus):
    url, at = prometheus
    code, data = report(url, at["latency"])
    assert (code, data["decision"], data["exit_code"]) == (4, "rollback", 4)
    assert verdicts(data) == {"error_rate": "pass", "p99_latency": "breached"}
    assert data["gates"][1]["judged"] > 0.2


def test_the_table_names_each_gate_the_decision_and_the_command(prometheus):
    url, at = prometheus
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at["errors"]))
    result = gate(url, "--at", moment)
    assert result.exit_code == 4
    lines = result.stdout.splitlines()
    assert lines[0] == f"shop/checkout at stage canary (1%), {moment}"
    assert lines[1].split() == ["GATE", "WINDOW", "REQUESTS", "MEASURED", "JUDGED", "THRESHOLD", "VERDICT"]
    assert lines[2].split() == [
        "error_rate",
        "5m",
        "600",
        "10%",
        "6.24%",
        "(bound)",
        "max",
        "1%",
        "breached:",
        "rollback",
    ]
    assert lines[4].split() == ["min_requests", "5m", "600", "-", "-", "min", "200", "pass"]
    assert "decision: rollback (exit 4)" in lines
    assert (
        lines[-1]
        == "run: rollout rollback tests/golden/in-checkout.yaml --reason 'gate error_rate breached at stage canary'"
    )


def test_the_hold_is_checked_with_since(prometheus):
    url, at = prometheus
    early = gate(url, "--at", at["healthy"], "--since", at["healthy"] - 3600)
    assert early.exit_code == 3 and "hold not over: 1h of 2h at stage canary" in early.stdout
    late = gate(url, "--at", at["healthy"], "--since", at["healthy"] - 7200)
    assert late.exit_code == 0 and "decision: promote to ramp (exit 0)" in late.stdout


def test_a_breach_shorter_than_its_for_holds_and_an_alert_stage_never_rolls_back(prometheus, tmp_path):
    spec = tmp_path / "checkout.yaml"
    spec.write_text(SPEC.read_text().replace("current: canary", "current: full"))
    url, at = prometheus
    code, data = report(url, at["errors"], spec)  # error_rate at full: max 0.1% for 1h; breached for 15 minutes
    assert (code, data["decision"], data["exit_code"]) == (3, "hold", 3)
    assert verdicts(data)["error_rate"] == "pending"
    code, data = report(url, at["latency"], spec)  # p99 breached; the stage's breach action is alert
    assert (code, data["decision"], data["exit_code"]) == (3, "hold", 3)
    assert verdicts(data)["p99_latency"] == "breached" and data["gates"][1]["action"] == "notify"
    spec.write_text(spec.read_text().replace("for: 1h", "for: 10m"))
    code, data = report(url, at["errors"], spec)  # breached for the whole 10m
    assert (code, data["decision"], verdicts(data)["error_rate"]) == (3, "hold", "breached")


def test_a_rolled_back_rollout_has_nothing_to_judge(prometheus):
    url, at = prometheus
    result = gate(url, "--at", at["healthy"], spec=GOLDEN / "in-rollback.yaml")
    assert result.exit_code == 3 and "decision: hold" in result.stdout
    assert "is rolled back: resume with `rollout set-stage tests/golden/in-rollback.yaml STAGE`" in result.stdout


def test_an_unreachable_prometheus_cannot_judge_exit_6():
    result = gate(f"http://127.0.0.1:{free_port()}", "--at", "1700000000")
    assert result.exit_code == 6 and "Traceback" not in result.output
    assert "decision: cannot-judge (exit 6)" in result.stdout
    assert "cannot reach Prometheus at http://127.0.0.1:" in result.stdout
    code, data = report(f"http://127.0.0.1:{free_port()}", 1700000000)
    assert (code, data["decision"], data["exit_code"]) == (6, "cannot-judge", 6)


def test_a_refused_query_cannot_judge_exit_6(prometheus):
    url, _ = prometheus
    result = gate(url + "/no/such/prefix", "--at", "1700000000")
    assert result.exit_code == 6 and "HTTP 404 from " in result.stdout


def test_missing_series_cannot_judge_exit_6(prometheus, tmp_path):
    url, at = prometheus
    spec = tmp_path / "checkout.yaml"
    spec.write_text(SPEC.read_text().replace("namespace: shop", "namespace: elsewhere"))
    code, data = report(url, at["healthy"], spec)
    assert (code, data["decision"]) == (6, "cannot-judge")  # no series: nothing to judge, and it says why
    assert any("no canary request series over 5m" in r for r in data["reasons"]), data["reasons"]


def test_a_stage_that_needs_approval_waits_for_a_person_exit_5(prometheus, tmp_path):
    url, at = prometheus
    spec = tmp_path / "checkout.yaml"
    text = SPEC.read_text()
    spec.write_text(re.sub(r"(- name: canary\n)", r"\1    approve: manual\n", text, count=1))
    code, data = report(url, at["healthy"], spec, "--since", str(at["healthy"] - 7200))
    assert (code, data["decision"], data["exit_code"]) == (5, "approval", 5)
    assert any("needs a person's approval" in r and "rollout approve" in r for r in data["reasons"])
    approved = CliRunner().invoke(main, ["approve", str(spec), "--by", "alice"])
    assert approved.exit_code == 0, approved.output
    code, data = report(url, at["healthy"], spec, "--since", str(at["healthy"] - 7200))
    assert (code, data["decision"]) == (0, "promote")


@pytest.mark.parametrize("args", [["--at", "yesterday"], ["--at", "2024-05-01T10:00:00"], ["--format", "yaml"]])
def test_usage_errors_exit_2(args):
    assert gate("http://127.0.0.1:9", *args).exit_code == 2


def test_a_url_without_scheme_and_an_ambiguous_spec_are_usage_errors():
    assert CliRunner().invoke(main, ["gate", str(SPEC), "--prometheus", "prometheus:9090"]).exit_code == 2
    several = CliRunner().invoke(main, ["gate", "specs/ai-orchestra.yaml", "--prometheus", "http://127.0.0.1:9"])
    assert several.exit_code == 2 and "has several environments (production, staging): choose one" in several.output


def test_inlined_conditions_read_only_exporter_metrics():
    for plan in plans_of(*ALL_SPECS):
        for stage in plan.stages + (plan.rollback_stage,):
            staged = plan.at(stage.name)
            exprs = [alerts.gate_expr(staged, g) for g in stage.gates]
            exprs += [alerts.starved_expr(staged, w) for w in conventions.judged_windows(stage)]
            for expr in exprs:
                inlined = render(alerts.inline(staged, expr))
                assert "rollout_variant:" not in inlined and "rollout_gate:" not in inlined, inlined
                promql_parser.parse(inlined)


# --------------------------------------------------------------------------- rollout advance


def _repository(tmp_path: Path, since: float, text: str | None = None) -> Path:
    """specs/checkout.yaml and its compiled files, committed as if at ``since``."""
    from conftest import GIT_IDENTITY, git

    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    (repo / "specs" / "checkout.yaml").write_text(text or SPEC.read_text())
    assert CliRunner().invoke(main, ["compile", str(repo / "specs"), "-o", str(repo / "generated")]).exit_code == 0
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    stamp = f"@{int(since)} +0000"
    subprocess.run(["git", "commit", "--quiet", "-m", "checkout at canary"], cwd=repo, check=True,
                   env={**os.environ, **GIT_IDENTITY, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
    return repo


def advance(repo: Path, url: str, at: float, *args: str) -> subprocess.CompletedProcess[str]:
    from conftest import GIT_IDENTITY

    return subprocess.run([sys.executable, "-m", "compiler", "advance", "specs", "-o", "generated", "--prometheus",
                           url, "--at", str(at), *args], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **GIT_IDENTITY, "PYTHONPATH": str(ROOT)})


def test_advance_promotes_a_healthy_canary_whose_hold_is_over(prometheus, tmp_path):
    from conftest import git

    url, at = prometheus
    repo = _repository(tmp_path, at["healthy"] - 7200)
    dry = advance(repo, url, at["healthy"], "--dry-run")
    assert dry.returncode == 0 and "shop/checkout at canary: would advance: canary -> ramp" in dry.stdout, dry.stderr
    assert "current: canary" in (repo / "specs/checkout.yaml").read_text()
    done = advance(repo, url, at["healthy"])
    assert done.returncode == 0 and "shop/checkout at canary: advanced: canary -> ramp" in done.stdout, done.stderr
    assert "current: ramp" in (repo / "specs/checkout.yaml").read_text()
    assert git(repo, "log", "-1", "--format=%s").strip() == "advance shop/checkout: canary -> ramp"
    assert git(repo, "status", "--porcelain") == ""


def test_advance_leaves_alone_what_must_not_move(prometheus, tmp_path):
    url, at = prometheus
    early = _repository(tmp_path / "early", at["healthy"] - 600)  # a 2h hold, 10 minutes in
    assert "held: hold: hold not over: 10m of 2h" in advance(early, url, at["healthy"]).stdout
    breached = _repository(tmp_path / "breached", at["errors"] - 7200)
    assert "held: rollback" in advance(breached, url, at["errors"]).stdout  # advance never rolls back: serve does
    text = re.sub(r"(- name: canary\n)", r"\1    approve: manual\n", SPEC.read_text(), count=1)
    approval = _repository(tmp_path / "approval", at["healthy"] - 7200, text)
    out = advance(approval, url, at["healthy"]).stdout
    assert "waits for approval" in out and "rollout approve specs/checkout.yaml --by NAME" in out
    rolled = _repository(tmp_path / "rolled", at["healthy"] - 7200, SPEC.read_text().replace("current: canary",
                                                                                           "current: rollback"))
    assert "rolled back: resume with set-stage" in advance(rolled, url, at["healthy"]).stdout
    paused = _repository(tmp_path / "paused", at["healthy"] - 7200)
    (paused / ".rollout-pause").write_text("change freeze until Monday\n")
    out = advance(paused, url, at["healthy"]).stdout
    assert out.startswith("paused:") and "current: canary" in (paused / "specs/checkout.yaml").read_text()
    edited = _repository(tmp_path / "edited", at["healthy"] - 7200)  # a person's edit, not committed
    spec = edited / "specs/checkout.yaml"
    spec.write_text(spec.read_text().replace("current: canary", "current: canary  # reviewed by nobody yet"))
    out = advance(edited, url, at["healthy"]).stdout
    assert "failed" in out and "has uncommitted changes" in out, out
    assert "reviewed by nobody yet" in spec.read_text() and "current: canary" in spec.read_text()


# --------------------------------------------------------------------------- answers no Prometheus should give


class _Broken:
    """An HTTP server answering every API call with one kind of broken answer (time() answered well unless the
    mode breaks it)."""

    def __init__(self, mode: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading
        import urllib.parse

        def answer(data: object) -> bytes:
            return json.dumps({"status": "success", "data": data}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                query = urllib.parse.parse_qs(self.rfile.read(length).decode()).get("query", [""])[0]
                if mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    for _ in range(20):
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.5)
                    return
                if query == "time()":
                    value = {"time-nan": "NaN", "time-huge": "1e20"}.get(mode, "1700000000")
                    body = answer({"resultType": "scalar", "result": [float(value), value]})
                else:
                    body = {
                        "string-result": answer({"resultType": "vector", "result": "abc"}),
                        "numbers-result": answer({"resultType": "vector", "result": [1, 2]}),
                        "scalar-without-result": answer({"resultType": "scalar"}),
                        "list-value": answer({"resultType": "vector", "result": [{"metric": {}, "value": [1, ["x"]]}]}),
                        "empty": answer({"resultType": "vector", "result": []}),
                    }.get(mode, answer({"resultType": "vector", "result": []}))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode, says", [
    ("string-result", "unexpected answer: expected a list"),
    ("numbers-result", "a sample is not [time, value]"),
    ("scalar-without-result", "a sample is not [time, value]"),
    ("list-value", "unexpected sample value"),
    ("time-nan", "to time(): nan"),
    ("time-huge", "to time(): 1e+20"),
    ("empty", "no canary request series over 5m in Prometheus"),
])
def test_an_answer_no_prometheus_gives_cannot_judge_exit_6(mode, says):
    """Never a traceback, never a promotion: a broken or empty answer judges nothing."""
    server = _Broken(mode)
    try:
        result = gate(server.url, "--timeout", "5")
    finally:
        server.close()
    assert result.exit_code == 6 and "Traceback" not in result.output, result.output
    assert "decision: cannot-judge (exit 6)" in result.stdout and says in result.stdout, result.stdout
    assert "no gates at this stage" not in result.stdout


def test_timeout_bounds_a_whole_answer_that_trickles_in():
    server = _Broken("trickle")
    started = time.monotonic()
    try:
        result = gate(server.url, "--timeout", "1")
    finally:
        server.close()
    assert result.exit_code == 6 and "no complete answer from Prometheus" in result.stdout, result.output
    assert time.monotonic() - started < 8  # one bounded call (the server would trickle for 10s per call)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e20", "10000-01-01T00:00:00Z"])
def test_times_that_are_not_times_are_usage_errors(value):
    for option in ("--at", "--since"):
        result = gate("http://127.0.0.1:9", option, value)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
