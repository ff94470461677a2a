"""environments: one spec, several compiled rollouts under generated/<environment>/."""

from __future__ import annotations

import pytest

from compiler import pipeline
from conftest import SPECS, compile_files, plan_of


def test_each_environment_compiles_to_its_own_folder():
    staging = plan_of(SPECS / "ai-orchestra.yaml", "staging")
    production = plan_of(SPECS / "ai-orchestra.yaml", "production")
    assert staging.out == "staging/staging/ai-orchestra"
    assert production.out == "production/production/ai-orchestra"
    assert staging.host == "staging.api.ai-orchestra.com" and production.host == "api.ai-orchestra.com"
    assert [s.name for s in staging.stages] == ["preview", "switch"]
    assert staging.current.name == "switch" and production.current.name == "preview"
    assert staging.stages[0].hold == 86400 and production.stages[0].hold == 3 * 86400
    files = compile_files(SPECS / "ai-orchestra.yaml")
    assert "staging/staging/ai-orchestra/PLAN.md" in files
    assert "production/production/ai-orchestra/PLAN.md" in files


def test_an_error_in_an_override_points_into_the_environment(tmp_path):
    text = (SPECS / "ai-orchestra.yaml").read_text()
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines, 1) if "current: switch" in line)
    bad = tmp_path / "orchestra.yaml"
    bad.write_text(text.replace("current: switch", "current: swtch"))
    (d,) = pipeline.analyse([bad]).diagnostics
    assert (d.line, d.col) == (row, len(lines[row - 1]) - len("switch") + 1)
    assert "'swtch' is not a stage" in d.message and d.message.endswith("(environment 'staging')")


@pytest.mark.parametrize("old, new, says", [
    ("switch_hold: 24h", "switch_hold: 1.5h", "is not a duration"),  # the model refuses it
    ("switch_hold: 24h", "switch_hold: 1s", "gate error_rate of stage 'switch'"),  # a rule refuses it
])
def test_a_mistake_in_the_base_is_reported_once_for_every_environment(tmp_path, old, new, says):
    text = (SPECS / "ai-orchestra.yaml").read_text()
    assert old in text
    bad = tmp_path / "orchestra.yaml"
    bad.write_text(text.replace(old, new))
    found = [d for d in pipeline.analyse([bad]).diagnostics if says in d.message]
    assert len(found) == 1, found
    assert found[0].message.endswith("(environments 'production' and 'staging')")


def test_stage_overrides_merge_by_name(tmp_path):
    text = (SPECS / "ultra-fast-analyzer.yaml").read_text()
    text += (
        "environments:\n"
        "  staging:\n"
        "    stages:\n"
        "      - name: ramp\n"
        '        gates: {error_rate: "< 5%"}\n'
        "  production:\n"
        "    metadata: {namespace: analytics-prod}\n"
        "    stages:\n"
        "      - {name: ramp, gates: {p99_latency: null}}\n"
    )
    spec = tmp_path / "analyzer.yaml"
    spec.write_text(text)
    staging = plan_of(spec, "staging")
    production = plan_of(spec, "production")
    assert [s.name for s in staging.stages] == ["canary", "ramp", "rollout"]
    ramp = {g.name: g for g in staging.stage("ramp").gates}
    assert set(ramp) == {"error_rate", "p99_latency"} and ramp["error_rate"].threshold * 100 == 5
    assert {g.name for g in production.stage("ramp").gates} == {"error_rate"}  # null removes a gate
    assert staging.stage("ramp").weight == production.stage("ramp").weight


def test_a_rollout_folder_inside_another_rollouts_folder_is_an_error(tmp_path):
    """An environment named like a namespace could nest one rollout's files inside another's."""
    outer = (SPECS / "ultra-fast-analyzer.yaml").read_text()  # analytics/analyzer
    inner = outer.replace("  name: analyzer\n  namespace: analytics\n", "  name: rollback\n  namespace: analyzer\n")
    assert inner != outer
    (tmp_path / "outer.yaml").write_text(outer)
    (tmp_path / "inner.yaml").write_text(inner + "environments:\n  analytics: {}\n")  # analytics/analyzer/rollback
    result = pipeline.compile_paths([tmp_path / "outer.yaml", tmp_path / "inner.yaml"])
    (d,) = [d for d in result.diagnostics if d.severity == "error"]
    assert d.path.endswith("inner.yaml") and "lies inside the folder of rollout analytics/analyzer" in d.message
    assert d.line == inner.splitlines().index("  namespace: analyzer") + 1
    assert not result.ok and result.files == {}


