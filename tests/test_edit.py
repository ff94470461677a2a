"""compiler.edit: `current` changes on one line; every other byte of the spec stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.diagnostics import SpecError
from compiler.ops import edit
from compiler.spec.load import load_file, parse_text
from compiler.ir.plan import ROLLBACK
from conftest import ALL_SPECS, SPECS, plans_of


def line_diff(old: str, new: str) -> tuple[list[int], list[int]]:
    """(indexes of lines of ``old`` that changed, indexes of lines of ``new`` that were added)."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    if len(a) == len(b):
        return [i for i, (x, y) in enumerate(zip(a, b)) if x != y], []
    added = [i for i in range(len(b)) if b[:i] + b[i + 1:] == a]
    return [], added[:1]


def stage_names(spec: Path) -> list[str]:
    return sorted({s.name for plan in plans_of(spec) for s in plan.stages} | {ROLLBACK})


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_setting_current_to_any_stage_changes_exactly_one_line(spec):
    text = spec.read_text()
    data, _, _ = parse_text(text, str(spec))
    for name in stage_names(spec):
        change = edit.set_current(text, name, None, str(spec))
        if name == data["current"]:
            assert change.text == text
            continue
        changed, added = line_diff(text, change.text)
        assert changed == [change.line - 1] and added == []
        old_line, new_line = text.splitlines()[change.line - 1], change.text.splitlines()[change.line - 1]
        assert old_line.replace(data["current"], name, 1) == new_line
        after, _, _ = parse_text(change.text, str(spec))
        assert after == {**data, "current": name}


def test_environment_current_is_replaced_or_added():
    spec = SPECS / "ai-orchestra.yaml"
    text = spec.read_text()
    change = edit.set_current(text, "canary-5", "staging", str(spec))
    changed, _ = line_diff(text, change.text)
    assert changed == [change.line - 1] and change.old == "switch"
    change = edit.set_current(text, "canary-5", "production", str(spec))
    changed, _ = line_diff(text, change.text)
    assert change.old is None and len(changed) == 1
    assert change.text.splitlines()[change.line - 1] == "  production: {current: canary-5}"
    data, _, _ = parse_text(change.text, str(spec))
    assert data["environments"]["production"] == {"current": "canary-5"}


def test_adding_to_a_block_mapping_adds_one_line_at_its_indentation():
    text = "a: 1\nenvironments:\n  prod:\n      # the production overrides\n      metadata: {namespace: p}\n"
    change = edit.set_current(text, "ramp", "prod", "x.yaml")
    assert (
        change.text
        == "a: 1\nenvironments:\n  prod:\n      current: ramp\n      # the production overrides\n"
        "      metadata: {namespace: p}\n"
    )
    assert line_diff(text, change.text) == ([], [3])


def test_adding_to_a_non_empty_flow_mapping_keeps_its_other_entries_and_comment():
    text = "environments:\n  prod: {metadata: {namespace: p}}   # production\n"
    change = edit.set_current(text, "ramp", "prod", "x.yaml")
    assert change.text == "environments:\n  prod: {current: ramp, metadata: {namespace: p}}   # production\n"


@pytest.mark.parametrize("written, expected", [
    ('current: "canary"  # one percent\n', 'current: "ramp"  # one percent\n'),
    ("current: 'canary'\n", "current: 'ramp'\n"),
    ("current:   canary    # spaced\n", "current:   ramp    # spaced\n"),
    ("current: canary\r\n", "current: ramp\r\n"),
    ("current: canary", "current: ramp"),
])
def test_quoting_spacing_comments_and_line_endings_are_kept(written, expected):
    text = "kind: Rollout\n" + written
    assert edit.set_current(text, "ramp", None, "x.yaml").text == "kind: Rollout\n" + expected


def test_a_value_yaml_would_read_as_something_else_is_quoted():
    assert edit.set_current("current: canary\n", "null", None, "x.yaml").text == 'current: "null"\n'
    assert edit.set_current("current: canary\n", "true", None, "x.yaml").text == 'current: "true"\n'
    assert edit.set_current("current: canary\n", "on", None, "x.yaml").text == 'current: "on"\n'  # YAML 1.1 readers


def test_a_reason_is_recorded_on_the_changed_line_and_cleared_on_resume():
    text = "kind: Rollout\ncurrent: canary\nflags: {}\n"
    rolled = edit.set_current(text, ROLLBACK, None, "x.yaml", reason="p99 > 200ms\nsince 10:02")
    assert rolled.text == "kind: Rollout\ncurrent: rollback  # rolled back: p99 > 200ms since 10:02\nflags: {}\n"
    resumed = edit.set_current(rolled.text, "canary", None, "x.yaml")
    assert resumed.text == text


