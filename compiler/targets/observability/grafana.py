"""grafana: a dashboard per rollout, and a fleet overview.

Per rollout (``grafana/``):

- ``dashboard.json``: the stage in effect and the canary's weight; stable
  against canary for request rate, error ratio and p95/p99 latency, each gate
  drawn as a threshold on the panel that shows what it judges; custom gates;
  the rollout's firing alerts as annotations; a Prometheus datasource variable.
  Every query reads the series the Prometheus target records
  (:mod:`compiler.promql`), so the dashboard shows what the gates judge.
- ``dashboard-configmap.yaml``: the same JSON in a ConfigMap labelled
  ``grafana_dashboard: "1"`` for the Grafana sidecar.

For all rollouts (``_fleet/grafana/rollouts.json``): every rollout's stage,
weight and firing alerts, live from Prometheus, with links to the dashboards.

Dashboards are plain dicts with a fixed ``schemaVersion``, uids from the plan
(a hash) and panel ids numbered in a fixed order.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any
from collections.abc import Mapping, Sequence

from compiler import serialize
from compiler.gates import conventions as conv
from compiler.gates.algebra import Binary, Matching, matchers_text
from compiler.gates.statistics import CONFIDENCE
from compiler.spec import names
from compiler.targets import kube
from compiler.ir.fleet import FleetEntry
from compiler.ir.plan import GatePlan, Plan, StagePlan
from compiler.templating import markdown
from compiler.spec.units import format_duration
from compiler.targets.base import CARRIED, MANIFEST, FleetTarget, Target

NAME = "grafana"
DASHBOARD = f"{NAME}/dashboard.json"
CONFIGMAP = f"{NAME}/dashboard-configmap.yaml"
FLEET_DASHBOARD = f"{NAME}/rollouts.json"
FLEET_CONFIGMAP = f"{NAME}/rollouts-configmap.yaml"
FLEET_CONFIGMAP_NAME = "rollout-fleet-dashboard"
SCHEMA_VERSION = 39
SIDECAR_LABEL = {"grafana_dashboard": "1"}
CONFIGMAP_LIMIT = 1024 * 1024
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FLEET_UID = "rollout-fleet-" + names.short_hash("rollout fleet overview", length=12)
WIDTH = 24


# --------------------------------------------------------------------------- building blocks


class Layout:
    """Panel ids and grid positions, in the order panels are added."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > WIDTH:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)


def target(expr: str, legend: str, ref: str = "A", instant: bool = False, table: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref,
                           "range": not instant, "instant": instant}
    if table:
        out["format"] = "table"
    return out


def thresholds(value: float | None, bound: str = "max") -> dict[str, Any]:
    if value is None:
        return {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
    if bound == "max":
        steps = [{"color": "green", "value": None}, {"color": "red", "value": value}]
    else:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": value}]
    return {"mode": "absolute", "steps": steps}


def timeseries(title: str, targets: list[dict[str, Any]], unit: str, description: str,
               threshold: float | None = None, bound: str = "max") -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if bound == "max":
        defaults["min"] = 0
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                **defaults,
                "thresholds": thresholds(threshold, bound),
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 0,
                    "showPoints": "never",
                    "spanNulls": False,
                    "thresholdsStyle": {"mode": "line" if threshold is not None else "off"},
                },
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
    }


def stat(title: str, expr: str, legend: str, unit: str, text_mode: str, description: str) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, legend, instant=True)],
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": thresholds(None)}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "textMode": text_mode, "colorMode": "none", "graphMode": "none", "justifyMode": "auto"},
    }


def datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "skipUrlSync": False}


def builtin_annotation() -> dict[str, Any]:
    return {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}


def base(uid: str, title: str, tags: list[str], panels: list[dict[str, Any]],
         annotations: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": tags,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "timezone": "utc",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": [builtin_annotation()] + annotations},
        "templating": {"list": [datasource_variable()]},
        "links": links,
        "panels": panels,
    }


# --------------------------------------------------------------------------- a rollout's dashboard


def gate_note(gate: GatePlan) -> str:
    """The description of the panel that draws a gate (tests read the gate name from it)."""
    return (
        f"Gate {gate.name} ({markdown(gate.description)}) over {format_duration(gate.window)}: "
        "the red line is its threshold; "
        f"the gate judges the canary's {CONFIDENCE} confidence bound, with at least the "
        "minimum requests in the window."
    )


def _gate(plan: Plan, kind: str, quantile: Fraction | None = None) -> GatePlan | None:
    return next(
        (g for g in plan.current.gates if g.kind == kind and (quantile is None or g.quantile == quantile)), None
    )


def _both(plan: Plan, record: str, legend_suffix: str = "") -> list[dict[str, Any]]:
    out = []
    for ref, role in (("A", "stable"), ("B", "canary")):
        version = plan.variant(role).version
        out.append(target(str(conv.series(plan, role, record)), f"{role} {version}{legend_suffix}", ref))
    return out


