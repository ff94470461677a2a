"""The command line: exit codes, output formats, --help, the schema file, explain."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from compiler.spec import model
from compiler.cli import main
from conftest import GOLDEN, ROOT, SPECS

BAD = ROOT / "tests" / "validate" / "bad" / "unknown-current.yaml"


def run(*args: str) -> CliRunner.invoke:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "Usage: " in result.output
    assert main.commands[command].help, f"{command} has no help text"


def test_usage_errors_exit_2():
    assert run("compile", SPECS).exit_code == 2  # no -o
    assert run("lint").exit_code == 2
    assert run("no-such-command").exit_code == 2
    assert run("lint", "--format", "xml", SPECS).exit_code == 2


def test_lint_ok_and_errors():
    assert run("lint", SPECS).exit_code == 0
    result = run("lint", BAD)
    assert result.exit_code == 1
    assert "tests/validate/bad/unknown-current.yaml:14:10: error: current stage 'canari'" in result.stderr


def test_missing_path_is_a_located_error(tmp_path):
    result = run("lint", tmp_path / "nope.yaml")
    assert result.exit_code == 1 and "nope.yaml:1:1: error: no such file or directory" in result.stderr


def test_github_and_json_formats():
    result = run("lint", "--format", "github", BAD)
    assert result.exit_code == 1
    assert result.stdout.startswith(
        "::error file=tests/validate/bad/unknown-current.yaml,line=14,col=10,title=rollout current::"
    )
    result = run("lint", "--format", "json", BAD)
    assert result.exit_code == 1
    (item,) = json.loads(result.stdout)
    assert item == {
        "path": "tests/validate/bad/unknown-current.yaml", "line": 14, "col": 10, "severity": "error",
        "message": item["message"], "code": "current",
    }
    assert json.loads(run("lint", "--format", "json", SPECS).stdout) == []


def test_github_format_escapes_message_newlines_and_percent():
    from compiler.diagnostics import Diagnostic

    line = Diagnostic("a,b:c.yaml", 1, 2, "error", "50% of\nthat").github()
    assert line == "::error file=a%2Cb%3Ac.yaml,line=1,col=2,title=rollout spec::50%25 of%0Athat"


def test_strict_turns_warnings_into_failure(tmp_path):
    text = (ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text()
    spec = tmp_path / "warn.yaml"
    spec.write_text(
        text.replace("  - {name: full, weight: 100%}", "  - {name: half, weight: 50%}\n  - {name: full, weight: 100%}")
    )
    assert run("lint", spec).exit_code == 0
    result = run("lint", "--strict", spec)
    assert result.exit_code == 1 and "warning: stage 'half' has neither a `hold` nor an approval" in result.stderr


def test_check_reports_drift_with_a_diff(tmp_path):
    out = tmp_path / "out"
    spec = GOLDEN / "in-checkout.yaml"
    assert run("compile", spec, "-o", out).exit_code == 0
    assert run("check", spec, "-o", out).exit_code == 0
    plan = next(out.rglob("PLAN.md"))
    plan.write_text(plan.read_text().replace("payments", "someone else"))
    result = run("check", spec, "-o", out)
    assert result.exit_code == 1
    assert "--- a/shop/checkout/PLAN.md" in result.stdout and "-| Owner | someone else |" in result.stdout
    assert "is stale" in result.stderr
    assert run("compile", spec, "-o", out).exit_code == 0
    assert run("check", spec, "-o", out).exit_code == 0


def test_schema_file_is_current():
    committed = json.loads((ROOT / "schema" / "rollout.schema.json").read_text())
    assert committed == json.loads(run("schema").stdout), "run `make schema` and commit schema/rollout.schema.json"
    assert committed == json.loads(json.dumps(model.json_schema()))


def test_schema_validates_the_specs_an_editor_opens():
    import jsonschema
    from ruamel.yaml import YAML

    schema = json.loads((ROOT / "schema" / "rollout.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(SPECS.glob("*.yaml")) + sorted(GOLDEN.glob("in-*.yaml")):
        data = YAML(typ="safe").load(path.read_text())
        data.pop("environments", None)
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], f"{path.name}: {errors}"
    bad = YAML(typ="safe").load((ROOT / "tests" / "validate" / "bad" / "unknown-field.yaml").read_text())
    assert list(validator.iter_errors(bad))


def test_explain_prints_the_stage_table():
    result = run("explain", GOLDEN / "in-checkout.yaml")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "shop/checkout: v1.9.0 -> v2.0.0 (canary), current: canary"
    assert lines[1].split() == ["STAGE", "TRAFFIC", "MIRROR", "HOLD", "GATES", "ON", "BREACH"]
    assert lines[3].split()[:5] == ["*", "canary", "1%", "-", "2h"]
    assert "error rate < 1%; p99 latency < 200ms" in lines[3] and lines[3].endswith("rollback (critical)")
    assert "Gates judge confidence bounds" in result.stdout and "below 200 canary requests" in result.stdout


def test_explain_asks_for_an_environment():
    result = run("explain", SPECS / "ai-orchestra.yaml")
    assert result.exit_code == 2 and "choose one" in result.output
    result = run("explain", SPECS / "ai-orchestra.yaml", "--env", "staging")
    assert result.exit_code == 0 and "current: switch" in result.stdout


def test_folders_skip_yaml_that_is_not_a_spec_but_named_files_are_checked(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n")
    (tmp_path / "spec.yaml").write_text((ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text())
    (tmp_path / "typo.yaml").write_text("apiVersion: rollout-compiler/v1\nkind: Rolout\n")
    result = run("lint", tmp_path)
    assert result.exit_code == 1
    assert "typo.yaml:2:7: error: kind: 'Rolout' is not allowed" in result.stderr
    assert "kustomization.yaml" not in result.stderr
    (tmp_path / "typo.yaml").unlink()
    assert run("lint", tmp_path).exit_code == 0
    assert run("lint", tmp_path / "kustomization.yaml").exit_code == 1


def test_folders_skip_the_manifests_of_other_apis_also_a_rollout_or_one_that_does_not_load(tmp_path):
    """Argo Rollouts' own `kind: Rollout`, a multi-document manifest and a ConfigMap above a spec's size limit
    beside specs: a folder compile skips them; named, a manifest of another API is one located error."""
    (tmp_path / "spec.yaml").write_text((ROOT / "tests" / "validate" / "good" / "minimal.yaml").read_text())
    (tmp_path / "argo.yaml").write_text("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web}\n"
                                        "spec: {replicas: 5, strategy: {canary: {steps: [{setWeight: 20}]}}}\n")
    (tmp_path / "many.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n"
                                        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\n")
    big = "".join(f"  k{i}: {'x' * 100}\n" for i in range(3000))
    (tmp_path / "big.yaml").write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata:\n{big}")
    result = run("lint", tmp_path)
    assert result.exit_code == 0 and result.stderr.strip() == "1 rollout(s) ok", result.stderr
    named = run("lint", tmp_path / "argo.yaml")
    assert named.exit_code == 1
    assert named.stderr.splitlines() == [f"{tmp_path / 'argo.yaml'}:1:13: error: not a rollout spec: the API group "
                                         "'argoproj.io' is another API's (a spec has apiVersion: rollout-compiler/v1 "
                                         "and kind: Rollout); a folder compile skips such files"]
    (tmp_path / "broken.yaml").write_text("apiVersion: rollout-compiler/v1\nkind: Rollout\n---\nmore: 1\n")
    assert run("lint", tmp_path).exit_code == 1  # says it is a spec: its mistake is reported
    (tmp_path / "broken.yaml").unlink()
    minimal = (tmp_path / "spec.yaml").read_text()
    for typo in ("rolout-compiler/v1", "rollout-compiler.dev/v1"):  # a misspelt group is a spec's mistake, not skipped
        (tmp_path / "typo.yaml").write_text(minimal.replace("apiVersion: rollout-compiler/v1", f"apiVersion: {typo}"))
        result = run("lint", tmp_path)
        assert result.exit_code == 1 and f"apiVersion: '{typo}' is not allowed" in result.stderr, typo


def test_an_output_path_below_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "afile").write_text("x\n")
    result = run("compile", GOLDEN / "in-ramp.yaml", "-o", tmp_path / "afile" / "sub")
    assert result.exit_code == 2 and "is a file" in result.output


def test_check_in_json_prints_one_document_naming_each_stale_file(tmp_path):
    spec, out = GOLDEN / "in-ramp.yaml", tmp_path / "out"
    assert run("compile", spec, "-o", out).exit_code == 0
    plan_md = next(out.rglob("PLAN.md"))
    plan_md.write_text("edited\n")
    result = run("check", "--format", "json", spec, "-o", out)
    assert result.exit_code == 1
    items = json.loads(result.stdout)
    (item,) = [i for i in items if i["severity"] == "error"]  # the spec's warnings come along
    line = next(n for n, text in enumerate(spec.read_text().splitlines(), 1) if text.startswith("current:"))
    shown = "tests/golden/in-ramp.yaml"
    assert item["path"] == shown and item["code"] == "drift" and item["line"] == line
    assert "1 file(s) differ (PLAN.md)" in item["message"]
    github = run("check", "--format", "github", spec, "-o", out)
    assert github.exit_code == 1 and f"\n::error file={shown},line={line}," in "\n" + github.stdout
    assert github.stdout.count("::error ") == 1  # once per rollout, at the spec
    assert "\n--- a/" in github.stdout  # the diff follows the annotations


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_output_that_cannot_be_written_is_a_located_error_and_nothing_is_written(tmp_path, fmt):
    spec, out = GOLDEN / "in-ramp.yaml", tmp_path / "out"
    assert run("compile", spec, "-o", out).exit_code == 0
    prometheus = next(out.rglob("prometheus"))
    for child in prometheus.iterdir():
        child.unlink()
    prometheus.rmdir()
    prometheus.write_text("mine\n")  # a file where a folder goes
    def tree():  # the compile's private lock and staging folder, .rollout/, aside
        return {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".rollout" not in p.parts}

    before = tree()
    result = run("compile", "--format", fmt, spec, "-o", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    if fmt == "json":
        items = json.loads(result.stdout)
        items = [i for i in items if i["severity"] == "error"]
        assert items and all(i["code"] == "emit" for i in items)
        assert any("is a file where rollout needs a folder" in i["message"] for i in items)
    else:
        assert f"{prometheus}/rules.yaml:1:1: error: " in result.stderr
    assert tree() == before
