"""flags/: flagd definitions evaluated by the real evaluator, and the plain files beside them.

The evaluator is ``openfeature-flagd-core`` 2.0.0 (pinned in pyproject.toml): evaluators bucket
differently (flagd's Go core changed its hashing in 2026), so the measured shares below hold
for this one.  Each spec is compiled as it is and at each of its stages.
"""

from __future__ import annotations

import json
import math
import subprocess
from functools import cache, lru_cache
from importlib import metadata
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from referencing import Registry, Resource

import kubecheck
from compiler import pipeline
from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets import flagd
from conftest import ALL_SPECS, SCHEMAS, SPECS, UNIT, compile_files, plan_of, plans_of, tool

# 20,000 keys; 5,000 in `make unit`, the fast loop (the binomial interval widens accordingly).
KEYS = [f"user-{i}" for i in range(5_000 if UNIT else 20_000)]
FEW_KEYS = KEYS[:2_000]
MONOTONE_KEYS = KEYS[:5_000]
Z_999 = 3.2905  # two-sided 99.9% normal quantile
SPECS_WITH_FLAGS = [p for p in ALL_SPECS if any(plan.flags for plan in plans_of(p))]


# --------------------------------------------------------------------------- helpers


@cache
def validator() -> jsonschema.Draft7Validator:
    """The flagd schema; its ``$ref: ./targeting.json`` resolves against the schema's ``$id``."""
    flags = json.loads((SCHEMAS / "flagd" / "flags.json").read_text())
    targeting = json.loads((SCHEMAS / "flagd" / "targeting.json").read_text())
    registry = Registry().with_resources(
        [(flags["$id"], Resource.from_contents(flags)), (targeting["$id"], Resource.from_contents(targeting))]
    )
    return jsonschema.Draft7Validator({"$ref": flags["$id"]}, registry=registry)


def schema_errors(document: dict) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(document)]


def document(plan: Plan) -> dict:
    return json.loads(flagd.render(plan)[flagd.FLAGD])


class Evaluator:
    """flagd-core loaded with one flagd.json; results cached per (flag, key)."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.core = FlagdCore()
        self.core.set_flags(json.dumps(doc))
        self.cache: dict[tuple[str, str | None], bool] = {}

    def on(self, flag: str, key: str | None, default: bool = False) -> bool:
        if (flag, key) not in self.cache:
            context = EvaluationContext(targeting_key=key) if key is not None else None
            value = self.core.resolve_boolean_value(flag, default, context).value
            assert isinstance(value, bool)
            self.cache[(flag, key)] = value
        return self.cache[(flag, key)]

    def share(self, flag: str, keys: list[str]) -> float:
        return sum(self.on(flag, k) for k in keys) / len(keys)


def within_binomial(measured: int, n: int, p: float) -> bool:
    if p in (0.0, 1.0):
        return measured == round(p * n)
    spread = Z_999 * math.sqrt(p * (1 - p) / n) + 0.5 / n
    return abs(measured / n - p) <= spread


def all_stage_plans(path: Path) -> list[Plan]:
    return [plan.at(name) for plan in plans_of(path) for name in [s.name for s in plan.stages] + [ROLLBACK]]


@lru_cache(maxsize=64)
def _evaluator(text: str) -> Evaluator:
    return Evaluator(json.loads(text))


def evaluator(plan: Plan) -> Evaluator:
    """The evaluator of a plan's flagd.json; stages with the same file share one (and its cached answers)."""
    return _evaluator(json.dumps(document(plan), sort_keys=True))


def evaluated_stages(path: Path) -> Iterator[tuple[Plan, Evaluator]]:
    """Every stage (and the rollback) of a spec's plans, with an evaluator of its flagd.json."""
    for plan in all_stage_plans(path):
        yield plan, evaluator(plan)