def panels(plan: Plan) -> list[dict[str, Any]]:
    layout = Layout()
    weight = str(conv.selector(plan, conv.STAGE_RECORD))
    layout.add(
        stat("Stage", weight, "{{stage}}", "none", "name", "The stage in effect, as loaded in Prometheus."), 6, 4
    )
    layout.add(stat("Canary weight", weight, "weight", "percentunit", "value",
                    "Share of live traffic the new version serves at this stage."), 6, 4)
    layout.add(stat("Firing rollout alerts", f"count({conv.firing_alerts(plan)}) or vector(0)", "alerts", "none",
                    "value", "Alerts of this rollout firing now."), 6, 4)
    window = plan.metrics.window
    layout.add(stat(f"Canary requests ({format_duration(window)})",
                    str(conv.series(plan, "canary", conv.requests_record(window)) * window), "requests", "short",
                    "value", f"Gates judge with at least {plan.metrics.min_requests} requests in their window."), 6, 4)
    layout.add(timeseries(f"Request rate ({format_duration(window)})",
                          _both(plan, conv.requests_record(window)), "reqps",
                          "Requests per second of each version."), 12, 8)
    layout.add(_error_panel(plan), 12, 8)
    if plan.metrics.canary.has_latency:
        for q in conv.QUANTILES:
            layout.add(_latency_panel(plan, q), 12, 8)
    ratio = _gate(plan, "ratio")
    if ratio is not None:
        layout.add(_ratio_panel(plan, ratio), 12, 8)
    for gate in plan.current.gates:
        if gate.kind == "custom":
            layout.add(_custom_panel(plan, gate), 12, 8)
    layout.add(_alerts_table(plan), 24, 6)
    return layout.panels


def _error_panel(plan: Plan) -> dict[str, Any]:
    gate = _gate(plan, "error_rate")
    window = gate.window if gate else plan.metrics.window
    targets = _both(plan, conv.ratio_record(window))
    if gate is None:
        return timeseries(f"Error ratio ({format_duration(window)})", targets, "percentunit",
                          "Share of requests that failed, per version.")
    targets.append(target(str(conv.series(plan, "canary", conv.ratio_lower_record(window))),
                          f"canary lower bound ({CONFIDENCE})", "C"))
    return timeseries(f"Error ratio ({format_duration(window)})", targets, "percentunit", gate_note(gate),
                      float(gate.threshold))


def _latency_panel(plan: Plan, q: Fraction) -> dict[str, Any]:
    gate = _gate(plan, "latency", q)
    window = gate.window if gate else plan.metrics.window
    title = f"{conv.quantile_name(q)} latency ({format_duration(window)})"
    targets = _both(plan, conv.latency_record(q, window))
    if gate is None:
        return timeseries(title, targets, "s", f"The {conv.quantile_name(q)} request latency per version.")
    targets.append(target(str(conv.series(plan, "canary", conv.latency_lower_record(q, window))),
                          f"canary lower bound ({CONFIDENCE})", "C"))
    return timeseries(title, targets, "s", gate_note(gate), float(gate.threshold))


def _ratio_panel(plan: Plan, gate: GatePlan) -> dict[str, Any]:
    lower = conv.series(plan, "canary", conv.ratio_lower_record(gate.window))
    upper = conv.series(plan, "stable", conv.ratio_upper_record(gate.window))
    expr = str(Binary("/", lower, upper, matching=Matching(False, ("variant",), True)))
    return timeseries(f"Canary errors against stable ({format_duration(gate.window)})",
                      [target(expr, "canary lower bound / stable upper bound")], "none", gate_note(gate),
                      float(gate.threshold))


def _custom_panel(plan: Plan, gate: GatePlan) -> dict[str, Any]:
    expr = str(conv.selector(plan, conv.CUSTOM_RECORD, "canary", [("gate", "=", gate.name)]))
    note = (f"Gate {gate.name} ({markdown(gate.description)}) over {format_duration(gate.window)}: "
            "the red line is its threshold.")
    return timeseries(f"{gate.name} (canary)", [target(expr, gate.name)], "none", note, float(gate.threshold),
                      gate.bound)


def _alerts_table(plan: Plan) -> dict[str, Any]:
    return {
        "type": "table",
        "title": "Firing rollout alerts",
        "description": "Every alert of this rollout firing now, with the labels Alertmanager routes on.",
        "datasource": DATASOURCE,
        "targets": [target(conv.firing_alerts(plan), "", instant=True, table=True)],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True},
            "indexByName": {}, "renameByName": {}}}],
    }


def alert_annotation(expr: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "enable": True,
        "expr": expr,
        "iconColor": "red",
        "name": "Rollout alerts",
        "step": "60s",
        "titleFormat": "{{alertname}}",
        "textFormat": "{{gate}}: {{severity}}, action {{action}}",
        "tagKeys": "rollout,stage,gate,severity,action",
        "useValueForTime": False,
    }