# --------------------------------------------------------------------------- one Prometheus, several environments

LEDGER = """apiVersion: rollout-compiler/v1
kind: Rollout
metadata: {name: ledger, namespace: shop, owner: payments}
service:
  host: ledger.example.com
  port: 8080
  stable: {version: v1, backend: ledger-v1}
  canary: {version: v2, backend: ledger-v2}
traffic: {targets: [gateway-api], gateway: {name: public}}
%(metrics)s
stages:
  - {name: canary, weight: 5%%, hold: 1h, gates: {error_rate: "< 1%%"%(custom)s}}
  - {name: full, weight: 100%%}
current: canary
environments:
  staging: {service: {host: ledger.staging.example.com}}
  production: %(production)s
"""


def _ledger(tmp_path, metrics: str = "", custom: str = "", production: str = "{}"):
    path = tmp_path / "ledger.yaml"
    path.write_text(LEDGER % {"metrics": metrics, "custom": custom, "production": production})
    return path


def test_each_environment_s_queries_select_its_own_namespace():
    files = compile_files(SPECS / "ai-orchestra.yaml")
    for env in ("staging", "production"):
        rules = files[f"{env}/{env}/ai-orchestra/prometheus/rules.yaml"]
        selectors = [line for line in rules.splitlines() if "expr:" in line and "{" in line and "rollout:" not in line]
        assert selectors and all(f'namespace="{env}"' in line for line in selectors), (env, selectors[:3])
        other = "production" if env == "staging" else "staging"
        assert f'namespace="{other}"' not in rules


def test_environments_that_would_share_a_query_are_refused_at_the_environment(tmp_path):
    path = _ledger(tmp_path)
    result = pipeline.analyse([path])
    (d,) = [d for d in result.diagnostics if d.severity == "error"]
    assert (d.line, d.col) == (17, 3)  # production, the second environment with the same series
    assert "environments 'staging' and 'production' read the same series" in d.message
    assert 'namespace="shop"' in d.message and not result.units
    assert pipeline.analyse([_ledger(tmp_path, production="{metadata: {namespace: shop-prod}}")]).ok


def test_custom_queries_tell_environments_apart_by_namespace(tmp_path):
    custom = ', custom: {lag: {query: "max(lag_seconds{namespace=\\"$namespace\\", version=\\"$version\\"})", max: 5}}'
    metrics = ('metrics:\n  source: custom\n  custom:\n'
               '    requests: sum(rate(reqs_total{ns="$namespace",v="$version"}[$window]))\n'
               '    errors: sum(rate(errs_total{ns="$namespace",v="$version"}[$window]))')
    assert pipeline.analyse([_ledger(tmp_path, metrics, custom, "{metadata: {namespace: shop-prod}}")]).ok
    shared = metrics.replace("$namespace", "shop")
    result = pipeline.analyse([_ledger(tmp_path, shared, "", "{metadata: {namespace: shop-prod}}")])
    assert any("read the same series" in d.message for d in result.diagnostics)


def test_a_workload_scraped_per_variant_is_selected_by_its_service(tmp_path):
    metrics = "metrics: {workload: backend, namespace_label: exported_namespace}"
    path = _ledger(tmp_path, metrics, production="{metadata: {namespace: shop-prod}}")
    plan = next(u.plan for u in pipeline.analyse([path]).units if u.plan.environment == "production")
    from compiler.gates.algebra import render

    assert render(plan.metrics.canary.requests(300)) == (
        'sum(rate(http_requests_total{exported_namespace="shop-prod",service="ledger-v2"}[5m]))')
    labelled = _ledger(tmp_path, "metrics: {workload_label: job}", production="{metadata: {namespace: shop-prod}}")
    plan = next(u.plan for u in pipeline.analyse([labelled]).units if u.plan.environment == "staging")
    assert render(plan.metrics.stable.errors(300)) == (
        'sum(rate(http_requests_total{namespace="shop",job="ledger",version="v1",code=~"5.."}[5m]))')
