"""Grafana: every query parses and reads recorded series that exist, every threshold drawn is
the gate it shows, and the dashboards fit the ConfigMap the sidecar loads."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import promql_parser
import pytest
import yaml

import kubecheck
from compiler.gates import conventions as promql
from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets.observability import grafana
from compiler.targets.observability import prometheus
from compiler.pipeline import fleet_entry
from conftest import ALL_SPECS, GOLDEN, SPECS, plan_of, plans_of

GATE_NOTE = re.compile(r"^Gate (\S+) \(")


@lru_cache(maxsize=1)
def every_stage() -> list[Plan]:
    return [p.at(s) for p in plans_of(*ALL_SPECS) for s in [x.name for x in p.stages] + [ROLLBACK]]


def dashboard(plan: Plan) -> dict:
    return json.loads(grafana.render(plan)[grafana.DASHBOARD])


def queries(board: dict) -> list[str]:
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return exprs + [a["expr"] for a in board["annotations"]["list"] if "expr" in a]


def _selectors(node) -> list[str]:
    """Metric names read by a parsed PromQL expression."""
    found = []
    if type(node).__name__ == "VectorSelector":
        found.append(node.name)
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            found.extend(_selectors(child))
    for arg in getattr(node, "args", None) or []:
        found.extend(_selectors(arg))
    return found


def recorded(plan: Plan) -> set[str]:
    rules = yaml.safe_load(prometheus.render(plan)[prometheus.RULES])["groups"][0]["rules"]
    return {r["record"] for r in rules if "record" in r}


@pytest.mark.parametrize("plan", every_stage(), ids=lambda p: f"{p.out}@{p.current.name}")
def test_queries_parse_and_read_recorded_series_that_exist(plan):
    board = dashboard(plan)
    names = recorded(plan)
    for expr in queries(board):
        tree = promql_parser.parse(expr)
        for metric in _selectors(tree):
            if ":" in metric:
                assert metric in names, (metric, expr)
            else:
                assert metric == "ALERTS", expr


@pytest.mark.parametrize("plan", every_stage(), ids=lambda p: f"{p.out}@{p.current.name}")
def test_every_threshold_drawn_is_the_gate_it_shows(plan):
    board = dashboard(plan)
    drawn: dict[str, list] = {}
    for panel in board["panels"]:
        if panel["type"] != "timeseries":
            continue
        defaults = panel["fieldConfig"]["defaults"]
        steps = defaults["thresholds"]["steps"]
        style = defaults["custom"]["thresholdsStyle"]["mode"]
        match = GATE_NOTE.match(panel["description"])
        if match is None:
            assert style == "off" and len(steps) == 1, panel["title"]
            continue
        drawn.setdefault(match.group(1), []).append(steps)
        assert style == "line"
    gates = {g.name: g for g in plan.current.gates}
    assert set(drawn) == set(gates)
    for name, [steps] in drawn.items():
        gate = gates[name]
        colours = [s["color"] for s in steps]
        assert steps[1]["value"] == float(gate.threshold)
        assert colours == (["green", "red"] if gate.bound == "max" else ["red", "green"])


def test_gate_panels_show_the_bound_the_gate_judges():
    board = dashboard(plan_of(GOLDEN / "in-ramp.yaml").at("canary"))
    error = next(p for p in board["panels"] if p["title"].startswith("Error ratio"))
    exprs = [t["expr"] for t in error["targets"]]
    assert any("wilson_lower5m" in e and 'variant="canary"' in e for e in exprs)
    assert any('variant="stable"' in e for e in exprs) and any('variant="canary"' in e for e in exprs)
    latency = next(p for p in board["panels"] if p["title"].startswith("p99"))
    assert any("p99_lower5m" in t["expr"] for t in latency["targets"])
    assert latency["fieldConfig"]["defaults"]["unit"] == "s"


def test_dashboard_model():
    for plan in plans_of(*ALL_SPECS):
        board = dashboard(plan)
        assert board["uid"] == plan.names.dashboard_uid and len(board["uid"]) <= 40
        assert board["schemaVersion"] == grafana.SCHEMA_VERSION
        ids = [p["id"] for p in board["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        assert [v["type"] for v in board["templating"]["list"]] == ["datasource"]
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            if "targets" in panel:
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        (alerts,) = [a for a in board["annotations"]["list"] if a.get("name") == "Rollout alerts"]
        assert alerts["expr"].startswith("ALERTS{") and f'rollout="{plan.name}"' in alerts["expr"]
        assert 'alertstate="firing"' in alerts["expr"]
        assert f'namespace="{plan.namespace}"' in alerts["expr"]


def test_stage_and_weight_come_from_the_recorded_stage():
    plan = plan_of(GOLDEN / "in-ramp.yaml")
    board = dashboard(plan)
    stage, weight = board["panels"][0], board["panels"][1]
    assert stage["title"] == "Stage" and stage["targets"][0]["legendFormat"] == "{{stage}}"
    assert promql.STAGE_RECORD in weight["targets"][0]["expr"]
    record = next(r for r in yaml.safe_load(prometheus.render(plan)[prometheus.RULES])["groups"][0]["rules"]
                  if r.get("record") == promql.STAGE_RECORD)
    assert record["expr"] == "vector(0.1)" and record["labels"]["stage"] == "ramp"


def test_configmap_for_the_sidecar():
    for plan in plans_of(*ALL_SPECS):
        files = grafana.render(plan)
        found, issues = kubecheck.check_files(files, lambda m, namespace=plan.namespace: namespace)
        assert issues == []
        (configmap,) = found
        assert configmap.doc["metadata"]["name"] == plan.names.dashboard_configmap
        assert configmap.doc["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap.doc["data"] == {f"{plan.names.dashboard_uid}.json": files[grafana.DASHBOARD]}
        assert len(json.dumps(configmap.doc).encode()) < grafana.CONFIGMAP_LIMIT


def test_custom_gates_get_a_panel_with_their_bound():
    plan = plan_of(SPECS / "moe-intelligence.yaml")
    board = dashboard(plan)
    accuracy = next(p for p in board["panels"] if p["title"].startswith("expert_accuracy"))
    assert accuracy["fieldConfig"]["defaults"]["thresholds"]["steps"] == [
        {"color": "red", "value": None}, {"color": "green", "value": 0.999}]


def test_fleet_overview_shows_every_rollout_prometheus_knows_and_names_none():
    """It reads the stage record every rollout's rules write, so no promote or new rollout changes the file."""
    plans = plans_of(*ALL_SPECS)
    files = grafana.render_fleet([fleet_entry(p, {}) for p in plans], {})
    board = json.loads(files[grafana.FLEET_DASHBOARD])
    assert board["uid"] == grafana.FLEET_UID and len(board["uid"]) <= 40
    for expr in queries(board):
        for metric in _selectors(promql_parser.parse(expr)):
            assert metric in (promql.STAGE_RECORD, "ALERTS")
    assert files == grafana.render_fleet([fleet_entry(plans[0].at(plans[0].stages[-1].name), {})], {})
    for plan in plans:
        assert plan.name not in files[grafana.FLEET_DASHBOARD]
    table = board["panels"][0]
    assert [t["refId"] for t in table["targets"]] == ["A", "B"]
    assert any("dashboard_uid" in json.dumps(o) for o in table["fieldConfig"]["overrides"])
    assert all(p.names.dashboard_uid for p in plans)


def test_user_text_lands_inert_in_panels(tmp_path):
    from test_prometheus import hostile_spec

    board = dashboard(plan_of(hostile_spec(tmp_path)))
    panel = next(p for p in board["panels"] if p["title"].startswith("score"))
    # Braces are no markup in Markdown or in a Grafana description; backslashes and quotes stay text
    assert panel["description"].startswith('Gate score ({{ printf "%s" "injected" }} and {{ .Labels }} \\\\ ')
