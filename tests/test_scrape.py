"""What makes the gates' series exist: a scrape job Prometheus 2.42 loads, file-based targets, and a
ServiceMonitor or PodMonitor the Prometheus Operator's CRD accepts; settings the spec gives."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

import kubecheck
from compiler.gates.algebra import render
from compiler.targets.observability import scrape
from compiler.targets.routers import haproxy
from conftest import GOLDEN, SPECS, compile_files, plan_of, tool


def _spec(tmp_path: Path, text: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec


def test_the_scrape_fragment_and_the_targets_load_in_prometheus_2_42(tmp_path):
    """Every example's fragment merged into a prometheus.yml, and its targets read by a file_sd job."""
    configs, sd = [], []
    for spec in [GOLDEN / "in-checkout.yaml", SPECS / "ultra-fast-analyzer.yaml", SPECS / "modelops-coordinator.yaml"]:
        files = compile_files(spec)
        for path, text in files.items():
            if path.endswith(scrape.SNIPPET):
                configs += yaml.safe_load(text)["scrape_configs"]
            if path.endswith(scrape.TARGETS):
                target = tmp_path / f"{len(sd)}.json"
                target.write_text(text)
                sd.append(str(target))
    assert len(configs) >= 3 and sd
    configs.append({"job_name": "rollout-targets", "file_sd_configs": [{"files": sd}]})
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"}, "scrape_configs": configs}))
    done = subprocess.run([tool("promtool"), "check", "config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_the_haproxy_job_scrapes_the_exporter_where_the_spec_says(tmp_path):
    text = re.sub(r"p99_latency: [^,}\n]*,? ?", "", (GOLDEN / "in-checkout.yaml").read_text())
    text = text.replace("source: generic", "source: haproxy")
    text = text.replace("traffic:\n", "traffic:\n  haproxy: {exporter_port: 9405, admin_socket: /run/haproxy/checkout."
                        "sock, hosts: [lb-1.example.com, lb-2.example.com]}\n", 1)
    plan = plan_of(_spec(tmp_path, text))
    (job,) = scrape.snippet(plan)["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["lb-1.example.com:9405", "lb-2.example.com:9405"]
    assert job["static_configs"][0]["labels"] == {"rollout": "checkout", "namespace": "shop"}
    config = haproxy.config(plan, haproxy.runtime_of(plan))
    assert "bind :9405" in config and "stats socket '/run/haproxy/checkout.sock'" in config
    files = compile_files(_spec(tmp_path, text))
    assert "rollout runtime ../haproxy/runtime-rollback.txt --socket /run/haproxy/checkout.sock" in \
        files["shop/checkout/rollback/RUNBOOK.md"]


def test_the_generic_job_labels_targets_as_the_source_selects_them(tmp_path):
    plan = plan_of(GOLDEN / "in-checkout.yaml")
    (job,) = scrape.snippet(plan)["scrape_configs"]
    assert [g["labels"] for g in job["static_configs"]] == [
        {"namespace": "shop", "service": "checkout", "version": "v1.9.0"},
        {"namespace": "shop", "service": "checkout", "version": "v2.0.0"}]
    query = render(plan.metrics.canary.requests(300))
    assert all(f'{k}="{v}"' in query for k, v in job["static_configs"][1]["labels"].items())


def test_intervals_are_spec_settings(tmp_path):
    text = (GOLDEN / "in-checkout.yaml").read_text().replace(
        "metrics:\n", "metrics:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n", 1)
    files = compile_files(_spec(tmp_path, text))
    rules = yaml.safe_load(files["shop/checkout/prometheus/rules.yaml"])
    assert rules["groups"][0]["interval"] == "5s"
    assert yaml.safe_load(files["shop/checkout/prometheus/scrape-config.yaml"])["scrape_configs"][0][
        "scrape_interval"] == "5s"


def test_a_service_monitor_and_a_pod_monitor_pass_the_operator_s_schema(tmp_path):
    for kind in ("ServiceMonitor", "PodMonitor"):
        text = (GOLDEN / "in-checkout.yaml").read_text().replace(
            "metrics:\n", f"metrics:\n  monitor: {{kind: {kind}, selector: {{app: checkout}}, port: http}}\n", 1)
        files = compile_files(_spec(tmp_path, text))
        monitor = yaml.safe_load(files[f"shop/checkout/{scrape.MONITOR}"])
        assert monitor["kind"] == kind and monitor["metadata"]["namespace"] == "shop"
        _, problems = kubecheck.check_files({k: v for k, v in files.items() if k.startswith("shop/")},
                                            lambda m: "shop")
        assert not problems, problems[:5]
        assert json.dumps(monitor["spec"]["namespaceSelector"]) == '{"matchNames": ["shop"]}'
