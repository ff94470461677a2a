"""PLAN.md: what a reviewer reads in the pull request.

The stage table (traffic, mirror, hold, gates, what a breach does), a mermaid
gantt timeline, the flags at each stage, and which generated files change when
each stage is entered.
"""

from __future__ import annotations

from compiler import serialize
from compiler import templating
from compiler.ir.plan import ROLLBACK, Plan
from compiler.spec.units import format_duration, format_percent
from compiler.targets.base import Rendered, Summary

OWN_PATH = "PLAN.md"


def _gantt_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


#: The first stage starts at midnight of 1 January, a date mermaid reads in the viewer's own time zone: the axis
#: then reads "day 1 00h" everywhere (a Unix time of 0 is 31 December, 19h at UTC-5).
GANTT_START = "2000-01-01"


def _gantt(plan: Plan) -> list[str]:
    lines = []
    current = plan.current.index
    for stage in plan.stages:
        status = []
        if plan.is_rollback:
            status = ["crit"]
        elif stage.index < current:
            status = ["done"]
        elif stage.index == current:
            status = ["active"]
        label = f"{stage.name} {plan.traffic(stage)}".replace(":", " ").replace("#", " ").replace(";", " ")
        ident = f"s{stage.index}"
        start = GANTT_START if stage.index == 0 else f"after s{stage.index - 1}"
        if stage.hold:
            lines.append(f"{label} :{', '.join(status + [ident, start, _gantt_duration(stage.hold)])}")
        else:
            lines.append(f"{label} :{', '.join(['milestone'] + status + [ident, start, '0d'])}")
    return lines


def _changes(rendered: Rendered) -> list[tuple[str, list[str]]]:
    """Per stage, the generated files whose content differs from the stage before (the first: from
    all-stable), from the targets' stage keys; the rollback from the last stage."""
    plan = rendered.plan
    keys = {s.name: rendered.keys(s) for s in plan.stages + (plan.rollback_stage,)}

    def different(before: str, after: str) -> list[str]:
        a, b = keys[before], keys[after]
        return sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))

    out = []
    previous = ROLLBACK
    for stage in plan.stages:
        out.append((stage.name, different(previous, stage.name)))
        previous = stage.name
    out.append((ROLLBACK, different(plan.stages[-1].name, ROLLBACK)))
    return out


def _flag_rows(plan: Plan) -> list[dict[str, object]]:
    rows = []
    stage_names = [s.name for s in plan.stages] + [ROLLBACK]
    for flag in plan.flags:
        shares = dict(flag.shares)
        engaged = dict(flag.engaged)
        if flag.kind == "kill_switch":
            cells = ["engaged" if engaged[s] else "off" for s in stage_names]
        else:
            cells = [format_percent(shares[s]) for s in stage_names]
        rows.append({"name": flag.name, "cells": cells, "flag": flag})
    return rows


def render(rendered: Rendered) -> dict[str, str]:
    plan = rendered.plan
    stages = [
        {
            "stage": stage,
            "traffic": plan.traffic(stage),
            "mirror": format_percent(stage.mirror) if stage.mirror else "",
            "hold": stage.hold_text(),
            "gates": [stage.gate_text(g) for g in stage.gates],
            "current": stage.name == plan.current.name,
        }
        for stage in plan.stages
    ]
    text = templating.render(
        "PLAN.md.j2",
        header=serialize.markdown_header(plan.source.path),
        plan=plan,
        stages=stages,
        current_traffic=plan.traffic(plan.current),
        gantt=_gantt(plan),
        changes=_changes(rendered),
        flag_stage_names=[s.name for s in plan.stages] + [ROLLBACK],
        flag_rows=_flag_rows(plan),
        within=format_duration(plan.rollback_within),
        percent=format_percent,
        duration=format_duration,
    )
    return {OWN_PATH: text}


SUMMARY: Summary = Summary("plan-md", render)
