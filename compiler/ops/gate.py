"""``rollout gate``: ask a live Prometheus whether the stage in effect may advance.

Each gate of the stage in effect is judged by the condition its generated alert
rule uses (:func:`compiler.gates.alerts.gate_expr`), and the canary's traffic by the
starved (hold) condition, with every recorded series inlined
(:func:`compiler.gates.alerts.inline`): the Prometheus asked needs the exporters'
metrics, not the rollout's recording rules.  All queries are evaluated at one
instant: ``--at``, or the Prometheus server's own time.

Decision, and its exit code (:data:`EXIT`): ``rollback`` (4) when a gate of a
stage whose breach action is rollback is breached; ``cannot-judge`` (6) when
Prometheus cannot be asked or a gate's series are missing; ``hold`` (3) when the
canary is starved, the hold is not over, or any other gate is breached (or
breached for less than its ``for``); ``approval`` (5) when everything passes and
the stage waits for a person (``approve: manual``); otherwise ``promote`` (0).
1 is an invalid spec, 2 a usage error.
"""

from __future__ import annotations

import json
import math
import shlex
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, UTC
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

from compiler import diagnostics as diag
from compiler import pipeline
from compiler.gates import alerts, conventions as conv
from compiler.gates.algebra import Binary, Expr, Matching, Paren, render, window
from compiler import serialize
from compiler.ir.plan import GatePlan, Plan
from compiler.spec.units import format_decimal, format_duration, format_latency, format_percent

MAX_RESPONSE = 16 << 20  # bytes read from one API answer

#: The exit code of each decision: scripts tell them apart (`case $?`), and only 0 promotes.
EXIT = {"promote": 0, "hold": 3, "rollback": 4, "approval": 5, "cannot-judge": 6}


class PrometheusError(Exception):
    """Prometheus could not be reached or refused a query: one line for the user."""


# --------------------------------------------------------------------------- the HTTP API


