"""environments: one spec, several compiled rollouts under generated/<environment>/."""

from __future__ import annotations

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


def test_stage_overrides_merge_by_name(tmp_path):
    text = (SPECS / "ultra-fast-analyzer.yaml").read_text()
    text += (
        "environments:\n"
        "  staging:\n"
        "    stages:\n"
        "      - name: ramp\n"
        '        gates: {error_rate: "< 5%"}\n'
        "  production:\n"
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
