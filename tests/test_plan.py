"""The plan: presets expand into stages, weights are exact, flags have a state per stage, names fit."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import pytest

from compiler.spec import names
from compiler.ir.plan import ROLLBACK
from compiler.gates.algebra import Number
from conftest import ALL_SPECS, GOLDEN, ROOT, SPECS, plan_of, plans_of

MINIMAL = (ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text()


def spec_with(tmp_path: Path, old: str, new: str, name: str = "spec.yaml") -> Path:
    assert old in MINIMAL
    path = tmp_path / name
    path.write_text(MINIMAL.replace(old, new))
    return path


STAGES = ('stages:\n  - {name: canary, weight: 5%, hold: 1h, gates: {error_rate: "< 1%"}}\n'
          '  - {name: full, weight: 100%}\ncurrent: canary')


@pytest.mark.parametrize(
    "strategy, current, weights, hold",
    [
        ("{preset: safe}", "canary-5", [5, 10, 25, 50, 75, 100], 300),
        ("{preset: fast}", "canary-25", [25, 50, 100], 300),
        ("{preset: instant}", "full", [100], 60),
        ("{preset: custom, steps: [0.5, 20%, 100], hold: 10m}", "canary-0p5", [Fraction(1, 2), 20, 100], 600),
    ],
)
def test_presets_expand_into_stages(tmp_path, strategy, current, weights, hold):
    plan = plan_of(spec_with(tmp_path, STAGES, f"strategy: {strategy}\ncurrent: {current}"))
    assert [s.weight * 100 for s in plan.stages] == [Fraction(w) for w in weights]
    assert all(s.hold == hold for s in plan.stages)
    assert plan.stages[-1].name == "full"
    assert plan.current.name == current


def test_preset_gates_apply_to_every_stage_and_final_on_breach(tmp_path):
    strategy = (
        'strategy: {preset: fast, shadow: 1d, gates: {p95_latency: "< 500ms"}, final_on_breach: alert}\ncurrent: shadow'
    )
    plan = plan_of(spec_with(tmp_path, STAGES, strategy))
    assert [s.name for s in plan.stages] == ["shadow", "canary-25", "canary-50", "full"]
    assert plan.stages[0].mirror == 1 and plan.stages[0].weight == 0 and plan.stages[0].hold == 86400
    assert [len(s.gates) for s in plan.stages[1:]] == [1, 1, 1]
    assert [s.action for s in plan.stages[1:]] == ["rollback", "rollback", "notify"]
    assert plan.stages[1].gates[0].threshold == Fraction(1, 2)


def test_explicit_stages_keep_exact_weights_and_gate_defaults():
    plan = plan_of(GOLDEN / "in-tiny-canary.yaml")
    canary = plan.stage("canary")
    assert canary.weight == Fraction(1, 1000) and canary.route_weight == canary.weight
    error_rate = canary.gates[0]
    assert (error_rate.name, error_rate.threshold, error_rate.window, error_rate.for_) == (
        "error_rate",
        Fraction(1, 100),
        300,
        0,
    )
    full = plan.stage("full")
    assert full.gates[0].for_ == 3600 and full.action == "notify" and full.severity == "warning"
    assert plan.stage("shadow").kind == "shadow"


def test_blue_green_stages():
    plan = plan_of(GOLDEN / "in-blue-green.yaml")
    kinds = [(s.name, s.kind, s.weight, s.route_weight, s.active_color) for s in plan.stages]
    assert kinds == [
        ("preview", "preview", 0, 0, "blue"),
        ("canary-5", "canary", Fraction(1, 20), Fraction(1, 20), "blue"),
        ("canary-50", "canary", Fraction(1, 2), Fraction(1, 2), "blue"),
        ("switch", "switch", 1, 0, "green"),
    ]
    assert plan.rollback_stage.active_color == "blue"
    assert all(s.testers for s in plan.stages) and not plan.rollback_stage.testers


def test_rollback_state_sends_everything_to_stable():
    plan = plan_of(GOLDEN / "in-rollback.yaml")
    assert plan.is_rollback
    stage = plan.current
    assert (stage.weight, stage.route_weight, stage.mirror, stage.testers, stage.gates) == (0, 0, 0, False, ())
    states = {s.name: s for s in plan.flag_states}
    assert states["new_pricing"].share == 0
    assert states["emergency_shutdown"].engaged
    assert states["new_pricing"].killed and states["pricing_v2"].killed
    assert plan.next_stage() is None


def test_flags_follow_the_stage():
    plan = plan_of(GOLDEN / "in-checkout.yaml")
    flag = next(f for f in plan.flags if f.name == "new_pricing")
    assert dict(flag.shares) == {
        "shadow": 0,
        "canary": Fraction(1, 100),
        "ramp": Fraction(1, 10),
        "full": 1,
        ROLLBACK: 0,
    }
    fixed = next(f for f in plan.flags if f.name == "pricing_v2")
    assert set(dict(fixed.shares).values()) == {1}
    kill = next(f for f in plan.flags if f.name == "emergency_shutdown")
    assert kill.kills == ("new_pricing", "pricing_v2")
    assert not any(dict(kill.engaged).values())
    at_ramp = plan.at("ramp")
    assert at_ramp.current.name == "ramp" and at_ramp.flag_state("new_pricing").share == Fraction(1, 10)
    assert plan.next_stage().name == "ramp"


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.stem)
def test_every_derived_name_is_a_valid_label(path):
    for plan in plans_of(path):
        for field, value in dataclasses.asdict(plan.names).items():
            if field in ("alert_prefix", "rule_group", "rollback_guard_alert"):
                continue
            names.check_dns1123_label(value, field)
        assert len(plan.names.dashboard_uid) <= 40


def test_weights_never_decrease_in_any_plan():
    for path in ALL_SPECS:
        for plan in plans_of(path):
            weights = [s.weight for s in plan.stages]
            assert weights == sorted(weights), path
            assert weights[-1] == 1


def test_metric_templates_per_source():
    moe = plan_of(SPECS / "moe-intelligence.yaml")
    assert 'destination_version="v2.1.0"' in str(moe.metrics.canary.requests(300))
    assert str(moe.metrics.canary.latency(Number(0.99), 300)).endswith("/ 1000")
    moc = plan_of(SPECS / "modelops-coordinator.yaml")
    assert not moc.metrics.canary.has_latency and 'proxy="moc"' in str(moc.metrics.canary.errors(300))
    orchestra = plan_of(SPECS / "ai-orchestra.yaml", "production")
    assert 'canary="production-ai-orchestra-preview-80"' in str(orchestra.metrics.canary.requests(300))
    assert 'canary=""' in str(orchestra.metrics.stable.requests(300))