def required_on(plan: Plan, ev: Evaluator, flag, key: str) -> bool:
    return all(ev.on(r.name, key) for r in flagd.requirements(plan, flag))


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("spec", SPECS_WITH_FLAGS, ids=lambda p: p.stem)
def test_every_flagd_file_validates_against_the_flagd_schema(spec):
    for plan in all_stage_plans(spec):
        assert schema_errors(document(plan)) == [], f"{plan.out} at {plan.current.name}"


def test_the_schema_check_rejects_what_flagd_rejects():
    doc = document(plan_of(SPECS / "genesis.yaml"))
    broken = json.loads(json.dumps(doc))
    broken["flags"]["phase_4_deployment"]["state"] = "ON"
    assert schema_errors(broken)
    wrong_weight = json.loads(json.dumps(doc))
    split = wrong_weight["flags"]["phase_4_deployment"]["targeting"]["if"][-1]["fractional"]
    split[1][1] = -5
    assert schema_errors(wrong_weight)


def test_the_evaluator_is_the_pinned_one():
    assert metadata.version("openfeature-flagd-core") == "2.0.0"
    assert flagd.EVALUATOR == "openfeature-flagd-core 2.0.0"


# --------------------------------------------------------------------------- shares


def assert_measured_share(plan: Plan, ev: Evaluator, flag) -> None:
    """The flag's share over KEYS (among the keys that meet its requirements) is its percentage."""
    eligible = [k for k in KEYS if required_on(plan, ev, flag, k)]
    measured = sum(ev.on(flag.name, k) for k in eligible)
    state = plan.flag_state(flag.name)
    p = 0.0 if state.killed else float(state.share)
    if len(eligible) < 500:  # a requirement is (nearly) off everywhere: so is the flag
        assert sum(ev.on(flag.name, k) for k in KEYS) == measured
        return
    assert within_binomial(measured, len(eligible), p), (
        f"{plan.out} at {plan.current.name}: {flag.name} {measured}/{len(eligible)} on, expected {p:.4%}")


@pytest.mark.parametrize("spec", SPECS_WITH_FLAGS, ids=lambda p: p.stem)
def test_measured_share_is_within_a_binomial_interval_of_the_percentage(spec):
    """Over KEYS at the stage in effect; a flag with requirements among the keys that meet them."""
    for plan in plans_of(spec):
        ev = evaluator(plan)
        for flag in plan.flags:
            if flag.kind == "kill_switch":
                continue
            if flagd.constant(plan, flag) is not None:
                expected = flagd.constant(plan, flag)
                assert all(ev.on(flag.name, k) == expected for k in FEW_KEYS), f"{plan.out} {flag.name}"
                continue
            assert_measured_share(plan, ev, flag)


@pytest.mark.parametrize("spec", SPECS_WITH_FLAGS, ids=lambda p: p.stem)
def test_flags_following_the_stage_have_each_stage_share(spec):
    checked = 0
    for plan, ev in evaluated_stages(spec):
        for flag in plan.flags:
            if flag.follows_stage and flagd.constant(plan, flag) is None:
                assert_measured_share(plan, ev, flag)
                checked += 1
    if any(f.follows_stage for plan in plans_of(spec) for f in plan.flags):
        assert checked > 0


def test_a_partial_share_is_measured_not_assumed():
    """genesis at canary-5: phase_4_deployment on for about 5% of keys, neither 0 nor everyone."""
    plan = plan_of(SPECS / "genesis.yaml")
    ev = Evaluator(document(plan))
    on = sum(ev.on("phase_4_deployment", k) for k in KEYS)
    assert within_binomial(on, len(KEYS), 0.05)
    assert not within_binomial(on, len(KEYS), 0.10)


# --------------------------------------------------------------------------- allowlists, requirements, kill switches


