"""The spec language's faults that new users found, one test each: hints, complete reports, honest lint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from compiler import pipeline
from compiler.spec import load
from compiler.targets.routers import istio
from conftest import ROOT, plan_of

HEAD = """apiVersion: rollout-compiler/v1
kind: Rollout
metadata: {name: web, namespace: shop, owner: web-team}
service:
  host: web.example.com
  port: 8080
  stable: {version: v1, backend: web-v1}
  canary: {version: v2, backend: web-v2}
"""
GATEWAY = "traffic: {targets: [gateway-api], gateway: {name: public}}\n"


def problems(tmp_path: Path, text: str, name: str = "spec.yaml") -> list[str]:
    """``line:col: severity: message`` of every problem of a spec."""
    spec = tmp_path / name
    spec.write_text(text)
    return [d.text().split(":", 1)[1] for d in pipeline.analyse([spec]).diagnostics]


def test_a_typo_under_a_stage_s_gates_gets_the_gates_hint(tmp_path):
    text = HEAD + GATEWAY + """stages:
  - {name: canary, weight: 5%, hold: 1h, gates: {eror_rate: "< 1%"}}
  - {name: full, weight: 100%}
current: canary
"""
    assert problems(tmp_path, text) == ["11:50: error: unknown field 'eror_rate'; did you mean 'error_rate'?"]


def test_a_typo_one_level_deeper_gets_a_hint_too(tmp_path):
    text = HEAD + GATEWAY + """stages:
  - {name: canary, weight: 5%, hold: 1h, gates: {error_rate: {max: 1%, windw: 5m}}}
  - {name: full, weight: 100%}
current: canary
"""
    assert problems(tmp_path, text) == ["11:72: error: unknown field 'windw'; did you mean 'window'?"]


def test_every_problem_is_reported_at_once(tmp_path):
    """A missing `preview` (a schema error) no longer hides the problems the rules find elsewhere."""
    text = HEAD + GATEWAY + """strategy:
  blue-green: {selector: {app: web}, active: blue, gates: {error_rate: "< 1%"}}
current: preview
flags:
  a: {rollout: 50%, requires: [b]}
alerting:
  receivers:
    team: {slack: {channel: "#x", api_url_file: /etc/alertmanager/slack}}
  routes: {critical: [nobody], warning: [team]}
"""
    found = problems(tmp_path, text)
    assert "11:3: error: missing required field 'preview'" in found
    assert any("flag 'a' requires 'b', which is not a flag of this spec" in p for p in found)
    assert any("route 'critical' names receiver 'nobody', which is not defined" in p for p in found)


def test_a_strategy_level_mistake_is_reported_once_per_gate_with_the_stages_in_order(tmp_path):
    text = HEAD + GATEWAY + (
        'strategy: {preset: custom, steps: [5, 10, 20, 100], hold: 10s, gates: {error_rate: "< 1%"}}\n'
        "current: canary-5\n")
    found = problems(tmp_path, text)
    assert found == ["10:72: error: gate error_rate of stages 'canary-5', 'canary-10', 'canary-20' and 'full' has a "
                     "5m `window`, longer than the 10s hold: it cannot judge the stage before it ends; make the "
                     "hold longer or the `window` shorter, or leave the stage without gates"]


@pytest.mark.parametrize("gate, where, told", [
    ('"< 0.01"', "11:62", "this gate allows 0.01% errors; write '< 0.01%' to keep it, or '< 1%' if 0.01 was a ratio"),
    ("{max: 0.05, window: 5m}", "11:68",
     "this gate allows 0.05% errors; write max: '0.05%' to keep it, or max: '5%' if 0.05 was a ratio"),
])
def test_an_error_rate_written_as_a_ratio_is_a_warning(tmp_path, gate, where, told):
    """Argo's and Flagger's users write ratios: a bare 0.01 is 0.01 %, a hundred times stricter than meant."""
    text = HEAD + GATEWAY + f"""stages:
  - {{name: canary, weight: 5%, hold: 1h, gates: {{error_rate: {gate}}}}}
  - {{name: full, weight: 100%}}
current: canary
"""
    value = "0.01" if "0.01" in gate else "0.05"
    assert problems(tmp_path, text) == [f"{where}: warning: error_rate {value} has no unit, and a bare number is "
                                        f"percent: {told}"]
    for fine in ('"< 1%"', '"< 2"', '"< 0.5%"'):
        assert problems(tmp_path, text.replace(gate, fine)) == []


def test_a_custom_gate_without_window_is_not_blamed_for_the_default_window(tmp_path):
    text = HEAD + GATEWAY + """stages:
  - name: canary
    weight: 5%
    hold: 1m
    gates:
      custom: {queue: {query: 'max(queue_depth{version="$version"})', max: 10, for: 30s}}
  - {name: full, weight: 100%}
