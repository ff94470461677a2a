"""A spec's file name lands in every generated file: it can never break out of the language it lands in."""

from __future__ import annotations

import shlex
import subprocess

from compiler import serialize
from conftest import GOLDEN, compile_files, tool, write_tree

HOSTILE = 'a{{ .Value }}--->b $(id) "x"'


def test_a_hostile_spec_file_name_lands_inert(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / f"{HOSTILE}.yaml"
    spec.write_text((GOLDEN / "in-checkout.yaml").read_text())
    files = compile_files(spec.name)
    out = tmp_path / "out"
    write_tree(out, files)
    plan_md = files["shop/checkout/PLAN.md"]
    assert plan_md.splitlines()[0].count("-->") == 1 and plan_md.splitlines()[0].endswith("-->")
    (rules,) = serialize.read_yaml(files["shop/checkout/prometheus/rules.yaml"])
    alert = next(r for g in rules["groups"] for r in g["rules"] if "alert" in r)
    command = alert["annotations"]["rollback_command"]
    assert '{{ "{{" }}' in command
    assert shlex.split(command.replace('{{ "{{" }}', "{{"))[2] == spec.name
    proc = subprocess.run([tool("promtool"), "test", "rules", str(out / "shop/checkout/prometheus/rules.test.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([tool("promtool"), "check", "rules", str(out / "shop/checkout/prometheus/rules.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