@pytest.mark.parametrize("spec", SPECS_WITH_FLAGS, ids=lambda p: p.stem)
def test_allowlisted_keys_are_on_at_every_stage_unless_killed_rolled_back_or_a_requirement_is_off(spec):
    checked = 0
    for plan, ev in evaluated_stages(spec):
        for flag in plan.flags:
            rolled_back = plan.is_rollback and flag.follows_stage  # testers go back to stable too
            for key in flag.allow:
                expected = (not plan.flag_state(flag.name).killed and not rolled_back
                            and required_on(plan, ev, flag, key))
                assert ev.on(flag.name, key) == expected, f"{plan.out} at {plan.current.name}: {flag.name}({key})"
                checked += expected
    if any(f.allow for p in plans_of(spec) for f in p.flags):
        assert checked > 0


@pytest.mark.parametrize("spec", SPECS_WITH_FLAGS, ids=lambda p: p.stem)
def test_a_rollback_turns_stage_following_flags_off_for_testers_too(spec):
    for plan in plans_of(spec):
        plan = plan.at(ROLLBACK)
        ev = evaluator(plan)
        following = [f for f in plan.flags if f.follows_stage]
        dependents = [f for f in plan.flags if any(r in following for r in flagd.requirements(plan, f))]
        for flag in following + dependents:
            for key in sorted({k for f in plan.flags for k in f.allow}) + FEW_KEYS:
                assert not ev.on(flag.name, key), f"{plan.out}: {flag.name}({key}) is on after a rollback"
            definition = document(plan)["flags"][flag.name]
            assert definition["state"] == "ENABLED" and definition["defaultVariant"] == "off"
            assert "targeting" not in definition


def test_an_allowlisted_tester_of_a_stage_following_flag_loses_it_on_rollback():
    plan = plan_of(SPECS / "moe-intelligence.yaml")
    flag = next(f for f in plan.flags if f.follows_stage and f.allow)
    for stage in [s.name for s in plan.stages]:
        assert all(Evaluator(document(plan.at(stage))).on(flag.name, key) for key in flag.allow), stage
    assert not any(Evaluator(document(plan.at(ROLLBACK))).on(flag.name, key) for key in flag.allow)


def test_the_v2_flags_are_as_the_application_defines_them_until_a_rollback_disables_them():
    plan = plan_of(SPECS / "ai-orchestra.yaml", "production")
    assert plan.current.name == "preview"
    ev = Evaluator(document(plan))
    assert ev.share("v2_api", FEW_KEYS) == 1.0
    assert ev.on("swarm_intelligence", "beta-users") and within_binomial(
        sum(ev.on("swarm_intelligence", k) for k in FEW_KEYS), len(FEW_KEYS), 0.5)
    assert not ev.on("advanced_memory", "internal-testing") and ev.share("advanced_memory", FEW_KEYS) == 0.0
    rolled = Evaluator(document(plan.at(ROLLBACK)))
    for flag in ("v2_api", "swarm_intelligence", "websocket_streaming", "advanced_memory"):
        assert not any(rolled.on(flag, k) for k in ["beta-users", "internal-testing"] + FEW_KEYS), flag


@pytest.mark.parametrize("spec", SPECS_WITH_FLAGS, ids=lambda p: p.stem)
def test_a_flag_whose_requirement_is_off_is_off(spec):
    for plan, ev in evaluated_stages(spec):
        for flag in plan.flags:
            for required in flagd.requirements(plan, flag):
                for key in FEW_KEYS[:500] + list(flag.allow):
                    if not ev.on(required.name, key):
                        assert not ev.on(flag.name, key), f"{plan.out} at {plan.current.name}: {flag.name}({key})"


def test_an_inlined_requirement_buckets_exactly_like_the_required_flag():
    """genesis: llm_integration_enabled (100%) requires phase_4_deployment (5%): on for the same keys."""
    plan = plan_of(SPECS / "genesis.yaml")
    ev = Evaluator(document(plan))
    on_required = {k for k in KEYS if ev.on("phase_4_deployment", k)}
    on_dependent = {k for k in KEYS if ev.on("llm_integration_enabled", k)}
    assert on_required and on_dependent == on_required
    assert not any(ev.on("aatc_system_enabled", k) for k in FEW_KEYS)  # 0% until the audit


