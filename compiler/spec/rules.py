"""Semantic rules of a spec: what the schema alone cannot say.

Each rule yields located diagnostics; all rules run, so a user sees every
problem of a file at once.  Rules that concern one output target live in that
target's ``lint`` instead.
"""

from __future__ import annotations

import difflib
from fractions import Fraction
from collections.abc import Callable, Iterator

from compiler.gates import presets
from compiler.gates.alerts import camel
from compiler.spec import model, routers
from compiler.diagnostics import Diagnostic
from compiler.spec.load import Document, Loc
from compiler.ir.plan import ROLLBACK, StagePlan
from compiler.ir.planner import stages_of
from compiler.spec.units import format_percent

Rule = Callable[[model.RolloutSpec, Document], Iterator[Diagnostic]]
RULES: list[tuple[Rule, frozenset[str]]] = []


def rule(*sections: str) -> Callable[[Rule], Rule]:
    """A semantic rule, and the top-level sections of the spec it reads: when one of them failed the schema,
    the rule is not run (it would judge a stand-in), and every other problem is still reported."""

    def register(fn: Rule) -> Rule:
        RULES.append((fn, frozenset(sections)))
        return fn

    return register


def check(spec: model.RolloutSpec, doc: Document, broken: frozenset[str] = frozenset()) -> list[Diagnostic]:
    """Every rule's problems; ``broken``: sections that failed the schema (their rules are skipped)."""
    out: list[Diagnostic] = []
    for fn, sections in RULES:
        if not sections & broken:
            out.extend(fn(spec, doc))
    return out


MIRROR_TARGETS = routers.MIRRORING


def _planned_stages(spec: model.RolloutSpec) -> tuple[StagePlan, ...]:
    """The stages the plan will have (names, weights, mirrors), or none when the spec gives neither form."""
    if spec.stages is None and spec.strategy is None:
        return ()
    return stages_of(spec)


