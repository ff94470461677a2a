"""promtool accepts every generated rule file and every generated unit test passes.

Every spec is rendered at every stage and in the rollback state (what ``rollout
compile`` writes, and what each promotion will write), plus the committed
``generated/`` folder when there is one.  Identical files are run once.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from compiler import pipeline
from compiler.ir.plan import ROLLBACK, Plan
from compiler.gates import alerts, conventions
from compiler.gates.algebra import number
from compiler.targets.observability import prometheus
from conftest import ALL_SPECS, GOLDEN, ROOT, SPECS, compile_files, plan_of, plans_of, tool, write_tree
from test_prometheus import HOSTILE, hostile_spec, spec

GENERATED = ROOT / "generated"


def write(folder: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder / "prometheus"


def every_stage() -> list[Plan]:
    return [p.at(s) for p in plans_of(*ALL_SPECS) for s in [x.name for x in p.stages] + [ROLLBACK]]


@lru_cache(maxsize=1)
def rule_folders(root: str) -> tuple[Path, ...]:
    """Folders holding rules.yaml and rules.test.yaml: every stage of every spec, and generated/."""
    base = Path(root)
    folders = []
    for plan in every_stage():
        folders.append(write(base / plan.out / plan.current.name, prometheus.render(plan)))
    if GENERATED.is_dir():
        folders.extend(sorted(p.parent for p in GENERATED.rglob("prometheus/rules.test.yaml")))
    unique: dict[str, Path] = {}
    for folder in folders:
        key = hashlib.sha256(b"".join((folder / n).read_bytes() for n in ("rules.yaml", "rules.test.yaml"))).hexdigest()
        unique.setdefault(key, folder)
    return tuple(unique.values())


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, ...]:
    return rule_folders(str(tmp_path_factory.mktemp("rules")))


def promtool(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def run_tests(files: list[Path], workers: int = 2) -> list[tuple[int, str]]:
    """``promtool test rules`` over the files, in ``workers`` processes at once."""
    chunks = [files[i::workers] for i in range(workers) if files[i::workers]]
    running = [subprocess.Popen([tool("promtool"), "test", "rules", *map(str, chunk)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for chunk in chunks]
    out = []
    for proc in running:
        text, _ = proc.communicate(timeout=900)
        out.append((proc.returncode, text))
    return out


def failures(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "FAILED" in line or "name:" in line or "alertname" in line)[
        :4000
    ]


def test_promtool_accepts_every_rule_file(folders):
    result = promtool("check", "rules", *(str(f / "rules.yaml") for f in folders))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("SUCCESS") == len(folders)


def test_every_generated_unit_test_passes(folders):
    assert len(folders) >= 60  # every stage of every spec
    for code, text in run_tests([f / "rules.test.yaml" for f in folders]):
        assert code == 0, failures(text)


def test_the_tests_refer_to_the_rule_file_beside_them(folders, tmp_path):
    test = yaml.safe_load((folders[0] / "rules.test.yaml").read_text())
    assert test["rule_files"] == ["rules.yaml"]
    result = promtool("test", "rules", str(folders[0] / "rules.test.yaml"), cwd=tmp_path)  # from elsewhere
    assert result.returncode == 0, failures(result.stdout + result.stderr)


def test_every_alert_has_a_breach_a_healthy_run_and_zero_traffic():
    for plan in (
        plan_of(GOLDEN / "in-ramp.yaml"),
        plan_of(GOLDEN / "in-full.yaml"),
        plan_of(GOLDEN / "in-presets.yaml"),
    ):
        tests = prometheus.test_file(plan)["tests"]
        names = [t["name"] for t in tests]
        assert names[0].startswith("healthy:") and "Poisson" in names[0]
        assert names[1].startswith("zero canary traffic") and "no rollback" in names[1]
        assert names[2].startswith("no canary series")
        expected = {r.name for r in alerts.alert_rules(plan) if r.kind != "starved"}
        covered = {n.split(":")[0] for n in names[3:]}
        assert covered == expected
        for test in tests[3:]:
            assert re.search(r"fires at \S+", test["name"]) or "cannot fire" in test["name"], test["name"]


def _mutated(tmp_path: Path, plan: Plan, old: str, new: str) -> Path:
    files = prometheus.render(plan)
    assert files[prometheus.RULES].count(old) >= 1, old
    files[prometheus.RULES] = files[prometheus.RULES].replace(old, new)
    return write(tmp_path, files)


@pytest.mark.parametrize("old, new, alert", [
    ("} > 0.01) and", "} > 0.02) and", "CartErrorRateBreached"),  # a looser threshold fires later
    ("} > 0.2) and", "} > 0.3) and", "CartP99LatencyBreached"),
    ("* 300 < 200", "* 300 < 100", "CartCanaryStarved"),  # starved canary must count to min_requests
])
def test_a_changed_rule_fails_its_tests(tmp_path, old, new, alert):
    folder = _mutated(tmp_path, plan_of(GOLDEN / "in-ramp.yaml").at("canary"), old, new)
    result = promtool("test", "rules", str(folder / "rules.test.yaml"))
    assert result.returncode != 0
    assert f"alertname: {alert}" in result.stdout + result.stderr


@pytest.mark.parametrize("factor", [14.4, 6.0])
def test_each_burn_rate_page_is_shown_to_fire_and_clear(tmp_path, factor):
    """Silencing one page (its threshold out of reach) fails the generated tests."""
    plan = plan_of(GOLDEN / "in-full.yaml")
    limit = number(factor * float(conventions.error_gate(plan.current).threshold))
    folder = _mutated(tmp_path, plan, f"> {limit} and", "> 0.99 and")
    result = promtool("test", "rules", str(folder / "rules.test.yaml"))
    assert result.returncode != 0 and "alertname: ProfileErrorBudgetBurn" in result.stdout + result.stderr
    test = next(t for t in prometheus.test_file(plan)["tests"] if t["name"].startswith("ProfileErrorBudgetBurn"))
    assert re.search(r"fires at \S+, 2 of 3 clear by \S+", test["name"]), test["name"]
    window = {14.4: "1h", 6.0: "6h"}[factor]
    states = [
        any(a["exp_labels"]["window"] == window for a in check["exp_alerts"]) for check in test["alert_rule_test"]
    ]
    assert True in states and states[states.index(True):].count(False) > 0  # fires, then clears


def test_ingress_nginx_series_scraped_without_honor_labels_are_read_from_exported_namespace(tmp_path):
    text = (SPECS / "ai-orchestra.yaml").read_text().replace(
        "  source: ingress-nginx\n", "  source: ingress-nginx\n  namespace_label: exported_namespace\n")
    path = tmp_path / "ai-orchestra.yaml"
    path.write_text(text)
    plan = plan_of(path, "production").at("canary-5")
    assert 'exported_namespace="production"' in str(plan.metrics.canary.requests(300))
    assert 'namespace="production"' not in str(plan.metrics.canary.requests(300)).replace("exported_namespace", "")
    folder = write(tmp_path / "out", prometheus.render(plan))
    assert 'exported_namespace=\\"production\\"' in (folder / "rules.test.yaml").read_text()
    result = promtool("test", "rules", str(folder / "rules.test.yaml"))
    assert result.returncode == 0, failures(result.stdout + result.stderr)


def test_template_text_in_a_spec_renders_literally(tmp_path):
    plan = plan_of(hostile_spec(tmp_path))
    folder = write(tmp_path / "out", prometheus.render(plan))
    tests = yaml.safe_load((folder / "rules.test.yaml").read_text())
    expected = [a for t in tests["tests"] for check in t.get("alert_rule_test", []) for a in check["exp_alerts"]
                if check["alertname"] == "WebScoreBreached"]
    assert expected and all(HOSTILE in a["exp_annotations"]["description"] for a in expected)
    result = promtool("test", "rules", str(folder / "rules.test.yaml"))
    assert result.returncode == 0, failures(result.stdout + result.stderr)


CUSTOM_SOURCE = """metrics:
  source: custom
  min_requests: 50
  custom:
    requests: 'sum(rate(app_requests_total{app="web",track="$variant"}[$window]))'
    errors: 'sum(rate(app_failures_total{app="web",track="$variant"}[$window]))'
    latency: 'histogram_quantile($quantile, sum by (le) (rate(app_seconds_bucket{track="$variant"}[$window])))'