def with_engaged_kill_switch(tmp_path: Path) -> Path:
    text = (SPECS / "genesis.yaml").read_text()
    marker = "    kill_switch: true\n"
    assert text.count(marker) == 1
    spec = tmp_path / "genesis-shutdown.yaml"
    spec.write_text(text.replace(marker, marker + "    engaged: true\n"))
    return spec


def test_an_engaged_kill_switch_forces_its_flags_off_for_every_key(tmp_path):
    plans = all_stage_plans(with_engaged_kill_switch(tmp_path))
    plans += [plan_of(SPECS / "moe-intelligence.yaml").at(ROLLBACK), plan_of(Path("tests/golden/in-rollback.yaml"))]
    checked = 0
    for plan in plans:
        ev = evaluator(plan)
        for switch in plan.flags:
            if switch.kind != "kill_switch" or not plan.flag_state(switch.name).engaged:
                continue
            assert all(ev.on(switch.name, k) for k in FEW_KEYS[:200])
            for name in switch.kills:
                keys = FEW_KEYS + [a for f in plan.flags for a in f.allow] + [None]
                assert not any(ev.on(name, k) for k in keys), f"{plan.out} at {plan.current.name}: {name}"
                assert not ev.on(name, "user-1", default=True), "the caller's default must not leak through"
                checked += 1
    assert checked == 6 * 7 + 1 + 2  # genesis's switch kills 6 of its flags, at 7 stage states


def test_genesis_keeps_its_always_on_safety_flags_when_the_kill_switch_is_pulled(tmp_path):
    plan = plan_of(with_engaged_kill_switch(tmp_path))
    ev = Evaluator(document(plan))
    for name in ("security_hardening_enabled", "error_handling_enabled", "otel_enabled"):
        assert ev.share(name, FEW_KEYS) == 1.0, name
    for name in ("orchestration_enabled", "phase_4_deployment", "llm_integration_enabled"):
        assert ev.share(name, FEW_KEYS) == 0.0, name


def test_a_released_kill_switch_is_off():
    plan = plan_of(SPECS / "genesis.yaml")
    flag = document(plan)["flags"]["emergency_shutdown"]
    assert flag["defaultVariant"] == "off" and "targeting" not in flag
    assert not Evaluator(document(plan)).on("emergency_shutdown", "user-1", default=True)


# --------------------------------------------------------------------------- monotone exposure