def test_a_reason_keeps_the_comment_already_on_the_line():
    text = "kind: Rollout\ncurrent: canary   # started by @alice, OPS-12\nflags: {}\n"
    rolled = edit.set_current(text, ROLLBACK, None, "x.yaml", reason="p95 spike")
    assert (
        rolled.text
        == "kind: Rollout\ncurrent: rollback   # started by @alice, OPS-12  # rolled back: p95 spike\nflags: {}\n"
    )
    again = edit.set_current(rolled.text, ROLLBACK, None, "x.yaml", reason="still failing")
    assert (
        again.text
        == "kind: Rollout\ncurrent: rollback   # started by @alice, OPS-12  # rolled back: still failing\nflags: {}\n"
    )
    resumed = edit.set_current(again.text, "canary", None, "x.yaml")
    assert resumed.text == text
    assert edit.set_current(text, "ramp", None, "x.yaml").text == text.replace("canary", "ramp")


@pytest.mark.parametrize("text, env, message", [
    ("current: canary\n", "prod", "has no `environments`"),
    ("current: canary\nenvironments: {staging: {}}\n", "prod", "no environment 'prod'"),
    ("current: canary\nenvironments:\n  prod: 3\n", "prod", "must be a mapping"),
    ("kind: Rollout\n", None, "has no `current`"),
    ("current: &a canary\n", None, "cannot edit `current` in place"),
    ("current: [a]\n", None, "cannot edit `current` in place"),
])
def test_what_cannot_be_edited_is_a_located_error(text, env, message):
    with pytest.raises(edit.EditError) as info:
        edit.set_current(text, "ramp", env, "x.yaml")
    assert message in str(info.value)
    assert info.value.diagnostic.path == "x.yaml" and info.value.diagnostic.line >= 1


def test_stage_names_are_the_only_values():
    with pytest.raises(ValueError):
        edit.scalar_token("ramp: 1", "plain")
    assert edit.scalar_token("canary-0p5", "'") == "'canary-0p5'"


def test_every_spec_loads_the_same_after_a_round_trip_through_the_loader():
    for spec in ALL_SPECS:
        data = load_file(spec).data
        edited = edit.set_current(spec.read_text(), data["current"], None, str(spec)).text
        assert edited == spec.read_text()


def test_a_reason_lands_after_a_flow_mapping_environment():
    text = (SPECS / "ai-orchestra.yaml").read_text()
    change = edit.set_current(text, ROLLBACK, "production", "ai-orchestra.yaml", reason="p95 over 2s")
    before, after = text.splitlines(), change.text.splitlines()
    (row,) = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert after[row] == "  production: {current: rollback}  # rolled back: p95 over 2s"
    assert len(before) == len(after)


def test_a_reason_after_a_flow_mapping_is_replaced_and_cleared_like_any_other():
    text = "current: canary\nenvironments:\n  staging: {current: ramp, metadata: {namespace: s}}  # owner: qa\n"
    rolled = edit.set_current(text, ROLLBACK, "staging", "x.yaml", reason="errors")
    assert rolled.text.endswith("{current: rollback, metadata: {namespace: s}}  # owner: qa  # rolled back: errors\n")
    again = edit.set_current(rolled.text, ROLLBACK, "staging", "x.yaml", reason="still")
    assert again.text.endswith("{current: rollback, metadata: {namespace: s}}  # owner: qa  # rolled back: still\n")
    resumed = edit.set_current(again.text, "ramp", "staging", "x.yaml")
    assert resumed.text == text


def test_lines_added_to_a_crlf_spec_end_in_crlf():
    text = "kind: Rollout\r\ncurrent: canary\r\nenvironments:\r\n  staging:\r\n    metadata: {namespace: s}\r\n"
    approved = edit.record_approval(text, "canary", "alice", "2030-01-01T00:00:00Z", None, "x.yaml")
    added = edit.set_current(text, ROLLBACK, "staging", "x.yaml")
    for changed in (approved.text, added.text):
        assert changed.count("\r\n") == changed.count("\n") == text.count("\n") + 1, changed


MERGED = ("current: canary\nenvironments:\n  staging: &stg\n    metadata: {namespace: s}\n    current: ramp\n"
          "  production: {<<: *stg, metadata: {namespace: p}}\n")


