"""flags/: the spec's flags at the stage in effect, for flagd and for applications without it.

- ``flags/flagd.json``: flagd flag definitions (https://flagd.dev/schema/v0/flags.json).
  Every flag is boolean with the variants ``on``/``off`` and stays ``ENABLED``
  (a ``DISABLED`` flag makes the SDK return the caller's default, which may be
  "on"); a flag that is off for everyone is ``defaultVariant: off`` without
  targeting.  A partial share is a ``fractional`` split ``[["on", w], ["off",
  total - w]]`` over an explicit bucketing value (the flag's key followed by the
  targeting key), with the total constant for the flag across stages, so a key
  that is on at 5% is still on at 10%.  flagd has no prerequisite flags: a
  required flag's own condition (allowlist and split, bucketed exactly as the
  required flag buckets on its own) is a shared evaluator (``$evaluators``,
  named after the flag), which the targeting of every flag requiring it
  references with ``{"$ref": name}``: an allowlist is written once, however
  many flags require it.  An engaged
  kill switch is compiled into the flags it kills: they are off, without
  targeting.
- ``flags/feature_flags.json`` and ``flags/flags.env``: the same states for
  applications that read a JSON file and environment variables.
- ``flags/configmap.yaml``: a ConfigMap holding the three files, for flagd (or
  the application) to mount in a cluster.

Precedence, for every targeting key: an engaged kill switch, then the required
flags (a flag whose requirement is off is off), then the allowlist, then the
percentage.  Requests without a targeting key get a flag only when it is on for
everyone.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Union

from compiler.targets import kube
from compiler import serialize
from compiler.ir.plan import FlagPlan, FlagState, Plan, StagePlan
from compiler.spec.units import format_decimal, format_percent
from compiler.targets.base import CARRIED, MANIFEST, Finding, Target

FLAGD = "flags/flagd.json"
PLAIN = "flags/feature_flags.json"
ENV = "flags/flags.env"
CONFIGMAP = "flags/configmap.yaml"

ON, OFF = "on", "off"
VARIANTS = {ON: True, OFF: False}
KEY = {"var": "targetingKey"}
MIN_TOTAL = 10_000  # weights in basis points where the shares allow it
MAX_TOTAL = 1_000_000_000  # flagd caps the sum of weights at 2^31 - 1
EVALUATOR = "openfeature-flagd-core 2.0.0"

Condition = Union[bool, dict[str, Any]]  # True/False when the same for every key, else JSONLogic


# --------------------------------------------------------------------------- weights


def weight_total(flag: FlagPlan) -> int | None:
    """The smallest power of ten >= 10,000 that expresses every share of ``flag`` exactly."""
    total = MIN_TOTAL
    while total <= MAX_TOTAL:
        if all((share * total).denominator == 1 for _, share in flag.shares):
            return total
        total *= 10
    return None


def weight(flag: FlagPlan, share: Fraction) -> tuple[int, int]:
    """(weight of ``on``, total) for ``share`` of ``flag``."""
    total = weight_total(flag)
    assert total is not None, "checked by lint"
    return int(share * total), total


def lint(plan: Plan) -> list[Finding]:
    out = []
    for flag in plan.flags:
        if flag.kind == "release" and weight_total(flag) is None:
            finest = format_decimal(Fraction(100, MAX_TOTAL)) + "%"
            out.append(Finding(flag.loc, f"flag '{flag.name}' has a share flagd cannot split exactly: "
                                         f"give percentages in steps of {finest} or coarser", code="flags"))
    return out


# --------------------------------------------------------------------------- conditions


def _or(*items: Condition) -> Condition:
    if any(item is True for item in items):
        return True
    rest = [item for item in items if item is not False]
    if not rest:
        return False
    return rest[0] if len(rest) == 1 else {"or": rest}


def _not(item: Condition) -> Condition:
    return (not item) if isinstance(item, bool) else {"!": item}


def _fractional(flag: FlagPlan, share: Fraction) -> dict[str, Any]:
    on, total = weight(flag, share)
    return {"fractional": [{"cat": [flag.name, KEY]}, [ON, on], [OFF, total - on]]}


def _allowed(state: FlagState) -> Condition:
    return {"in": [KEY, list(state.allow)]} if state.allow else False


def _exposed(flag: FlagPlan, share: Fraction) -> Condition:
    if share == 0 or share == 1:
        return share == 1
    return {"==": [_fractional(flag, share), ON]}


def own_condition(flag: FlagPlan, state: FlagState) -> Condition:
    """When ``flag`` itself is on (its allowlist or its split), its requirements aside."""
    if state.killed:
        return False
    return _or(_allowed(state), _exposed(flag, state.share))


def requirements(plan: Plan, flag: FlagPlan) -> list[FlagPlan]:
    """Every flag ``flag`` requires, directly or through others, in name order."""
    by_name = {f.name: f for f in plan.flags}
    seen: set[str] = set()
    todo = list(flag.requires)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(by_name[name].requires)
    return [by_name[name] for name in sorted(seen)]


def _required(plan: Plan, flag: FlagPlan) -> list[Condition]:
    return [own_condition(r, plan.flag_state(r.name)) for r in requirements(plan, flag)]


def constant(plan: Plan, flag: FlagPlan) -> bool | None:
    """True/False when ``flag`` is the same for every targeting key at the stage in effect, else None."""
    state = plan.flag_state(flag.name)
    if flag.kind == "kill_switch":
        return state.engaged
    parts = [own_condition(flag, state)] + _required(plan, flag)
    if any(part is False for part in parts):
        return False
    if all(part is True for part in parts):
        return True
    return None


def evaluators(plan: Plan) -> dict[str, Condition]:
    """The shared evaluators: the own condition of each required flag that differs between keys, by its name."""
    by_name = {f.name: f for f in plan.flags}
    needed = sorted({r.name for f in plan.flags if f.kind != "kill_switch" and constant(plan, f) is None
                     for r in requirements(plan, f)})
    conditions = {name: own_condition(by_name[name], plan.flag_state(name)) for name in needed}
    return {name: c for name, c in conditions.items() if isinstance(c, dict)}


def targeting(plan: Plan, flag: FlagPlan) -> dict[str, Any]:
    """JSONLogic giving ``on`` or ``off`` for a flag that differs between keys (a requirement that differs
    between keys is a reference to its shared evaluator)."""
    state = plan.flag_state(flag.name)
    chain: list[Any] = [{"!": KEY}, OFF]
    for r in requirements(plan, flag):
        required = own_condition(r, plan.flag_state(r.name))
        if required is not True:
            chain += [_not({"$ref": r.name} if isinstance(required, dict) else required), OFF]
    if state.allow:
        chain += [_allowed(state), ON]
    share = state.share
    chain.append(_fractional(flag, share) if 0 < share < 1 else (ON if share == 1 else OFF))
    return {"if": chain}


# --------------------------------------------------------------------------- flagd.json


def _metadata(plan: Plan, flag: FlagPlan) -> dict[str, Any]:
    state = plan.flag_state(flag.name)
    meta: dict[str, Any] = {"kind": flag.kind}
    if flag.kind == "kill_switch":
        meta["engaged"] = state.engaged
        meta["kills"] = ",".join(flag.kills)
    else:
        meta["rollout"] = (
            "follow-stage" if flag.follows_stage else format_percent(dict(flag.shares)[plan.stages[0].name])
        )
        meta["share"] = format_percent(state.share)
        if flag.requires:
            meta["requires"] = ",".join(flag.requires)
        killers = [k.name for k in plan.flags if k.kind == "kill_switch" and plan.flag_state(k.name).engaged
                   and flag.name in k.kills]
        if killers:
            meta["killedBy"] = ",".join(killers)
    if flag.env:
        meta["envOverride"] = flag.env
    if flag.description:
        meta["description"] = flag.description
    return meta


def flagd_flag(plan: Plan, flag: FlagPlan) -> dict[str, Any]:
    fixed = constant(plan, flag)
    out: dict[str, Any] = {"state": "ENABLED", "variants": dict(VARIANTS)}
    if fixed is None:
        out["defaultVariant"] = OFF
        out["targeting"] = targeting(plan, flag)
    else:
        out["defaultVariant"] = ON if fixed else OFF
    out["metadata"] = _metadata(plan, flag)
    return out


def flagd_document(plan: Plan) -> dict[str, Any]:
    shared = evaluators(plan)
    return {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {flag.name: flagd_flag(plan, flag) for flag in plan.flags},
        **({"$evaluators": shared} if shared else {}),
        "metadata": {
            "flagSetId": plan.out,
            "generatedBy": " ".join(kube.header(plan).splitlines()),
        },
    }


# --------------------------------------------------------------------------- plain files


def _percent_number(share: Fraction) -> int | float:
    percent = share * 100
    return percent.numerator if percent.denominator == 1 else float(format_decimal(percent))


def plain_flag(plan: Plan, flag: FlagPlan) -> dict[str, Any]:
    state = plan.flag_state(flag.name)
    fixed = constant(plan, flag)
    out: dict[str, Any] = {
        "enabled": fixed is not False,
        "kill_switch": flag.kind == "kill_switch",
        "rollout_percentage": _percent_number(state.share),
        "allow": list(state.allow),
        "requires": list(flag.requires),
        "env": flag.env,
        "description": flag.description,
    }
    if flag.kind == "kill_switch":
        out["kills"] = list(flag.kills)
    return out


def plain_document(plan: Plan) -> dict[str, Any]:
    return {
        "rollout": plan.out,
        "spec": {"path": plan.source.path},
        "flags": {flag.name: plain_flag(plan, flag) for flag in plan.flags},
    }


def env_text(plan: Plan) -> str:
    lines = [
        "Environment overrides of the flags: true or false when a flag is",
        "the same for every targeting key; a flag that differs between keys is left unset, so that",
        "flagd or feature_flags.json decides per key. Load with `set -a; . ./flags.env; set +a`,",
        "docker --env-file, or systemd EnvironmentFile=.",
    ]
    return serialize.comment(kube.header(plan)) + serialize.comment("\n".join(lines)) + "".join(env_lines(plan))


def env_lines(plan: Plan) -> list[str]:
    """One line per flag with an override variable: its value, or why it is unset."""
    out = []
    for flag in plan.flags:
        if not flag.env:
            continue
        fixed = constant(plan, flag)
        if fixed is None:
            state = plan.flag_state(flag.name)
            why = f"on for {format_percent(state.share)} of targeting keys"
            if state.allow:
                why += f" and for {', '.join(state.allow)}"
            partial = [r.name for r in requirements(plan, flag) if constant(plan, r) is None]
            if partial:
                why += f", where {', '.join(partial)} (required) is on"
            out.append(f"# {flag.env} is unset: flag {flag.name} is {why}\n")
        else:
            out.append(f"{flag.env}={'true' if fixed else 'false'}\n")
    return out


# --------------------------------------------------------------------------- the target


def render(plan: Plan) -> dict[str, str]:
    if not plan.flags:
        return {}
    files = {
        FLAGD: serialize.json_text(flagd_document(plan)),
        PLAIN: serialize.json_text(plain_document(plan)),
        ENV: env_text(plan),
    }
    data = {path.rsplit("/", 1)[1]: text for path, text in files.items()}
    configmap = kube.config_map(plan, plan.names.flags_configmap, data, {"app.kubernetes.io/component": "flags"})
    files[CONFIGMAP] = kube.manifest(
        plan, configmap, "flagd: mount this ConfigMap and start flagd with --uri file:<mount>/flagd.json"
    )
    return files


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    if not plan.flags:
        return {}
    staged = plan.at(stage.name)
    return {FLAGD: staged.flag_states, PLAIN: staged.flag_states, ENV: tuple(env_lines(staged)),
            CONFIGMAP: staged.flag_states}


TARGET: Target = Target("flagd", render, lint=lint, rollback=True,
                kinds={FLAGD: CARRIED, PLAIN: CARRIED, ENV: CARRIED, CONFIGMAP: MANIFEST}, stage_keys=stage_keys)