@rule("stages", "strategy")
def stages_or_strategy(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    if spec.stages is None and spec.strategy is None:
        yield doc.error((), "the spec needs `stages` or `strategy`", "stages")
    elif spec.stages is not None and spec.strategy is not None:
        yield doc.error(("strategy",), "give `stages` or `strategy`, not both", "stages")
    elif spec.stages is not None and not spec.stages:
        yield doc.error(("stages",), "`stages` is empty: a rollout needs at least one stage", "stages")


@rule("stages", "traffic")
def stage_shapes(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    if not spec.stages:
        return
    seen: dict[str, int] = {}
    previous: Fraction | None = None
    for i, stage in enumerate(spec.stages):
        loc = ("stages", i)
        if stage.name in seen:
            yield doc.error(
                loc + ("name",),
                f"stage name '{stage.name}' is used twice (first at stage {seen[stage.name] + 1})",
                "stages",
            )
        seen.setdefault(stage.name, i)
        if stage.mirror is not None:
            if stage.weight is not None:
                yield doc.error(
                    loc + ("weight",),
                    f"stage '{stage.name}' mirrors traffic: a shadow stage has no weight (its users stay on stable)",
                    "stages",
                )
            if stage.mirror == 0:
                yield doc.error(
                    loc + ("mirror",),
                    f"stage '{stage.name}' mirrors 0%: give a share above 0 or remove `mirror`",
                    "stages",
                )
        elif stage.weight is None:
            yield doc.error(loc, f"stage '{stage.name}' needs a `weight` (or `mirror` for a shadow stage)", "stages")
            continue
        weight = stage.weight if stage.weight is not None else Fraction(0)
        if previous is not None and weight < previous:
            yield doc.error(
                loc + ("weight",) if stage.weight is not None else loc,
                f"stage '{stage.name}' has weight {format_percent(weight)}, less than the {format_percent(previous)} "
                "of the stage before: weights must not decrease",
                "stages",
            )
        previous = weight if previous is None else max(previous, weight)
        if stage.gates is None and stage.on_breach != "rollback":
            yield doc.warning(
                loc + ("on_breach",), f"stage '{stage.name}' has no gates: on_breach never applies", "stages"
            )
    last = spec.stages[-1]
    if last.weight != 1:
        yield doc.error(
            ("stages", len(spec.stages) - 1) + (("weight",) if last.weight is not None else ()),
            f"the last stage ('{last.name}') must send 100% of traffic to the new version, not "
            f"{format_percent(last.weight or Fraction(0))}",
            "stages",
        )
    for i, stage in enumerate(spec.stages[:-1]):
        if stage.hold is None and stage.approve is None:
            yield doc.warning(
                ("stages", i, "name"),
                f"stage '{stage.name}' has neither a `hold` nor an approval: `rollout gate` and `rollout advance` "
                "would promote it as soon as it starts; give it `hold: DURATION`, or `approve: manual` for a person "
                "to decide",
                "stages",
            )


def _steps(doc: Document, entries: list[model.Step], loc: Loc, need_full: bool) -> Iterator[Diagnostic]:
    steps = [entry.weight for entry in entries]
    if not steps and need_full:
        yield doc.error(loc, "steps is empty: give the canary weights, e.g. [5, 20, 100]", "stages")
        return
    for i in range(1, len(steps)):
        if steps[i] < steps[i - 1]:
            yield doc.error(
                loc + (i,),
                f"step {format_percent(steps[i])} is less than the step before ({format_percent(steps[i - 1])}): "
                "steps must not decrease",
                "stages",
            )
        elif steps[i] == steps[i - 1]:
            yield doc.error(loc + (i,), f"step {format_percent(steps[i])} appears twice", "stages")
    if need_full and steps and steps[-1] != 1:
        yield doc.error(
            loc + (len(steps) - 1,), f"the last step must be 100%, not {format_percent(steps[-1])}", "stages"
        )
    if not need_full:
        for i, step in enumerate(steps):
            if step >= 1 or step == 0:
                yield doc.error(
                    loc + (i,),
                    f"a step before the switch must be between 0% and 100%, not {format_percent(step)}",
                    "stages",
                )


@rule("strategy", "traffic")
def strategy_shapes(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    strategy = spec.strategy
    if isinstance(strategy, model.PresetStrategy):
        if strategy.preset == "custom":
            if strategy.steps is None:
                yield doc.error(("strategy", "preset"), "the custom preset needs `steps`, e.g. [5, 20, 100]", "stages")
            else:
                yield from _steps(doc, strategy.steps, ("strategy", "steps"), True)
        elif strategy.steps is not None:
            yield doc.error(
                ("strategy", "steps"),
                f"the {strategy.preset} preset has fixed steps; use `preset: custom` to give your own",
                "stages",
            )
    elif isinstance(strategy, model.BlueGreenStrategy):
        bg = strategy.blue_green
        yield from _steps(doc, bg.steps, ("strategy", "blue-green", "steps"), False)
        if bg.color_label in bg.selector:
            yield doc.error(("strategy", "blue-green", "selector", bg.color_label),
                            f"the selector must not contain the colour label '{bg.color_label}'", "stages")


@rule("traffic")
def gateway_read_by_a_target(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    """`traffic.gateway` is the Gateway API target's; without that target nothing reads it."""
    if spec.traffic.gateway is not None and "gateway-api" not in spec.traffic.targets:
        mesh = " (the istio target's VirtualService binds to the mesh only)" if "istio" in spec.traffic.targets else ""
        yield doc.warning(("traffic", "gateway"), "traffic.gateway is read by the gateway-api target only, which "
                          f"`traffic.targets` does not list: nothing attaches to this Gateway{mesh}", "traffic")


@rule("strategy", "metrics", "service")
def colors_istio_can_tell_apart(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    """Istio reports the pods' `version` label as destination_version, which the istio source queries: a
    blue-green whose colour label is `version` gives the pods the colour there, not the service's versions."""
    if not isinstance(spec.strategy, model.BlueGreenStrategy) or spec.metrics.source != "istio":
        return
    bg = spec.strategy.blue_green
    old = bg.active
    new = "green" if old == "blue" else "blue"
    versions = (spec.service.stable.version, spec.service.canary.version)
    if bg.color_label == "version" and versions != (old, new):
        yield doc.warning(
            ("strategy", "blue-green", "color_label") if "color_label" in bg.model_fields_set
            else ("strategy", "blue-green"),
            f"the pods' `version` label is their colour ('{old}', '{new}'), so Istio reports "
            f"destination_version={old}/{new}, but the istio metrics source reads destination_version="
            f"{versions[0]}/{versions[1]}: the gates would never see either variant; set `color_label` to "
            "another label (e.g. color) and keep `version: <service.<variant>.version>` on the pods",
            "metrics")


@rule("stages", "strategy", "traffic", "current")
def current_stage(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    names = [stage.name for stage in _planned_stages(spec)]
    if spec.current == ROLLBACK or not names or spec.current in names:
        return
    close = difflib.get_close_matches(spec.current, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    yield doc.error(
        ("current",),
        f"current stage '{spec.current}' is not a stage of this rollout (stages: {', '.join(names)}; "
        f"or 'rollback'){hint}",
        "current",
        prefer_key=False,
    )


@rule("stages", "strategy", "traffic", "approved")
def approvals(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    names = [stage.name for stage in _planned_stages(spec)]
    if not names:
        return
    listed: list[tuple[str, Loc]] = []
    if isinstance(spec.strategy, model.PresetStrategy):
        listed = [(n, ("strategy", "approve", i)) for i, n in enumerate(spec.strategy.approve)]
    elif isinstance(spec.strategy, model.BlueGreenStrategy):
        listed = [(n, ("strategy", "blue-green", "approve", i)) for i, n in enumerate(spec.strategy.blue_green.approve)]
    else:
        listed = [(s.name, ("stages", i, "approve")) for i, s in enumerate(spec.stages or []) if s.approve == "manual"]
    last = names[-1]
    for name, loc in listed:
        if name == last and len(names) > 1:
            yield doc.warning(loc, f"stage '{last}' is the last stage: it never advances, so its approval is never "
                              f"asked for; to have a person approve the step to '{last}', approve '{names[-2]}'",
                              "stages", prefer_key=False)
    if spec.approved is not None:
        listed.append((spec.approved.stage, ("approved", "stage")))
    for name, loc in listed:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (stages: {', '.join(names)})"
            yield doc.error(loc, f"'{name}' is not a stage of this rollout{hint}", "stages", prefer_key=False)


@rule("service", "traffic")
def variants(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    s = spec.service
    if s.stable.version == s.canary.version:
        yield doc.error(
            ("service", "canary", "version"),
            f"stable and canary both run version '{s.stable.version}': metrics could not tell them apart",
            "service",
        )
    if s.stable.backend == s.canary.backend:
        yield doc.error(
            ("service", "canary", "backend"),
            f"stable and canary share the backend '{s.stable.backend}': routers could not split traffic",
            "service",
        )
    needs_servers = [t for t in spec.traffic.targets if t in ("haproxy", "nginx")]
    if needs_servers:
        for role in ("stable", "canary"):
            variant = getattr(s, role)
            if not variant.servers:
                yield doc.error(
                    ("service", role),
                    f"the {' and '.join(needs_servers)} target needs service.{role}.servers "
                    "(HOST:PORT of each instance)",
                    "service",
                )
            elif all(server.backup for server in variant.servers):
                yield doc.error(
                    ("service", role, "servers"),
                    f"service.{role}.servers are all backups: at least one must serve",
                    "service",
                )
    addresses: dict[str, str] = {}
    for role in ("stable", "canary"):
        for i, server in enumerate(getattr(s, role).servers):
            if server.address in addresses:
                yield doc.error(
                    ("service", role, "servers", i),
                    f"server {server.address} is listed twice (also in {addresses[server.address]})",
                    "service",
                )
            addresses.setdefault(server.address, f"service.{role}.servers")


@rule("stages", "strategy", "flags", "traffic", "service")
def traffic(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    seen = set()
    for i, target in enumerate(spec.traffic.targets):
        if target in seen:
            yield doc.error(("traffic", "targets", i), f"target '{target}' is listed twice", "traffic")
        seen.add(target)
    testers = spec.traffic.testers
    if testers is not None:
        values = [v for v in testers.values]
        for i, value in enumerate(values):
            if value in values[:i]:
                yield doc.error(
                    ("traffic", "testers", "values", i), f"tester value '{value}' is listed twice", "traffic"
                )
        sticky = spec.traffic.sticky
        if sticky is not None and sticky.header and sticky.header.lower() == testers.header.lower():
            yield doc.error(
                ("traffic", "testers", "header"), "the testers header must differ from the sticky header", "traffic"
            )
    blue_green = spec.strategy.blue_green if isinstance(spec.strategy, model.BlueGreenStrategy) else None
    if not spec.traffic.targets:
        if blue_green is not None and blue_green.steps:
            yield doc.error(("strategy", "blue-green", "steps"), "weighted steps need a router that splits traffic: "
                            "list one in traffic.targets, or leave the steps out (the two Services alone preview "
                            "the new colour through the preview Service and switch at stage `switch`)", "traffic")
        elif blue_green is None and not any(f.rollout == "follow-stage" for f in spec.flags.values()):
            yield doc.error(
                ("traffic", "targets"),
                "no traffic targets and no flag with `rollout: follow-stage`: nothing would realise the stages",
                "traffic",
            )
    mirrors = [t for t in spec.traffic.targets if t in MIRROR_TARGETS]
    if not mirrors and any(s.mirror for s in _planned_stages(spec)):
        yield doc.error(("traffic", "targets"), "a shadow stage mirrors traffic, but none of the targets can mirror "
                        f"(those that can: {', '.join(MIRROR_TARGETS)})", "traffic")
    if blue_green is not None and testers is None and spec.traffic.targets:
        yield doc.error(
            ("traffic",), "a blue-green rollout previews the new colour to testers, whom the routers recognise by a "
            "header: give traffic.testers (without routers, testers call the preview Service instead)", "traffic"
        )


MAX_REQUIREMENTS = 16  # flags one flag may require, directly or through others


@rule("service", "strategy")
def target_port(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    if spec.service.target_port is not None and not isinstance(spec.strategy, model.BlueGreenStrategy):
        yield doc.error(("service", "target_port"), "service.target_port is only used by blue-green rollouts, for the "
                        "two Services rollout generates; a canary rollout routes to your own Services, whose "
                        "targetPort you set there", "service")


@rule("flags")
def flags(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    table = spec.flags
    envs: dict[str, str] = {}
    for name, flag in table.items():
        loc = ("flags", name)
        yield from _references(doc, table, loc + ("requires",), flag.requires,
                               f"flag '{name}' requires '{{flag}}', which is not a flag of this spec",
                               f"flag '{name}' cannot require the kill switch '{{flag}}'", hint=True)
        if flag.kill_switch:
            yield from _kill_switch(doc, name, flag, table, loc)
        else:
            yield from _set_but_not_for(doc, flag, loc, ("kills", "engaged", "engage_on_rollback"),
                                        f"`{{field}}` is for kill switches; set `kill_switch: true` on '{name}' or "
                                        "remove it")
        if flag.env:
            if flag.env in envs:
                yield doc.error(
                    loc + ("env",),
                    f"environment variable {flag.env} already overrides flag '{envs[flag.env]}'",
                    "flags",
                    prefer_key=False,
                )
            envs.setdefault(flag.env, name)
    yield from _cycles(spec, doc)


def _set_but_not_for(doc: Document, flag: model.Flag, loc: Loc, fields: tuple[str, ...],
                     why: str) -> Iterator[Diagnostic]:
    """An error at each of ``fields`` the flag sets though its kind has no use for it (``{field}`` in ``why``
    names it)."""
    for field in fields:
        if getattr(flag, field):
            yield doc.error(loc + (field,), why.replace("{field}", field), "flags")


def _kill_switch(doc: Document, name: str, flag: model.Flag, table: dict[str, model.Flag],
                 loc: Loc) -> Iterator[Diagnostic]:
    yield from _set_but_not_for(doc, flag, loc, ("rollout", "allow", "requires"),
                                f"kill switch '{name}' cannot have `{{field}}`: it is either engaged or not")
    if flag.kills is not None and not flag.kills:
        yield doc.error(loc + ("kills",), f"kill switch '{name}' kills nothing (`kills: []`): name the flags "
                        "it forces off, or leave `kills` out to kill every other flag", "flags")
    yield from _references(doc, table, loc + ("kills",), flag.kills or [],
                           f"kill switch '{name}' kills '{{flag}}', which is not a flag of this spec",
                           f"kill switch '{name}' cannot kill another kill switch ('{{flag}}')")


def _references(doc: Document, table: dict[str, model.Flag], loc: Loc, names: list[str], unknown: str, switch: str,
                hint: bool = False) -> Iterator[Diagnostic]:
    """Flags a flag names (its requirements, a kill switch's targets): each a flag of the spec, not a kill switch.
    ``unknown`` and ``switch`` are the messages, ``{flag}`` standing for the flag named."""
    for i, target in enumerate(names):
        if target not in table:
            close = difflib.get_close_matches(target, list(table), n=1) if hint else []
            message = unknown.replace("{flag}", target) + (f"; did you mean '{close[0]}'?" if close else "")
            yield doc.error(loc + (i,), message, "flags", prefer_key=False)
        elif table[target].kill_switch:
            yield doc.error(loc + (i,), switch.replace("{flag}", target), "flags", prefer_key=False)


def _cycles(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    """Dependency cycles, then requirement sets too large to inline (an iterative walk: chains may be long)."""
    graph = {name: [r for r in flag.requires if r in spec.flags and not spec.flags[r].kill_switch]
             for name, flag in spec.flags.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    finished: list[str] = []  # every flag after the flags it requires
    reported: set[frozenset[str]] = set()
    for root in sorted(graph):
        if root in state:
            continue
        path, todo = [root], [iter(graph[root])]
        state[root] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                node = path.pop()
                state[node] = 2
                finished.append(node)
                todo.pop()
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    node = path[-1]
                    yield doc.error(("flags", node, "requires", spec.flags[node].requires.index(nxt)),
                                    f"flag dependency cycle: {' -> '.join(cycle)}", "flags", prefer_key=False)
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(graph[nxt]))
    if reported:
        return
    closure: dict[str, frozenset[str]] = {}
    for name in finished:
        closure[name] = frozenset(graph[name]).union(*(closure[r] for r in graph[name]))
    for name in sorted(graph):
        if len(closure[name]) > MAX_REQUIREMENTS:
            yield doc.error(("flags", name, "requires"),
                            f"flag '{name}' requires {len(closure[name])} flags, directly or through others; flagd "
                            f"has no prerequisite flags, so each is inlined into its targeting: at most "
                            f"{MAX_REQUIREMENTS}", "flags")


@rule("alerting")
def alerting(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    if spec.alerting is None:
        return
    receivers = spec.alerting.receivers
    used: set[str] = set()
    for severity in ("critical", "warning", "info", "rollback"):
        for i, name in enumerate(getattr(spec.alerting.routes, severity)):
            used.add(name)
            if name not in receivers:
                close = difflib.get_close_matches(name, list(receivers), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (receivers: {', '.join(sorted(receivers))})"
                yield doc.error(
                    ("alerting", "routes", severity, i),
                    f"route '{severity}' names receiver '{name}', which is not defined{hint}",
                    "alerting",
                    prefer_key=False,
                )
    for name in receivers:
        if name not in used:
            yield doc.warning(("alerting", "receivers", name), f"receiver '{name}' is not used by any route")
    if not spec.alerting.routes.critical:
        yield doc.warning(
            ("alerting", "routes"), "no receiver for critical alerts: a breach that rolls back pages nobody"
        )


@rule("stages", "strategy")
def gate_names(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    """A gate's alert is named after it (``error_rate`` -> ``...ErrorRateBreached``): two gates of one stage whose
    names spell the same alert name would give two rules of one alert, and nobody could tell which breached."""
    builtin = {camel(name): f"the built-in gate '{name}'" for name in model.Gates.model_fields if name != "custom"}
    for gates, loc in _gates_with_locs(spec):
        seen = dict(builtin)
        for name in gates.custom:
            other = seen.setdefault(camel(name), f"custom gate '{name}'")
            if other != f"custom gate '{name}'":
                yield doc.error(loc + ("custom", name), f"custom gate '{name}' has the alert name of {other} "
                                f"({camel(name)}): rename it", "gates")


@rule("stages", "strategy")
def unitless_error_rates(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    """An error rate written as a ratio (``< 0.01``) is read as percent: a hundred times stricter than meant."""
    for _, loc in _gates_with_locs(spec):
        at = loc + ("error_rate",)
        raw = _raw_at(doc.data, at)
        shorthand = isinstance(raw, str)
        if isinstance(raw, dict):
            raw, at = raw.get("max"), at + ("max",)
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            continue
        text = str(raw).strip().lstrip("<=").strip()
        try:
            ratio = Fraction(text)
        except (ValueError, ZeroDivisionError):
            continue  # with a unit (or none the schema accepts)
        if not 0 < ratio < 1:
            continue
        write = "'< {}'" if shorthand else "max: '{}'"
        yield doc.warning(at, f"error_rate {text} has no unit, and a bare number is percent: "
                          f"this gate allows {format_percent(ratio / 100)} errors; write "
                          f"{write.format(text + '%')} to keep it, or {write.format(format_percent(ratio))} if {text} "
                          "was a ratio", "gates", prefer_key=False)


@rule("flags")
def unitless_flag_rollouts(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    """A flag's share written as a ratio (``rollout: 0.5``) is read as percent: 0.5% of users, not half."""
    for key in spec.flags:
        at = ("flags", key, "rollout")
        raw = _raw_at(doc.data, at)
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            continue
        text = str(raw).strip()
        try:
            ratio = Fraction(text)
        except (ValueError, ZeroDivisionError):
            continue  # with a unit, or follow-stage
        if 0 < ratio < 1:
            yield doc.warning(at, f"flag {key}: rollout {text} has no unit, and a bare number is percent: the flag "
                              f"reaches {format_percent(ratio / 100)} of users; write {text}% to keep it, or "
                              f"{format_percent(ratio)} if {text} was a ratio", "flags", prefer_key=False)


def _raw_at(data: object, loc: Loc) -> object:
    for part in loc:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _gates_with_locs(spec: model.RolloutSpec) -> Iterator[tuple[model.Gates, Loc]]:
    if spec.stages:
        for i, stage in enumerate(spec.stages):
            if stage.gates is not None:
                yield stage.gates, ("stages", i, "gates")
    elif isinstance(spec.strategy, model.PresetStrategy) and spec.strategy.gates is not None:
        yield spec.strategy.gates, ("strategy", "gates")
    elif isinstance(spec.strategy, model.BlueGreenStrategy) and spec.strategy.blue_green.gates is not None:
        yield spec.strategy.blue_green.gates, ("strategy", "blue-green", "gates")


def _template_problems(field: str, template: str) -> Iterator[str]:
    """What is wrong with one of metrics.custom's templates."""
    problem = presets.check_template(template)
    if problem:
        yield f"metrics.custom.{field} is not valid PromQL: {problem}"
    if "$window" not in template:
        yield f"metrics.custom.{field} must use $window as its range (e.g. [$window])"
    if not any(p in template for p in ("$variant", "$version", "$backend")):
        yield (f"metrics.custom.{field} must select one variant with $variant, $version or $backend: without it "
               "stable and canary are the same query")
    if field == "latency" and "$quantile" not in template:
        yield "metrics.custom.latency must use $quantile (e.g. histogram_quantile($quantile, ...))"


@rule("metrics", "stages", "strategy")
def promql(spec: model.RolloutSpec, doc: Document) -> Iterator[Diagnostic]:
    m = spec.metrics
    if m.source == "custom":
        if m.custom is None:
            yield doc.error(
                ("metrics", "source"),
                "source 'custom' needs metrics.custom with `requests` and `errors` PromQL templates",
                "metrics",
            )
        else:
            for field in ("requests", "errors", "latency"):
                template = getattr(m.custom, field)
                for message in _template_problems(field, template) if template is not None else ():
                    yield doc.error(("metrics", "custom", field), message, "promql", prefer_key=False)
    elif m.custom is not None:
        yield doc.error(
            ("metrics", "custom"),
            f"metrics.custom is only used with `source: custom` (source is '{m.source}')",
            "metrics",
        )
    if m.namespace_label != "namespace" and m.source not in ("generic", "ingress-nginx", "haproxy"):
        yield doc.error(
            ("metrics", "namespace_label"),
            f"metrics.namespace_label is not used with `source: {m.source}` (generic, ingress-nginx and haproxy "
            "select the namespace by it)",
            "metrics",
        )
    for key, default in (("workload_label", "service"), ("workload", "name")):
        if getattr(m, key) != default and m.source != "generic":
            yield doc.error(("metrics", key), f"metrics.{key} is only used with `source: generic` "
                            f"(source is '{m.source}')", "metrics")
    has_latency = m.source != "haproxy" and not (
        m.source == "custom" and (m.custom is None or m.custom.latency is None)
    )
    for gates, loc in _gates_with_locs(spec):
        for key in ("p95_latency", "p99_latency"):
            if getattr(gates, key) is not None and not has_latency:
                why = (
                    "HAProxy's exporter publishes no latency histogram"
                    if m.source == "haproxy"
                    else "metrics.custom has no `latency` template"
                )
                yield doc.error(
                    loc + (key,),
                    f"gate {key} cannot be measured from the '{m.source}' metrics source: {why}",
                    "metrics",
                )
        for name, gate in gates.custom.items():
            if "$quantile" in gate.query:
                yield doc.error(
                    loc + ("custom", name, "query"),
                    f"custom gate '{name}' uses $quantile, which only "
                    "metrics.custom.latency has; write the quantile in the query",
                    "promql",
                    prefer_key=False,
                )
                continue
            problem = presets.check_template(gate.query)
            if problem:
                yield doc.error(
                    loc + ("custom", name, "query"),
                    f"custom gate '{name}' is not valid PromQL: {problem}",
                    "promql",
                    prefer_key=False,
                )