def test_an_environment_that_merges_current_from_an_anchor_gets_its_own():
    rolled = edit.set_current(MERGED, ROLLBACK, "production", "x.yaml")
    assert rolled.text == MERGED.replace("{<<: *stg", "{current: rollback, <<: *stg")
    approved = edit.record_approval(MERGED, "ramp", "bob", "2030-01-01T00:00:00Z", "production", "x.yaml")
    assert approved.text.endswith('  production: {approved: {stage: ramp, by: "bob", at: "2030-01-01T00:00:00Z"}, '
                                  "<<: *stg, metadata: {namespace: p}}\n")


def test_tabs_that_separate_tokens_are_read_as_yaml_reads_them():
    text = "kind: Rollout\nport:\t8080\ncurrent:\tcanary\t# in effect\n"
    assert parse_text(text, "x.yaml")[0] == {"kind": "Rollout", "port": 8080, "current": "canary"}
    changed = edit.set_current(text, "ramp", None, "x.yaml")
    assert changed.text == text.replace("canary", "ramp")
    with pytest.raises(SpecError, match="x.yaml:2:1: .*indentation must use spaces"):
        parse_text("a:\n\t- 1\n", "x.yaml")


def test_a_tab_inside_a_flow_plain_scalar_does_not_block_an_edit():
    """YAML 1.2 (and libyaml, the spec's loader) keeps `sum(up)<TAB>or vector(0)` one plain scalar in a flow
    mapping; ruamel.yaml ends it at the tab. The spec lints and compiles, so a rollback of it must go through."""
    text = "kind: Rollout\ngates: {q: {query: sum(up)\tor vector(0), max: 900}}\ncurrent: canary\n"
    changed = edit.set_current(text, "rollback", None, "x.yaml")
    assert changed.text == text.replace("current: canary", "current: rollback")


def test_a_byte_order_mark_is_kept_and_not_counted_as_a_column():
    text = "\ufeffcurrent: canary\nkind: Rollout\n"
    assert edit.set_current(text, "ramp", None, "x.yaml").text == "\ufeffcurrent: ramp\nkind: Rollout\n"


def test_an_approval_after_a_last_line_without_an_end_of_line_is_a_line_of_its_own():
    text = "kind: Rollout\ncurrent: canary"
    approved = edit.record_approval(text, "canary", "al", "2030-01-01T00:00:00Z", None, "x.yaml")
    assert approved.text == ('kind: Rollout\ncurrent: canary\n'
                             'approved: {stage: canary, by: "al", at: "2030-01-01T00:00:00Z"}\n')


def test_an_approval_is_written_in_the_letters_it_was_given():
    token = edit.approval_token("canary", "José 李雷 🚀", "2030-01-01T00:00:00Z")
    assert token == '{stage: canary, by: "José 李雷 🚀", at: "2030-01-01T00:00:00Z"}'
    text = "kind: Rollout\ncurrent: canary\n"
    approved = edit.record_approval(text, "canary", "José 李雷 🚀", "2030-01-01T00:00:00Z", None, "x.yaml")
    assert parse_text(approved.text, "x.yaml")[0]["approved"]["by"] == "José 李雷 🚀"


def test_an_environment_inheriting_current_is_approved_in_its_own_mapping():
    text = "current: canary\nenvironments:\n  production:\n    metadata: {namespace: p}\n"
    approved = edit.record_approval(text, "canary", "al", "2030-01-01T00:00:00Z", "production", "x.yaml")
    assert approved.text == text.replace(
        "  production:\n", '  production:\n    approved: {stage: canary, by: "al", at: "2030-01-01T00:00:00Z"}\n')


def test_the_same_rollback_again_keeps_its_reason_and_only_a_rollback_reason_is_cleared():
    rolled = "current: rollback  # rolled back: first\n"
    assert edit.set_current(rolled, ROLLBACK, None, "x.yaml").text == rolled
    own = "environments:\n  staging: {current: ramp}  # rolled back: never\ncurrent: canary\n"
    assert edit.set_current(own, "full", "staging", "x.yaml").text == own.replace("ramp", "full")


def test_a_reason_that_has_no_place_is_left_out_and_said():
    text = "current: canary\nenvironments:\n  dev: {metadata: {namespace: d}}  # owner: qa\n"
    rolled = edit.set_current(text, ROLLBACK, "dev", "x.yaml", reason="errors")
    assert rolled.text == text.replace("{metadata", "{current: rollback, metadata")
    assert rolled.note and "not recorded" in rolled.note