stages:
  - {name: canary, weight: 5%, hold: 1h, gates: {error_rate: "< 1%", p95_latency: "< 300ms",
     error_rate_vs_stable: "< 3x"}}"""


UNREADABLE = CUSTOM_SOURCE.replace(
    'requests: \'sum(rate(app_requests_total{app="web",track="$variant"}[$window]))\'',
    'requests: \'sum(rate(app_ok_total{track="$variant"}[$window]))'
    ' + sum(rate(app_failures_total{track="$variant"}[$window]))\'',
).replace(
    "latency: 'histogram_quantile",
    'latency: \'max(app_seconds{quantile="$quantile", track="$variant"}) or histogram_quantile',
)


@pytest.mark.parametrize("source", [CUSTOM_SOURCE, UNREADABLE], ids=["histogram", "quantile-label"])
def test_a_custom_metrics_source_is_tested_through_the_series_it_records(tmp_path, source):
    """The user's templates are never parsed back: the tests feed what their rules record."""
    path = spec(tmp_path, ('stages:\n  - {name: canary, weight: 5%, hold: 1h, gates: {error_rate: "< 1%"}}', source))
    plan = plan_of(path)
    folder = write(tmp_path / "out", prometheus.render(plan))
    test = (folder / "rules.test.yaml").read_text()
    assert "app_requests_total" not in test and "app_ok_total" not in test and "app_failures_total" not in test
    assert "rollout_variant:requests:rate5m{" in test and "rollout_variant:errors:rate5m{" in test
    result = promtool("test", "rules", str(folder / "rules.test.yaml"))
    assert result.returncode == 0, failures(result.stdout + result.stderr)