@dataclass(frozen=True)
class Prometheus:
    url: str  # base URL, e.g. http://prometheus:9090 (a path prefix is kept)
    timeout: float = 10.0

    def _call(self, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
        """One API call, bounded as a whole by ``timeout`` (a server that trickles its answer cannot stretch it)."""
        outcome: list[dict[str, Any] | PrometheusError] = []

        def call() -> None:
            try:
                outcome.append(self._request(endpoint, params))
            except PrometheusError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=call, daemon=True)  # left behind on a timeout: it ends with the process
        worker.start()
        worker.join(self.timeout)
        if not outcome:
            raise PrometheusError(f"no complete answer from Prometheus at {self.url} within {self.timeout:g}s")
        found = outcome[0]
        if isinstance(found, PrometheusError):
            raise found
        return found

    def _request(self, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}/api/v1/{endpoint}", data=body, method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _answer(response.read(MAX_RESPONSE))
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read(MAX_RESPONSE))
                detail = answer["error"]
            except (ValueError, KeyError, TypeError, OSError):
                raise PrometheusError(f"HTTP {exc.code} from {self.url}: not a Prometheus API") from None
            raise PrometheusError(f"Prometheus refused a query ({exc.code}): {detail}") from None
        except urllib.error.URLError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc.reason}") from None
        except TimeoutError:
            raise PrometheusError(f"no answer from Prometheus at {self.url} within {self.timeout:g}s") from None
        except OSError as exc:
            raise PrometheusError(f"cannot read from Prometheus at {self.url}: {exc}") from None

    def now(self) -> float:
        """The server's time (so that a client's clock never decides what "now" is)."""
        data = self._call("query", {"query": "time()"})
        try:
            value = float(data["result"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise PrometheusError(f"unexpected answer from {self.url} to time()") from None
        if not 0 <= value <= LATEST:
            raise PrometheusError(f"unexpected answer from {self.url} to time(): {value:g}")
        return value

    def instant(self, expr: str, at: float) -> list[float]:
        """The values of an instant vector at ``at`` (empty: no series)."""
        data = self._call("query", {"query": expr, "time": _stamp(at)})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            return [_number(_pair(result)[1])]
        return [_number(_pair(item.get("value") if isinstance(item, dict) else None)[1]) for item in _list(result)]

    def held(self, expr: str, at: float, seconds: int) -> bool:
        """``expr`` had a value at every rule evaluation of the ``seconds`` up to ``at`` (an alert's ``for``)."""
        step = conv.EVALUATION_INTERVAL
        data = self._call("query_range", {"query": expr, "start": _stamp(at - seconds), "end": _stamp(at),
                                          "step": str(step)})
        needed = seconds // step + 1
        return any(len(_list(item.get("values") if isinstance(item, dict) else None)) >= needed
                   for item in _list(data.get("result")))


def _list(value: object) -> list[Any]:
    """A JSON array of the API's answer (``result``, ``values``); anything else is not a Prometheus answer."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PrometheusError(f"unexpected answer: expected a list, got {type(value).__name__}")
    return value


def _pair(value: object) -> list[Any]:
    """A sample: ``[time, "value"]``."""
    if not isinstance(value, list) or len(value) != 2:
        raise PrometheusError("unexpected answer: a sample is not [time, value]")
    return value


def _answer(raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        raise PrometheusError("the answer is not JSON: is --prometheus the Prometheus base URL?") from None
    if not isinstance(answer, dict) or answer.get("status") != "success" or not isinstance(answer.get("data"), dict):
        detail = answer.get("error") if isinstance(answer, dict) else None
        raise PrometheusError(f"Prometheus refused a query: {detail or 'unexpected answer'}")
    data: dict[str, Any] = answer["data"]
    return data


def _number(text: object) -> float:
    try:
        return float(str(text))  # Prometheus writes NaN, +Inf, -Inf as Python reads them
    except ValueError:
        raise PrometheusError(f"unexpected sample value {text!r}") from None


def _stamp(at: float) -> str:
    return f"{at:.3f}"


#: The latest time the API and RFC 3339 can write (9999-12-31T23:59:59Z).
LATEST = 253402300799.0


def parse_time(text: str) -> float:
    """RFC 3339 (``2024-05-01T10:00:00Z``) or Unix seconds -> Unix seconds."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not 0 <= seconds <= LATEST:  # NaN fails too
            raise ValueError(f"'{text}' is not a time: Unix seconds from 0 to {LATEST:.0f} (9999-12-31)")
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'{text}' is neither RFC 3339 (2024-05-01T10:00:00Z) nor Unix seconds") from None
    if moment.tzinfo is None:
        raise ValueError(f"'{text}' has no time zone: add Z or an offset such as +02:00")
    try:
        seconds = moment.timestamp()
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"'{text}' is out of range") from None
    if not 0 <= seconds <= LATEST:
        raise ValueError(f"'{text}' is before 1970 or after 9999")
    return seconds


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- judging


@dataclass
class GateResult:
    gate: str
    window: str
    requests: float  # canary requests in the gate's window
    measured: float | None  # the raw measurement (error ratio, quantile, factor, custom value)
    judged: float | None  # the bound the gate compares with its threshold
    threshold: str  # "max 1%"
    verdict: str  # pass | breached | pending | not judged | no data
    action: str  # the stage's breach action: rollback | hold | notify


@dataclass
class WindowResult:
    window: str
    requests: float
    min_requests: int
    starved: bool
    measured: bool = True  # Prometheus has the canary's request series (without it nothing is judged)


@dataclass
class Report:
    rollout: str
    environment: str | None
    stage: str
    at: str
    decision: str  # promote | hold | rollback | approval | cannot-judge
    reasons: list[str]
    command: str | None
    next_stage: str | None
    gates: list[GateResult] = field(default_factory=list)
    traffic: list[WindowResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT[self.decision]


def measures(plan: Plan, gate: GatePlan) -> tuple[Expr, Expr]:
    """(what the gate measures, the bound it judges), as PromQL over the recorded series."""
    judged = alerts.gate_value(plan, gate)
    if gate.kind == "error_rate":
        return alerts.ratio_expr(plan, "canary", gate.window), judged
    if gate.kind == "latency":
        assert gate.quantile is not None
        return conv.series(plan, "canary", conv.latency_record(gate.quantile, gate.window)), judged
    if gate.kind == "ratio":
        stable = alerts.ratio_expr(plan, "stable", gate.window)
        upper = conv.series(plan, "stable", conv.ratio_upper_record(gate.window))
        canary = alerts.ratio_expr(plan, "canary", gate.window)
        apart = Matching(False, ("variant",))
        return (Binary("/", Paren(canary), Paren(stable), matching=apart),
                Binary("/", Paren(judged), Paren(upper), matching=apart))
    return judged, judged


def _requests(plan: Plan, seconds: int) -> Expr:
    return conv.series(plan, "canary", conv.requests_record(seconds)) * seconds


def _worst(values: list[float], gate: GatePlan) -> float | None:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    return max(values) if gate.bound == "max" else min(values)


def threshold_text(gate: GatePlan) -> str:
    spellings: dict[str, Callable[[Fraction], str]] = {"error_rate": format_percent, "latency": format_latency}
    value = spellings.get(gate.kind, format_decimal)(gate.threshold)
    return f"{gate.bound} {value}{'x stable' if gate.kind == 'ratio' else ''}"


def judge(plan: Plan, prometheus: Prometheus, at: float, since: float | None = None) -> Report:
    """Ask ``prometheus`` about every gate of the stage in effect at ``at``; decide."""
    stage = plan.current

    def ask(expr: Expr) -> list[float]:
        return prometheus.instant(render(alerts.inline(plan, expr)), at)

    answers = {w: ask(_requests(plan, w)) for w in conv.judged_windows(stage)}
    counts = {w: sum(values) for w, values in answers.items()}
    traffic = [WindowResult(window(w), counts[w], plan.metrics.min_requests,
                            bool(ask(alerts.starved_expr(plan, w))), bool(answers[w])) for w in counts]
    gates = []
    for gate in stage.gates:
        measured_expr, judged_expr = measures(plan, gate)
        judged = _worst(ask(judged_expr), gate)
        condition = render(alerts.inline(plan, alerts.gate_expr(plan, gate)))
        if prometheus.instant(condition, at):
            held = gate.for_ == 0 or prometheus.held(condition, at, gate.for_)
            verdict = "breached" if held else "pending"
        elif counts[gate.window] < plan.metrics.min_requests:
            verdict = "not judged"
        else:
            verdict = "pass" if judged is not None else "no data"
        gates.append(GateResult(gate.name, window(gate.window), counts[gate.window],
                                _worst(ask(measured_expr), gate), judged, threshold_text(gate), verdict, gate.action))
    return decide(plan, at, since, gates, traffic)


def decide(plan: Plan, at: float, since: float | None, gates: list[GateResult], traffic: list[WindowResult]) -> Report:
    stage = plan.current
    following = plan.next_stage()
    breached = [g for g in gates if g.verdict == "breached"]
    reasons = _reasons(plan, at, since, gates, traffic)
    if any(g.action == "rollback" for g in breached):
        decision = "rollback"
    elif any(g.verdict == "no data" for g in gates) or not all(t.measured for t in traffic):
        decision = "cannot-judge"
    elif reasons:
        decision = "hold"
    elif plan.awaits_approval:
        decision = "approval"
        reasons.append(f"stage {stage.name} needs a person's approval: `{plan.command('approve')} --by NAME` "
                       f"(the owner: {plan.owner}), reviewed in a pull request")
    else:
        decision = "promote"
        if stage.hold and since is None:
            reasons.append(f"the hold ({format_duration(stage.hold)} at stage {stage.name}) is not checked: "
                           "pass --since to check it")
        if following is None:
            reasons.append(f"{stage.name} is the last stage: nothing to promote to")
    command = None
    if decision == "rollback":
        why = f"gate {breached[0].gate} breached at stage {stage.name}"
        command = f"{plan.command('rollback')} --reason {shlex.quote(why)}"
    elif decision == "promote" and following is not None:
        command = plan.command("promote")
    elif decision == "approval":
        command = f"{plan.command('approve')} --by NAME"
    return Report(plan.out, plan.environment, stage.name, rfc3339(at), decision, reasons, command,
                  following.name if following and decision == "promote" else None, gates, traffic)


def _reasons(plan: Plan, at: float, since: float | None, gates: list[GateResult],
             traffic: list[WindowResult]) -> list[str]:
    """Why the stage may not advance now: each breach, gap in the data, starved window or unfinished hold."""
    stage = plan.current
    reasons: list[str] = []
    if plan.is_rollback:
        reasons.append(f"{plan.out} is rolled back: resume with `{plan.command('set-stage')} STAGE`")
    for g in gates:
        if g.verdict == "breached":
            reasons.append(f"gate {g.gate} breached ({g.threshold}); breach action: {g.action}")
        elif g.verdict == "pending":
            reasons.append(f"gate {g.gate} breached, for less than its `for`: not yet a rollback, not a promotion")
        elif g.verdict == "no data":
            reasons.append(f"gate {g.gate}: no measurement from Prometheus (are the metrics exported and scraped?)")
    for t in traffic:
        if not t.measured:
            reasons.append(f"no canary request series over {t.window} in Prometheus: nothing can be judged (are "
                           "the metrics exported and scraped, with the labels the metrics source selects?)")
        elif t.starved:
            reasons.append(f"canary starved: {t.requests:.0f} requests in {t.window}, fewer than the "
                           f"{t.min_requests} (metrics.min_requests) a gate needs to judge")
    if since is not None and stage.hold and at - since < stage.hold:
        reasons.append(f"hold not over: {format_duration(int(at - since))} of {format_duration(stage.hold)} "
                       f"at stage {stage.name}")
    return reasons


# --------------------------------------------------------------------------- output


def _value(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[str(value)]
    if kind == "error_rate":
        return f"{value * 100:.3g}%"
    if kind == "latency":
        return f"{value * 1000:.3g}ms" if abs(value) < 1 else f"{value:.3g}s"
    if kind == "ratio":
        return f"{value:.3g}x"
    return f"{value:.6g}"


def render_text(plan: Plan, report: Report) -> str:
    kinds = {g.name: g.kind for g in plan.current.gates}
    rows = [["GATE", "WINDOW", "REQUESTS", "MEASURED", "JUDGED", "THRESHOLD", "VERDICT"]]
    for g in report.gates:
        kind = kinds[g.gate]
        judged = _value(g.judged, kind) + (
            " (bound)" if kind in ("error_rate", "latency", "ratio") and g.judged is not None else ""
        )
        verdict = f"{g.verdict}: {g.action}" if g.verdict == "breached" else g.verdict
        rows.append([g.gate, g.window, f"{g.requests:.0f}", _value(g.measured, kind), judged, g.threshold, verdict])
    for t in report.traffic:
        rows.append(["min_requests", t.window, f"{t.requests:.0f}", "-", "-", f"min {t.min_requests}",
                     "no data" if not t.measured else "starved: hold" if t.starved else "pass"])
    title = f"{report.rollout} at stage {plan.current.name} ({plan.traffic(plan.current)}), {report.at}"
    lines = [title]
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    elif report.decision != "cannot-judge" or not plan.current.gates:
        lines.append("no gates at this stage")
    judged = f" to {report.next_stage}" if report.next_stage else ""
    lines.append(f"decision: {report.decision}{judged} (exit {report.exit_code})")
    lines += [f"  {r}" for r in report.reasons]
    if report.command:
        lines.append(f"run: {report.command}")
    return "\n".join(lines) + "\n"


def _json_number(value: float | None) -> float | str | None:
    if value is None or math.isnan(value):
        return None
    return value if math.isfinite(value) else ("+Inf" if value > 0 else "-Inf")


def render_json(report: Report) -> str:
    data = asdict(report)
    data["exit_code"] = report.exit_code
    for g in data["gates"]:
        for key in ("requests", "measured", "judged"):
            g[key] = _json_number(g[key])
    for t in data["traffic"]:
        t["requests"] = _json_number(t["requests"])
    return serialize.json_text(data)


# --------------------------------------------------------------------------- the command


def pick_plan(spec: Path, env: str | None) -> Plan:
    result = pipeline.analyse([spec])
    if not result.ok:
        click.echo(diag.render(result.diagnostics, "text"), nl=False, err=True)
        raise SystemExit(1)
    units = [u for u in result.units if env is None or u.plan.environment == env]
    known = ", ".join(sorted(u.plan.environment or "-" for u in result.units))
    if not units:
        raise click.BadParameter(f"no environment '{env}' in {spec} (environments: {known})", param_hint="--env")
    if len(units) > 1:
        raise click.BadParameter(f"{spec} has several environments ({known}): choose one", param_hint="--env")
    return units[0].plan


class Time(click.ParamType[float, "str | float"]):
    name = "TIME"

    def convert(self, value: str | float, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _prometheus_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"'{value}' is not an http(s) URL such as http://prometheus:9090")
    return value


@click.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--env", help="The environment to judge, for specs with `environments`.")
@click.option("--prometheus", "url", required=True, callback=_prometheus_url,
              help="Base URL of the Prometheus that scrapes the exporters (e.g. http://prometheus:9090).")
@click.option("--at", type=Time(), help="Judge at this time (RFC 3339 or Unix seconds) instead of now.")
@click.option("--since", type=Time(),
              help="When the stage took effect (RFC 3339 or Unix seconds): also check that its hold is over.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for each answer from Prometheus.")
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True,
              help="A table for people, or JSON for machines.")
def gate(spec: Path, env: str | None, url: str, at: float | None, since: float | None, timeout: float,
         fmt: str) -> None:
    """Ask Prometheus whether SPEC's stage in effect may advance: promote, hold or rollback.

    Each gate of the stage is judged by the same condition as its generated alert,
    with the recorded series expanded into the metrics source's queries, so the
    Prometheus needs only the exporters' metrics.  Rollback: a gate of a stage
    whose breach action is rollback is breached.  Hold: the canary is starved
    (fewer than metrics.min_requests requests in a gate's window), another gate is
    breached, or a breach has lasted less than its `for`.  Otherwise promote; the
    stage's hold is checked only with --since.

    Exit 0: promote. 3: hold. 4: rollback. 5: approval pending (a person must
    approve the stage: `rollout approve`). 6: cannot judge (Prometheus unreachable
    or erroring, or a gate's series missing). 1: an invalid spec. 2: usage.
    """
    plan = pick_plan(spec, env)
    report = ask(plan, Prometheus(url, timeout), at, since)
    click.echo(render_json(report) if fmt == "json" else render_text(plan, report), nl=False)
    raise SystemExit(report.exit_code)


def ask(plan: Plan, prometheus: Prometheus, at: float | None = None, since: float | None = None) -> Report:
    """The decision for the stage in effect; ``cannot-judge`` when Prometheus cannot answer."""
    try:
        server_time = prometheus.now()  # also tells an unreachable Prometheus before any judging
        return judge(plan, prometheus, at if at is not None else server_time, since)
    except PrometheusError as exc:
        moment = rfc3339(at) if at is not None else rfc3339(datetime.now(UTC).timestamp())
        return Report(plan.out, plan.environment, plan.current.name, moment, "cannot-judge", [str(exc)], None, None)