current: canary
"""
    assert problems(tmp_path, text) == []


def test_target_port_on_a_canary_rollout_is_not_silently_ignored(tmp_path):
    text = HEAD.replace("  port: 8080\n", "  port: 8080\n  target_port: 9090\n") + GATEWAY + """stages:
  - {name: canary, weight: 5%, hold: 1h}
  - {name: full, weight: 100%}
current: canary
"""
    (found,) = problems(tmp_path, text)
    assert found.startswith("7:3: error: service.target_port is only used by blue-green rollouts")


def test_explain_shows_a_testers_only_stage_as_testers_only(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEAD + GATEWAY.replace("}}", "}, testers: {header: X-Canary, values: [qa]}}") + """stages:
  - {name: dark, weight: 0%, hold: 1h, gates: {error_rate: "< 1%"}}
  - {name: full, weight: 100%}
current: dark
""")
    out = subprocess.run([sys.executable, "-m", "compiler", "explain", str(spec)], capture_output=True, text=True)
    row = next(line for line in out.stdout.splitlines() if " dark " in line)
    assert "testers only" in row and " 0% " not in row


def test_an_istio_mirror_of_a_third_says_the_nearest_double_not_a_rounding_error():
    plan = plan_of(ROOT / "tests" / "golden" / "in-shadow.yaml")
    import dataclasses
    from fractions import Fraction

    stage = dataclasses.replace(plan.current, mirror=Fraction(1, 3))
    text = "".join(istio.render(dataclasses.replace(plan, stages=(stage,), current=stage)).values())
    assert "the nearest double" in text and not re.search(r"\d[eE]-\d", text)


def test_schema_defaults_are_valid_values_of_their_own_fields():
    schema = json.loads((ROOT / "schema" / "rollout.schema.json").read_text())
    checked = 0

    def walk(node: object) -> None:
        nonlocal checked
        if isinstance(node, dict):
            if "default" in node and node["default"] is not None and "type" in node:
                jsonschema.validate(node["default"], {k: v for k, v in node.items() if k != "default"})
                checked += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert checked > 10
    assert schema["$defs"]["Metrics"]["properties"]["window"]["default"] == "5m"


def test_the_readme_example_passes_lint_strict(tmp_path):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## A spec\n\n```yaml\n(.*?)```", readme, re.S)
    assert example is not None
    spec = tmp_path / "checkout.yaml"
    spec.write_text(example.group(1))
    assert pipeline.analyse([spec]).diagnostics == []


def test_an_unquoted_hash_gets_a_word_about_comments(tmp_path):
    text = HEAD + GATEWAY + """stages:
  - {name: canary, weight: 5%, hold: 1h, gates: {error_rate: "< 1%"}}
  - {name: full, weight: 100%}
current: canary
alerting:
  receivers:
    team:
      slack:
        channel: #payments-alerts
        api_url_file: /etc/alertmanager/slack
  routes: {critical: [team]}
"""
    (found,) = problems(tmp_path, text)
    assert "expected a string, got nothing" in found and "a `#` after `: ` starts a comment" in found


@pytest.mark.parametrize("stages, expected", [
    ('strategy: {preset: custom, steps: [0, 10, 100], gates: {error_rate: "< 1%"}}\ncurrent: canary-10\n',
     "stage 'canary-0' serves 0% and has no testers: its gates never judge"),
    ('metrics: {source: ingress-nginx}\nstages:\n  - {name: shadow, mirror: 100%, hold: 1h, gates: {error_rate: '
     '"< 1%"}}\n  - {name: full, weight: 100%}\ncurrent: shadow\n',
     "the gates of stage 'shadow' never judge: it only mirrors traffic, and ingress-nginx counts the requests"),
])
def test_gates_that_can_never_judge_are_warned_about(tmp_path, stages, expected):
    traffic = "traffic: {targets: [ingress-nginx]}\n"
    assert any(expected in p and "warning" in p for p in problems(tmp_path, HEAD + traffic + stages))


@pytest.mark.parametrize("stages, line", [
    ('strategy: {preset: fast, hold: 1h, approve: [full]}\ncurrent: canary-25\n', "10:46"),
    ('stages:\n  - {name: canary, weight: 5%, hold: 1h}\n  - {name: full, weight: 100%, approve: manual}\n'
     'current: canary\n', "12:41"),
])
def test_an_approval_of_the_last_stage_is_warned_about(tmp_path, stages, line):
    """The last stage never advances: its approval would never be asked for."""
    traffic = "traffic: {targets: [ingress-nginx]}\n"
    (found,) = problems(tmp_path, HEAD + traffic + stages)
    assert found.startswith(f"{line}: warning: stage 'full' is the last stage") and "approve '" in found


@pytest.mark.parametrize("color_label, warned", [(None, True), ("color", False)])
def test_a_blue_green_istio_cannot_measure_colours_in_the_version_label(tmp_path, color_label, warned):
    label = f", color_label: {color_label}" if color_label else ""
    text = HEAD + """traffic: {targets: [istio], testers: {header: X-Preview, values: [qa]}}