def test_a_custom_gate_whose_query_needs_no_input_warns_and_its_tests_still_pass(tmp_path):
    """`... or vector(0)` records a value even without series: the tests cannot feed it, and say so."""
    text = (
        (ROOT / "tests" / "validate" / "good" / "minimal.yaml")
        .read_text()
        .replace(
            'gates: {error_rate: "< 1%"}',
            'gates: {error_rate: "< 1%", custom: {queue: {query: '
            '"sum(queue_depth{version=\\"$version\\"}) or vector(0)", max: 10}}}',
        )
    )
    spec = tmp_path / "queue.yaml"
    spec.write_text(text)
    result = pipeline.analyse([spec])
    assert [d.severity for d in result.diagnostics] == ["warning"]
    assert "custom gate queue yields a value with no input series" in result.diagnostics[0].message
    out = tmp_path / "out"
    write_tree(out, compile_files(spec))
    proc = subprocess.run([tool("promtool"), "test", "rules", str(out / "shop/web/prometheus/rules.test.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


#: A natural custom gate per metrics source: a query over the source's own series (the counter and the
#: histogram its recording rules read), which the tests of the built-in gates feed.
OWN_SERIES = {
    "generic": ("gateway-api", "http_requests_total", "http_request_duration_seconds_bucket"),
    "ingress-nginx": ("ingress-nginx", "nginx_ingress_controller_requests",
                      "nginx_ingress_controller_request_duration_seconds_bucket"),
    "istio": ("istio", "istio_requests_total", "istio_request_duration_milliseconds_bucket"),
    "haproxy": ("gateway-api", "haproxy_backend_http_requests_total", None),
}


def custom_gates_spec(tmp_path: Path, source: str, gates: dict[str, dict]) -> Path:
    target, _, _ = OWN_SERIES[source]
    stage = {"name": "canary", "weight": "5%", "hold": "1h", "gates": {"error_rate": "< 1%", "custom": gates}}
    gateway = ", gateway: {name: public}" if target == "gateway-api" else ""
    return spec(tmp_path, ("traffic: {targets: [gateway-api], gateway: {name: public}}",
                           f"traffic: {{targets: [{target}]{gateway}}}\nmetrics: {{source: {source}}}"),
                ('- {name: canary, weight: 5%, hold: 1h, gates: {error_rate: "< 1%"}}',
                 "- " + json.dumps(stage)))


@pytest.mark.parametrize("source", sorted(OWN_SERIES))
def test_a_custom_gate_over_the_sources_own_series_is_tested(tmp_path, source):
    """A success rate or a p90 over the series the source's rules read: the tests feed what those rules record
    (promtool would otherwise compute the gate's value beside the one fed), and prove the gate's breach."""
    _, counter, histogram = OWN_SERIES[source]
    gates = {"volume": {"query": f'sum(rate({counter}{{namespace="$namespace"}}[$window]))', "min": 0.5}}
    if histogram:
        gates["p90"] = {"query": f"histogram_quantile(0.9, sum by (le) (rate({histogram}[$window])))", "max": 0.3}
    path = custom_gates_spec(tmp_path, source, gates)
    assert [d.text() for d in pipeline.analyse([path]).diagnostics if d.severity == "error"] == []
    plan = plan_of(path)
    folder = write(tmp_path / "out", prometheus.render(plan))
    test = yaml.safe_load((folder / "rules.test.yaml").read_text())
    fed = {s["series"].split("{")[0] for t in test["tests"] for s in t["input_series"]}
    assert counter not in fed and histogram not in fed
    breached = {t["name"].split(":")[0] for t in test["tests"]}
    assert {f"Web{alerts.camel(g)}Breached" for g in gates} <= breached, breached
    result = promtool("test", "rules", str(folder / "rules.test.yaml"))
    assert result.returncode == 0, failures(result.stdout + result.stderr)


@pytest.mark.parametrize("query", ['sum(rollout_variant:requests:rate5m{variant="canary"})',
                                   'count(ALERTS{rollout="web"})', 'sum(rate({__name__=~"http_.+"}[$window]))'])
def test_a_custom_gate_over_computed_series_warns_and_its_tests_still_pass(tmp_path, query):
    """A query over recorded series or alerts gets its value from the rules under test: it cannot be fed."""
    path = custom_gates_spec(tmp_path, "generic", {"derived": {"query": query, "max": 5}})
    warnings = [d.message for d in pipeline.analyse([path]).diagnostics]
    assert any("custom gate derived reads series a rule file computes" in w for w in warnings), warnings
    folder = write(tmp_path / "out", prometheus.render(plan_of(path)))
    assert "WebDerivedBreached" not in (folder / "rules.test.yaml").read_text()
    result = promtool("test", "rules", str(folder / "rules.test.yaml"))
    assert result.returncode == 0, failures(result.stdout + result.stderr)
