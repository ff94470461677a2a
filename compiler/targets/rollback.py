"""rollback/RUNBOOK.md: how to put every route of this rollout back on stable, and how to know it worked.

The files of the rollback state themselves are written by the targets marked
``rollback=True`` (the pipeline renders them again with the rollback stage in
effect into ``rollback/``); this target writes the procedure beside them: when
to roll back (each stage's gates in words), the one-command way, the instant
ways (HAProxy Runtime API, kill switches and environment overrides), how to
verify (alerts, queries, dashboard), what to preserve and the time budget.
The runbook does not depend on the stage in effect.
"""

from __future__ import annotations

import re
from typing import Any

from compiler.gates import algebra
from compiler.gates.algebra import Binary, Paren, matchers_text
from compiler.targets.routers import base as routing
from compiler import serialize
from compiler import templating
from compiler.ir.plan import GatePlan, Plan, StagePlan
from compiler.spec.units import format_duration
from compiler.targets.base import OTHER, Target

RUNBOOK = "rollback/RUNBOOK.md"
HAPROXY_RUNTIME = routing.HAPROXY_RUNTIME_ROLLBACK
def haproxy_command(plan: Plan) -> str:
    """Send the Runtime API commands with rollout itself (no socat on a minimal host)."""
    import shlex

    return f"rollout runtime ../{HAPROXY_RUNTIME} --socket {shlex.quote(plan.haproxy.admin_socket)}"
VERIFY_WINDOW = 60
BREACH = {
    "rollback": "roll back now (the alert has action=rollback)",
    "hold": "hold: do not promote; investigate, and roll back if it does not recover",
    "alert": "notify: investigate; roll back if the cause is the new version",
}


# --------------------------------------------------------------------------- Markdown escaping


def code_block(value: Any) -> str:
    """A fenced code block that no backtick run inside ``value`` can close early."""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


FILTERS = {"code_block": code_block}


# --------------------------------------------------------------------------- what the runbook says


def gate_words(stage: StagePlan, gate: GatePlan) -> str:
    """``error rate < 1% (measured over 5m, a breach lasting 1m)``, and the gate's own breach action."""
    lasting = f"a breach lasting {format_duration(gate.for_)}" if gate.for_ else "breached as soon as measured"
    own = f"; on breach: {BREACH[gate.on_breach]}" if gate.on_breach != stage.on_breach else ""
    return f"{gate.description} (measured over {format_duration(gate.window)}, {lasting}{own})"


def stage_rows(plan: Plan) -> list[dict[str, Any]]:
    return [
        {
            "name": stage.name,
            "traffic": plan.traffic(stage),
            "gates": [gate_words(stage, g) for g in stage.gates],
            "breach": BREACH[stage.on_breach] if stage.gates else "",
        }
        for stage in plan.stages
    ]


def flag_overrides(plan: Plan) -> list[dict[str, str]]:
    """Environment overrides that take the new version's flags away without a deploy."""
    rows = []
    for flag in plan.flags:
        if not flag.env:
            continue
        if flag.kind == "kill_switch":
            what = "part of the rollback" if dict(flag.engaged)["rollback"] else "forces its flags off"
            rows.append({"flag": flag.name, "env": f"{flag.env}=true", "what": what})
        elif dict(flag.shares)["rollback"] == 0:
            rows.append({"flag": flag.name, "env": f"{flag.env}=false", "what": "off in the rollback state"})
    return rows


def panels(plan: Plan) -> list[dict[str, str]]:
    """The dashboard panels to watch (titles as the grafana target starts them) and what they must show."""
    canary, stable = plan.canary.version, plan.stable.version
    latency = ([{"title": "latency", "expect": f"p95 and p99: {stable} stays at its usual level"}]
               if plan.metrics.canary.has_latency else [])  # the dashboard has latency panels only then
    return [
        {"title": "Stage", "expect": "rollback"},
        {"title": "Canary weight", "expect": "0%"},
        {"title": "Request rate", "expect": f"{canary} falls to 0 while {stable} takes all requests"},
        {"title": "Error ratio", "expect": f"{stable} stays at its usual level"},
        *latency,
        {"title": "Firing rollout alerts", "expect": "empties once the rollback has taken effect"},
    ]


def queries(plan: Plan) -> list[dict[str, str]]:
    seconds = VERIFY_WINDOW
    canary, stable = plan.metrics.canary, plan.metrics.stable
    ratio = Binary("/", Paren(stable.errors(seconds)), Paren(stable.requests(seconds)))
    alerts = matchers_text([("alertstate", "=", "firing"), ("rollout", "=", plan.name),
                            ("namespace", "=", plan.namespace)])
    return [
        {"what": "The new version's request rate falls to 0 (where a router splits traffic)",
         "query": algebra.render(canary.requests(seconds))},
        {"what": "The error ratio of the stable version, now serving everyone, is back to normal",
         "query": algebra.render(ratio)},
        {"what": "No alert of this rollout is firing", "query": f"ALERTS{alerts}"},
    ]


def selector_command(plan: Plan) -> str | None:
    """kubectl printing the colour the active Service of a blue-green rollout selects."""
    if plan.blue_green is None:
        return None
    key = plan.blue_green.color_label.replace(".", "\\.")  # jsonpath: dots in a label key are escaped
    return (f"kubectl -n {plan.namespace} get service {plan.names.active_service} "
            f"-o jsonpath='{{.spec.selector.{key}}}'")


def render(plan: Plan) -> dict[str, str]:
    grafana = plan.alerting.grafana_url if plan.alerting else None
    text = templating.render(
        "RUNBOOK.md.j2",
        filters=FILTERS,
        header=serialize.markdown_header(plan.source.path),
        plan=plan,
        stages=stage_rows(plan),
        within=format_duration(plan.rollback_within),
        rollback_command=plan.command("rollback") + ' --reason "..."',
        promote_command=plan.command("promote"),
        haproxy="haproxy" in plan.targets,
        haproxy_runtime=HAPROXY_RUNTIME,
        haproxy_command=haproxy_command(plan),
        kill_switches=[f for f in plan.flags if f.kind == "kill_switch"],
        engaged_on_rollback=[f.name for f in plan.flags if f.kind == "kill_switch" and dict(f.engaged)["rollback"]],
        overrides=flag_overrides(plan),
        follows=[f.name for f in plan.flags if f.follows_stage],
        queries=queries(plan),
        panels=panels(plan),
        dashboard_url=plan.dashboard_url if grafana else None,
        selector_command=selector_command(plan),
    )
    return {RUNBOOK: text}


TARGET: Target = Target("rollback", render, kinds={RUNBOOK: OTHER})