metrics: {source: istio}
strategy:
  blue-green: {selector: {app: web}%s, preview: 1h, switch_hold: 1h, gates: {error_rate: "< 1%%"}}
current: preview
""" % label
    found = [p for p in problems(tmp_path, text) if "destination_version" in p]
    assert bool(found) == warned and all("warning" in p for p in found), found


@pytest.mark.parametrize("targets, warned", [("[istio]", True), ("[istio, gateway-api]", False)])
def test_a_gateway_no_target_reads_is_warned_about(tmp_path, targets, warned):
    text = HEAD + f"traffic: {{targets: {targets}, gateway: {{name: public}}}}\n" + """stages:
  - {name: canary, weight: 5%, hold: 1h}
  - {name: full, weight: 100%}
current: canary
"""
    found = [p for p in problems(tmp_path, text) if "traffic.gateway is read by the gateway-api target only" in p]
    assert [p.split(": ")[0] for p in found] == (["9:29"] if warned else []), found


def test_the_plan_s_gantt_reads_the_same_in_every_time_zone():
    plan_md = (ROOT / "generated" / "genesis" / "genesis-orchestrator" / "PLAN.md").read_text()
    assert "dateFormat X" not in plan_md and "dateFormat YYYY-MM-DD" in plan_md
    assert re.search(r":active, s0, 2000-01-01, ", plan_md)


def test_deep_nesting_is_refused_where_it_happens_without_the_slow_loader(monkeypatch):
    def slow(*args: object, **kwargs: object) -> object:
        raise AssertionError("the full loader was asked")

    monkeypatch.setattr(load, "parse_text", slow)
    for text, where in (("[" * 10_000, (1, 65)), ("a: 1\nb: " + "{x: " * 10_000, (2, 4 + 4 * 63))):
        with pytest.raises(load.SpecError) as caught:
            load.load_bytes(text.encode(), "deep.yaml")
        (d,) = caught.value.diagnostics
        assert (d.line, d.col) == where and "nests deeper than 64 levels" in d.message


def test_a_file_name_with_a_control_character_is_refused_where_it_is(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "x\x1fy.yaml").write_text(HEAD + GATEWAY + "stages:\n  - {name: full, weight: 100%}\ncurrent: full\n")
    proc = subprocess.run([sys.executable, "-m", "compiler", "compile", str(folder), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "\x1f" not in proc.stderr
    assert "x\\x1fy.yaml:1:1: error: the file name has a character (\\x1f)" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_huge_value_is_quoted_in_a_message_of_bounded_length(tmp_path):
    text = (ROOT / "specs" / "genesis.yaml").read_text().replace("current: canary-5", "current: " + "a" * 200_000)
    (found,) = problems(tmp_path, text)
    assert "is not a stage of this rollout" not in found and len(found) < 2100 and found.endswith("more characters)")


def test_the_readme_diff_line_is_what_diff_prints_for_its_example(tmp_path):
    """`rollout diff` after promoting the README's spec prints the line the README shows."""
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## A spec\n\n```yaml\n(.*?)```", readme, re.S)
    shown = re.search(r"\(`(shop/checkout: canary 1% -> ramp 10%, \d+ files changed)`\)", readme)
    assert example is not None and shown is not None
    specs, out = tmp_path / "specs", tmp_path / "generated"
    specs.mkdir()
    (specs / "checkout.yaml").write_text(example.group(1))
    cli = [sys.executable, "-m", "compiler"]
    subprocess.run([*cli, "compile", str(specs), "-o", str(out)], check=True, capture_output=True, timeout=120)
    subprocess.run([*cli, "promote", str(specs / "checkout.yaml")], check=True, capture_output=True, timeout=120)
    diff = subprocess.run([*cli, "diff", str(specs), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert shown.group(1) in diff.stdout.splitlines()[0], diff.stdout[:500]


# --------------------------------------------------------------------------- words of the tools a spec replaces

STAGES = """stages:
  - {name: canary, weight: 5%, hold: 1h, gates: {error_rate: "< 1%"}}
  - {name: full, weight: 100%}
current: canary
"""


@pytest.mark.parametrize("where, written, advice", [
    ("gates: {error_rate: \"< 1%\"}", "gates: {error_rate: {min: 99}}", "a success rate of at least 99% is `max: 1%`"),
    ("hold: 1h,", "hold: 1h, pause: {},", "`approve: manual` waits for a person"),
    ("hold: 1h,", "hold: 1h, setWeight: 5,", "a stage's share of traffic is its `weight`"),
    ("gates: {error_rate: \"< 1%\"}", "gates: {error_rate: {max: 1%, threshold: 5}}", "a gate's `for` is how long"),
])
def test_a_field_of_argo_rollouts_or_flagger_says_what_to_write_instead(tmp_path, where, written, advice):
    found = problems(tmp_path, HEAD + GATEWAY + STAGES.replace(where, written, 1))
    assert any(advice in p and "did you mean" not in p for p in found), found


def test_a_flag_s_enabled_is_not_taken_for_the_kill_switch_s_engaged(tmp_path):
    found = problems(tmp_path, HEAD + GATEWAY + STAGES + "flags:\n  banner: {enabled: true}\n")
    assert len(found) == 1 and "unknown field 'enabled': a flag is on for the share of users in `rollout`" in found[0]


def test_alertmanager_timing_fields_say_the_routes_time_themselves(tmp_path):
    alerting = ("alerting:\n  receivers: {pager: {pagerduty: {routing_key_file: /etc/am/pd}}}\n"
                "  routes: {critical: [pager], warning: [pager], info: [pager], repeat_interval: 3h}\n")
    found = problems(tmp_path, HEAD + GATEWAY + STAGES + alerting)
    assert len(found) == 1 and "time each severity themselves" in found[0], found


def test_a_flag_share_written_as_a_ratio_is_a_warning(tmp_path):
    found = problems(tmp_path, HEAD + GATEWAY + STAGES + "flags:\n  banner: {rollout: 0.5}\n  other: {rollout: 5}\n")
    assert found == ["15:21: warning: flag banner: rollout 0.5 has no unit, and a bare number is percent: the flag "
                     "reaches 0.5% of users; write 0.5% to keep it, or 50% if 0.5 was a ratio"]


def test_a_hold_longer_than_a_year_is_refused(tmp_path):
    found = problems(tmp_path, HEAD + GATEWAY + STAGES.replace("hold: 1h", "hold: 99999999999999999999d"))
    assert found == ["11:38: error: stages[0].hold: '99999999999999999999d' is longer than 365d, the most a "
                     "duration of a spec may be"]


@pytest.mark.parametrize("traffic, message", [
    ("testers: {header: Cookie, values: [canary=always]}", "holds all of its cookies at once"),
    ("sticky: {header: cookie}", "write `sticky: {cookie: NAME}`"),
])
def test_the_cookie_header_is_neither_a_tester_header_nor_a_sticky_one(tmp_path, traffic, message):
    text = HEAD + GATEWAY.replace("}\n", f", {traffic}}}\n") + STAGES
    found = problems(tmp_path, text)
    assert len(found) == 1 and found[0].startswith("9:") and message in found[0], found


def test_a_severity_no_route_sends_is_a_warning(tmp_path):
    stages = STAGES.replace("{name: full, weight: 100%}",
                            "{name: full, weight: 100%, gates: {error_rate: \"< 1%\"}, on_breach: alert}")
    alerting = ("alerting:\n  receivers: {pager: {pagerduty: {routing_key_file: /etc/am/pd}}}\n"
                "  routes: {critical: [pager]}\n")
    found = problems(tmp_path, HEAD + GATEWAY + stages + alerting)
    assert any("stages 'canary', 'full' raise info alerts" in p and "no `info` receivers" in p for p in found), found
    assert any("stage 'full' raises warning alerts" in p and "add `warning: [RECEIVER]`" in p for p in found), found
    routed = alerting.replace("{critical: [pager]}", "{critical: [pager], warning: [pager], info: [pager]}")
    assert not any("receivers: Alertmanager sends them" in p for p in problems(tmp_path, HEAD + GATEWAY + stages
                                                                              + routed))