def own_splits(node, name: str) -> list[list]:
    """The ``[["on", w], ["off", total - w]]`` of every fractional of ``name``'s own bucketing in ``node``."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "fractional" and value[0] == {"cat": [name, {"var": "targetingKey"}]}:
                found.append(value[1:])
            found.extend(own_splits(value, name))
    elif isinstance(node, list):
        for item in node:
            found.extend(own_splits(item, name))
    return found


def follow_stage_specs() -> list[Path]:
    return [p for p in SPECS_WITH_FLAGS if any(f.follows_stage for plan in plans_of(p) for f in plan.flags)]


@pytest.mark.parametrize("spec", follow_stage_specs(), ids=lambda p: p.stem)
def test_a_key_that_is_on_stays_on_as_the_stages_advance(spec):
    for plan in plans_of(spec):
        stages = [s for s in plan.stages]
        evaluators = {s.name: Evaluator(document(plan.at(s.name))) for s in stages}
        for flag in [f for f in plan.flags if f.follows_stage]:
            splits = [
                split for s in stages for split in own_splits(document(plan.at(s.name))["flags"][flag.name], flag.name)
            ]
            assert all(split[0][0] == "on" for split in splits), f"{flag.name}: 'on' comes first"
            assert len({split[0][1] + split[1][1] for split in splits}) <= 1, f"{flag.name}: one total for every stage"
            for earlier, later in zip(stages, stages[1:]):
                if later.weight < earlier.weight:
                    continue
                before = {k for k in MONOTONE_KEYS if evaluators[earlier.name].on(flag.name, k)}
                after = {k for k in MONOTONE_KEYS if evaluators[later.name].on(flag.name, k)}
                assert before <= after, f"{plan.out} {flag.name}: {earlier.name} -> {later.name} turned keys off"
                if later.weight > earlier.weight and 0 < later.weight < 1:
                    assert after - before, f"{plan.out} {flag.name}: {later.name} added no key"


# --------------------------------------------------------------------------- ENABLED, never DISABLED


@pytest.mark.parametrize("spec", SPECS_WITH_FLAGS, ids=lambda p: p.stem)
def test_flags_are_never_disabled_and_off_for_everyone_means_default_off(spec):
    for plan in all_stage_plans(spec):
        doc = document(plan)
        ev = Evaluator(doc)
        for name, flag in doc["flags"].items():
            assert flag["state"] == "ENABLED"
            assert flag["variants"] == {"on": True, "off": False}
            if flagd.constant(plan, next(f for f in plan.flags if f.name == name)) is False:
                assert flag["defaultVariant"] == "off" and "targeting" not in flag
                assert not ev.on(name, "user-7", default=True)


def test_requests_without_a_targeting_key_get_a_partial_flag_off():
    ev = Evaluator(document(plan_of(SPECS / "genesis.yaml")))
    assert not ev.on("phase_4_deployment", None, default=True)
    assert ev.on("orchestration_enabled", None)


# --------------------------------------------------------------------------- metadata, plain files, ConfigMap


def test_metadata_records_the_override_variable_and_the_share_not_the_stage_name():
    """A stage that leaves every flag as it was leaves the flag files as they were."""
    plan = plan_of(SPECS / "genesis.yaml")
    doc = document(plan)
    meta = doc["flags"]["phase_4_deployment"]["metadata"]
    assert meta["envOverride"] == "PHASE_4_DEPLOYMENT"
    assert meta["rollout"] == "follow-stage" and meta["share"] == "5%" and "stage" not in meta
    assert meta["requires"] == "orchestration_enabled"
    assert doc["metadata"]["flagSetId"] == "genesis/genesis-orchestrator"


def test_plain_json_and_env_file_for_applications_without_flagd():
    files = compile_files(SPECS / "genesis.yaml")
    base = "genesis/genesis-orchestrator/flags/"
    plain = json.loads(files[base + "feature_flags.json"])["flags"]
    assert plain["phase_4_deployment"]["enabled"] is True
    assert plain["phase_4_deployment"]["rollout_percentage"] == 5
    assert plain["aatc_system_enabled"]["enabled"] is False
    assert plain["emergency_shutdown"]["kill_switch"] is True and plain["emergency_shutdown"]["enabled"] is False
    env = files[base + "flags.env"]
    assert "ORCHESTRATION_ENABLED=true\n" in env and "AATC_SYSTEM_ENABLED=false\n" in env
    assert "EMERGENCY_SHUTDOWN=false\n" in env
    assert "\nPHASE_4_DEPLOYMENT=" not in env  # 5%: left to the per-key evaluation
    rolled_back = files["genesis/genesis-orchestrator/rollback/flags/flags.env"]
    assert "PHASE_4_DEPLOYMENT=false\n" in rolled_back and "LLM_INTEGRATION_ENABLED=false\n" in rolled_back


def test_the_env_file_loads_in_a_shell_and_agrees_with_flagd(tmp_path):
    bash = tool("bash")
    for plan in all_stage_plans(SPECS / "genesis.yaml"):
        env_file = tmp_path / "flags.env"
        env_file.write_text(flagd.render(plan)[flagd.ENV])
        proc = subprocess.run([bash, "-c", f"set -euo pipefail; set -a; . {env_file}; set +a; env"],
                              capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr
        loaded = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        for flag in plan.flags:
            fixed = flagd.constant(plan, flag)
            if fixed is None:
                assert flag.env not in loaded
            else:
                assert loaded[flag.env] == ("true" if fixed else "false"), f"{plan.current.name}: {flag.name}"


def test_the_configmap_carries_the_three_files_byte_for_byte():
    plan = plan_of(SPECS / "genesis.yaml")
    files = flagd.render(plan)
    found, problems = kubecheck.manifests(files)
    assert problems == [] and len(found) == 1
    configmap = found[0]
    assert kubecheck.schema_errors(configmap) == []
    assert configmap.doc["metadata"]["name"] == plan.names.flags_configmap
    for path in (flagd.FLAGD, flagd.PLAIN, flagd.ENV):
        assert configmap.doc["data"][path.rsplit("/", 1)[1]] == files[path]


def test_no_flags_no_files():
    plan = plan_of(SPECS / "ultra-fast-analyzer.yaml")
    assert plan.flags == () and flagd.render(plan) == {}


# --------------------------------------------------------------------------- lint and hostile values


def spec_with_flags(tmp_path: Path, flags_yaml: str) -> Path:
    text = (SPECS / "genesis.yaml").read_text()
    head, _, rest = text.partition("flags:\n")
    _, _, tail = rest.partition("alerting:\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(head + "flags:\n" + flags_yaml + "alerting:\n" + tail)
    return spec


def test_a_share_flagd_cannot_split_exactly_is_a_located_lint_error(tmp_path):
    spec = spec_with_flags(tmp_path, "  phase_4_deployment: {rollout: follow-stage}\n  tiny: {rollout: 0.00000001%}\n")
    result = pipeline.analyse([spec])
    errors = [d for d in result.diagnostics if d.severity == "error"]
    line = spec.read_text().splitlines().index("  tiny: {rollout: 0.00000001%}") + 1
    assert len(errors) == 1 and "tiny" in errors[0].message and (errors[0].line, errors[0].col) == (line, 3)


def test_fine_shares_use_a_larger_weight_total(tmp_path):
    spec = spec_with_flags(tmp_path, "  phase_4_deployment: {rollout: follow-stage}\n  fine: {rollout: 0.015%}\n")
    plan = plan_of(spec)
    flag = document(plan)["flags"]["fine"]
    split = flag["targeting"]["if"][-1]["fractional"]
    assert split[1:] == [["on", 15], ["off", 99_985]]


def test_hostile_descriptions_land_inert_in_json(tmp_path):
    hostile = 'x"}, "flags": {"evil": 1}, "a": "\\u0000 </script>'
    spec = spec_with_flags(tmp_path, f"  phase_4_deployment: {{rollout: follow-stage, description: '{hostile}'}}\n")
    plan = plan_of(spec)
    doc = document(plan)
    assert set(doc["flags"]) == {"phase_4_deployment"}
    assert doc["flags"]["phase_4_deployment"]["metadata"]["description"] == hostile
    assert json.loads(flagd.render(plan)[flagd.PLAIN])["flags"]["phase_4_deployment"]["description"] == hostile


def test_a_kill_switch_that_kills_nothing_is_an_error_and_the_finest_step_is_spelled_out(tmp_path):
    from compiler import pipeline

    base = (SPECS / "genesis.yaml").read_text()
    spec = tmp_path / "g.yaml"
    for flag, says in (("ks: {kill_switch: true, kills: []}", "kill switch 'ks' kills nothing"),
                       ("tiny: {rollout: '0.00000001%'}", "steps of 0.0000001% or coarser")):
        spec.write_text(base.replace("flags:\n", f"flags:\n  {flag}\n", 1))
        messages = [d.message for d in pipeline.analyse([spec]).diagnostics if d.severity == "error"]
        assert any(says in m for m in messages), messages