def dashboard(plan: Plan) -> dict[str, Any]:
    links = [{"title": "All rollouts", "type": "link", "url": f"/d/{FLEET_UID}", "icon": "dashboard",
              "targetBlank": False, "keepTime": True}]
    if plan.runbook:
        links.append({"title": "Runbook", "type": "link", "url": plan.runbook, "icon": "doc", "targetBlank": True})
    title = f"Rollout {plan.out}: {plan.stable.version} -> {plan.canary.version}"
    tags = ["rollout", plan.namespace] + ([plan.environment] if plan.environment else [])
    return base(plan.names.dashboard_uid, title, tags, panels(plan),
                [alert_annotation(conv.firing_alerts(plan))], links)


def render(plan: Plan) -> dict[str, str]:
    return dict(_render(plan))


def _render(plan: Plan) -> dict[str, str]:
    text = serialize.json_text(dashboard(plan))
    uid = plan.names.dashboard_uid
    configmap = kube.config_map(plan, plan.names.dashboard_configmap, {f"{uid}.json": text}, dict(SIDECAR_LABEL))
    return {DASHBOARD: text, CONFIGMAP: kube.manifest(plan, configmap)}


# --------------------------------------------------------------------------- the fleet overview


def fleet_dashboard() -> dict[str, Any]:
    """The overview of every rollout Prometheus knows: it lists no rollout, so no stage and no new rollout
    changes it."""
    layout = Layout()
    weights = conv.STAGE_RECORD
    alerts = matchers_text([("alertstate", "=", "firing"), ("rollout", "!=", "")])
    firing = f"count by (rollout, namespace, environment) (ALERTS{alerts})"
    table = {
        "type": "table",
        "title": "Rollouts",
        "description": "Every rollout's stage and weight as loaded in Prometheus, and its firing alerts.",
        "datasource": DATASOURCE,
        "targets": [target(weights, "", "A", instant=True, table=True),
                    target(firing, "", "B", instant=True, table=True)],
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True, "__name__": True, "dashboard_uid": False},
                "indexByName": {"namespace": 0, "rollout": 1, "environment": 2, "stage": 3, "stage_kind": 4,
                                "Value #A": 5, "Value #B": 6},
                "renameByName": {"Value #A": "canary weight", "Value #B": "firing alerts"}}},
        ],
        "fieldConfig": {"defaults": {}, "overrides": [
            {"matcher": {"id": "byName", "options": "canary weight"},
             "properties": [{"id": "unit", "value": "percentunit"}]},
            {"matcher": {"id": "byName", "options": "rollout"},
             "properties": [{"id": "links", "value": [{"title": "Rollout dashboard",
                                                       "url": "/d/${__data.fields.dashboard_uid}"}]}]},
        ]},
        "options": {"showHeader": True},
    }
    layout.add(table, 24, 12)
    layout.add(timeseries("Canary weight", [target(weights, "{{namespace}}/{{rollout}} {{environment}}")],
                          "percentunit", "The share of live traffic each rollout's new version serves."), 12, 8)
    layout.add(timeseries("Firing rollout alerts", [target(firing, "{{namespace}}/{{rollout}} {{environment}}")],
                          "none", "Firing alerts per rollout."), 12, 8)
    return base(FLEET_UID, "Rollouts", ["rollout"], layout.panels, [alert_annotation(f"ALERTS{alerts}")], [])


def fleet_configmap(text: str) -> dict[str, Any]:
    """The overview for Grafana's sidecar; no namespace: it lands where the fleet is applied."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": FLEET_CONFIGMAP_NAME,
                     "labels": {**kube.FLEET_LABELS, **SIDECAR_LABEL}},
        "data": {f"{FLEET_UID}.json": text},
    }


def render_fleet(plans: Sequence[FleetEntry], kinds: Mapping[str, str]) -> dict[str, str]:
    if not plans:
        return {}
    text = serialize.json_text(fleet_dashboard())
    return {FLEET_DASHBOARD: text, FLEET_CONFIGMAP: serialize.yaml_text(fleet_configmap(text), serialize.FLEET_HEADER)}


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    key = tuple((g.kind, g.name, g.description, g.window, g.threshold, g.bound, g.quantile) for g in stage.gates)
    return {DASHBOARD: key, CONFIGMAP: key}


TARGET: Target = Target(NAME, render, rollback=True,
                        kinds={DASHBOARD: CARRIED, CONFIGMAP: MANIFEST}, stage_keys=stage_keys)
FLEET: FleetTarget = FleetTarget("grafana-fleet", render_fleet,
                                 kinds={FLEET_DASHBOARD: CARRIED, FLEET_CONFIGMAP: MANIFEST})
