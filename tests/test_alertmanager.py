"""Alertmanager: amtool accepts the configurations, alerts reach exactly the receivers the
spec names, and a rollback silences the same rollout's warnings in a running Alertmanager."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from compiler import pipeline
from compiler.targets.observability import alertmanager
from compiler.pipeline import fleet_entry
from conftest import ALL_SPECS, GOLDEN, SPECS, free_port, plan_of, plans_of, tool
from test_prometheus import spec

ALERTING = """alerting:
  receivers:
    pager: {pagerduty: {routing_key_file: /etc/alertmanager/secrets/pd}}
    mail: {email: {to: web@example.com}}
    relay: {email: {to: web@example.com, from: alerts@example.com, smarthost: "smtp.example.com:587",
                    auth_username: alerts, auth_password_file: /etc/alertmanager/secrets/smtp}}
    hook: {webhook: {url: "http://bot.ops.svc:8080/rollback"}}
  routes: {critical: [pager, mail], warning: [mail], info: [], rollback: [hook, pager]}
current: canary"""


def entries(plans):
    return [fleet_entry(p, {}) for p in plans]


def write(folder: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    return folder / "alertmanager"


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("amtool"), *args], capture_output=True, text=True, timeout=60)


def run_cases(folder: Path) -> list[str]:
    """Run every line of routes.test.txt; the failing lines."""
    failed = []
    lines = [
        line for line in (folder / "routes.test.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        result = amtool("config", "routes", "test", f"--config.file={folder / 'alertmanager.yaml'}", *shlex.split(line))
        if result.returncode != 0:
            failed.append(f"{line}: {result.stdout.strip()} {result.stderr.strip()}")
    return failed


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    files = alertmanager.render_fleet(entries(plans_of(*ALL_SPECS)), {})
    return write(tmp_path_factory.mktemp("fleet"), files)


def test_amtool_accepts_the_fleet_configuration_which_grows_with_receiver_sets_not_rollouts(fleet):
    result = amtool("check-config", str(fleet / "alertmanager.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((fleet / "alertmanager.yaml").read_text())
    routed = [p for p in plans_of(*ALL_SPECS) if p.alerting is not None]
    keys = {p.alerting.key for p in routed}
    assert len(keys) < len(routed)  # the golden specs share receiver sets
    assert len(config["route"]["routes"]) == len(keys) and len(config["inhibit_rules"]) == 1


def test_every_webhook_caps_a_message_at_what_serve_takes(fleet):
    from compiler.ops import serve

    config = yaml.safe_load((fleet / "alertmanager.yaml").read_text())
    hooks = [h for r in config["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks and all(h["max_alerts"] == serve.MAX_ALERTS for h in hooks)


def test_every_rollout_alert_reaches_exactly_its_receivers(fleet, tmp_path):
    assert run_cases(fleet) == []
    every = [p for p in plans_of(*ALL_SPECS) if p.alerting is not None]
    (tmp_path / "routes.test.txt").write_text(alertmanager.case_lines(every))
    (tmp_path / "alertmanager.yaml").write_text((fleet / "alertmanager.yaml").read_text())
    assert run_cases(tmp_path) == []  # each rollout's own cases, through the fleet's configuration


def test_cases_say_what_the_spec_says():
    plan = plan_of(GOLDEN / "in-checkout.yaml")
    cases = {(labels["severity"], labels["action"]): receivers for receivers, labels in alertmanager.cases(plan)}
    scoped = lambda *names: [f"{plan.alerting.key}.{n}" for n in names]  # noqa: E731
    assert cases[("critical", "rollback")] == scoped("bot", "oncall", "team", "mail")
    assert cases[("critical", "notify")] == scoped("oncall", "team", "mail")
    assert cases[("warning", "hold")] == scoped("team", "mail")
    assert cases[("info", "notify")] == scoped("team")


def test_each_rollout_configuration_stands_alone(tmp_path):
    for plan in plans_of(*ALL_SPECS):
        files = alertmanager.render(plan)
        if plan.alerting is None:
            assert files == {}
            continue
        folder = write(tmp_path / plan.out, files)
        result = amtool("check-config", str(folder / "alertmanager.yaml"))
        assert result.returncode == 0, result.stdout + result.stderr
    assert run_cases(write(tmp_path / "one", alertmanager.render(plan_of(SPECS / "moe-intelligence.yaml")))) == []


def test_alerts_are_routed_by_their_receiver_set(tmp_path):
    plans = plans_of(SPECS / "ai-orchestra.yaml")
    folder = write(tmp_path, alertmanager.render_fleet(entries(plans), {}))
    assert run_cases(folder) == []
    (key,) = {p.alerting.key for p in plans}  # staging and production notify the same people
    config = yaml.safe_load((folder / "alertmanager.yaml").read_text())
    assert [r["matchers"] for r in config["route"]["routes"]] == [[f'rollout_route="{key}"']]
    # an alert without the routing label (not from these rules) reaches nobody
    result = amtool("config", "routes", "test", f"--config.file={folder / 'alertmanager.yaml'}",
                    "rollout=ai-orchestra", "namespace=production", "severity=critical", "action=rollback")
    assert result.stdout.strip() == alertmanager.UNROUTED


def test_an_external_environment_label_does_not_unroute_a_plain_rollout(fleet):
    key = plan_of(GOLDEN / "in-checkout.yaml").alerting.key
    expected = ",".join(f"{key}.{n}" for n in ("oncall", "team", "mail"))
    result = amtool("config", "routes", "test", f"--config.file={fleet / 'alertmanager.yaml'}",
                    f"--verify.receivers={expected}", f"rollout_route={key}",
                    "rollout=checkout", "namespace=shop", "environment=eu-prod", "severity=critical", "action=notify")
    assert result.returncode == 0, result.stdout + result.stderr


def test_receiver_names_are_unique_and_scoped(fleet):
    config = yaml.safe_load((fleet / "alertmanager.yaml").read_text())
    names = [r["name"] for r in config["receivers"]]
    assert len(names) == len(set(names))
    key = plan_of(SPECS / "ai-orchestra.yaml", "production").alerting.key
    assert f"{key}.pagerduty" in names and all(n == alertmanager.UNROUTED or n.startswith("route-") for n in names)


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, path)
    else:
        yield path, node


def test_secrets_are_only_file_references(fleet):
    config = yaml.safe_load((fleet / "alertmanager.yaml").read_text())
    secret_fields = {"routing_key", "service_key", "api_url", "auth_password", "auth_secret", "url_file"}
    for path, value in _walk(config):
        assert path[-1] not in secret_fields, path
        if path[-1].endswith("_file"):
            assert value.startswith("/etc/alertmanager/secrets/"), (path, value)


def test_email_needs_no_global_settings(tmp_path):
    path = spec(tmp_path, ("current: canary", ALERTING))
    plan = plan_of(path)
    folder = write(tmp_path / "out", alertmanager.render(plan))
    config = yaml.safe_load((folder / "alertmanager.yaml").read_text())
    emails = {r["name"]: r["email_configs"][0] for r in config["receivers"] if "email_configs" in r}
    key = plan.alerting.key
    local, relay = emails[f"{key}.mail"], emails[f"{key}.relay"]
    assert (local["smarthost"], local["from"], local["require_tls"]) == (
        "localhost:25",
        "alertmanager@localhost",
        False,
    )
    assert (relay["smarthost"], relay["require_tls"], relay["auth_password_file"]) == (
        "smtp.example.com:587", True, "/etc/alertmanager/secrets/smtp")
    assert amtool("check-config", str(folder / "alertmanager.yaml")).returncode == 0
    assert run_cases(folder) == []
    # info has no receiver: such alerts stop at the root, which sends nothing
    assert (
        f"--verify.receivers={alertmanager.UNROUTED} rollout=web namespace=shop rollout_route={key} severity=info"
        in (folder / "routes.test.txt").read_text()
    )


def test_webhook_url_file_is_refused_for_alertmanager_0_25(tmp_path):
    path = spec(tmp_path, ("current: canary", ALERTING.replace('url: "http://bot.ops.svc:8080/rollback"',
                                                                "url_file: /etc/alertmanager/secrets/hook")))
    problems = [d.text() for d in pipeline.analyse([path]).diagnostics if d.severity == "error"]
    assert len(problems) == 1 and ":20:22: error: receiver 'hook': Alertmanager 0.25 has no `url_file`" in problems[0]
    # amtool 0.25 agrees: the field does not exist
    config = {"route": {"receiver": "x"}, "receivers": [{"name": "x", "webhook_configs": [{"url_file": "/x"}]}]}
    (tmp_path / "am.yaml").write_text(yaml.safe_dump(config))
    result = amtool("check-config", str(tmp_path / "am.yaml"))
    assert result.returncode != 0 and "url_file" in result.stdout + result.stderr


# --------------------------------------------------------------------------- a running Alertmanager


def _binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        pytest.fail("prometheus-alertmanager is not installed: run `make test`")
    return found


def _api(port: int, path: str, body: object | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"}, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


def test_a_rollback_alert_inhibits_the_warnings_of_its_rollout(tmp_path):
    plans = [plan_of(GOLDEN / "in-checkout.yaml"), plan_of(GOLDEN / "in-ramp.yaml")]
    folder = write(tmp_path, alertmanager.render_fleet(entries(plans), {}))
    port = free_port()
    process = subprocess.Popen(
        [_binary(), f"--config.file={folder / 'alertmanager.yaml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                _api(port, "/api/v2/status")
                break
            except OSError:
                time.sleep(0.1)

        keys = {p.name: p.alerting.key for p in plans}

        def alert(rollout: str, name: str, severity: str, action: str) -> dict:
            return {"labels": {"alertname": name, "rollout": rollout, "namespace": "shop", "stage": "canary",
                               "gate": "error_rate", "severity": severity, "action": action,
                               "rollout_route": keys[rollout]}}

        _api(port, "/api/v2/alerts", [
            alert("checkout", "CheckoutErrorRateBreached", "critical", "rollback"),
            alert("checkout", "CheckoutCanaryStarved", "warning", "hold"),
            alert("cart", "CartCanaryStarved", "warning", "hold"),
        ])
        status: dict[str, dict] = {}
        for _ in range(50):
            alerts = _api(port, "/api/v2/alerts")
            status = {a["labels"]["alertname"]: a["status"] for a in alerts}  # type: ignore[union-attr]
            if status.get("CheckoutCanaryStarved", {}).get("inhibitedBy"):
                break
            time.sleep(0.1)
        assert status["CheckoutCanaryStarved"]["state"] == "suppressed"
        assert status["CheckoutErrorRateBreached"]["state"] == "active"
        assert status["CartCanaryStarved"]["state"] == "active"  # another rollout's warning is not silenced
    finally:
        process.terminate()
        process.wait(timeout=10)


OPERATOR = (
    ALERTING.replace(
        "routing_key_file: /etc/alertmanager/secrets/pd}",
        "routing_key_file: /etc/alertmanager/secrets/pd, routing_key_secret: {name: pd, key: key}}",
    )
    .replace(
        "auth_password_file: /etc/alertmanager/secrets/smtp}",
        "auth_password_file: /etc/alertmanager/secrets/smtp, auth_password_secret: {name: smtp, key: password}}",
    )
    .replace("  routes: {critical:", "  operator: true\n  routes: {critical:")
)


def test_the_operator_gets_one_alertmanagerconfig_per_rollout_in_its_namespace(tmp_path):
    import kubecheck

    plan = plan_of(spec(tmp_path, ("current: canary", OPERATOR)))
    files = alertmanager.render(plan)
    found, problems = kubecheck.check_files(
        {alertmanager.OPERATOR: files[alertmanager.OPERATOR]}, lambda m: plan.namespace
    )
    assert problems == []
    (config,) = [m.doc for m in found]
    assert config["kind"] == "AlertmanagerConfig" and config["metadata"]["namespace"] == plan.namespace
    route = config["spec"]["route"]
    assert route["matchers"] == [  # its own alerts, whatever matcher strategy the Operator runs with
        {"name": "rollout_route", "matchType": "=", "value": plan.alerting.key},
        {"name": "rollout", "matchType": "=", "value": plan.name},
        {"name": "namespace", "matchType": "=", "value": plan.namespace},
    ]
    receivers = {r["name"]: r for r in config["spec"]["receivers"]}
    assert receivers["pager"]["pagerdutyConfigs"][0]["routingKey"] == {"name": "pd", "key": "key"}
    assert receivers["relay"]["emailConfigs"][0]["authPassword"] == {"name": "smtp", "key": "password"}
    assert "routing_key_file" not in files[alertmanager.OPERATOR]


def test_the_operator_needs_a_secret_for_each_secret(tmp_path):
    path = spec(
        tmp_path,
        ("current: canary", ALERTING.replace("  routes: {critical:", "  operator: true\n  routes: {critical:")),
    )
    problems = [d.message for d in pipeline.analyse([path]).diagnostics if d.severity == "error"]
    assert any("receiver 'pager'" in p and "pagerduty.routing_key_secret" in p for p in problems), problems
    assert any("receiver 'relay'" in p and "email.auth_password_secret" in p for p in problems), problems


def test_a_webhook_whose_url_is_only_a_secret_is_a_warning_for_the_plain_files(tmp_path):
    text = OPERATOR.replace('hook: {webhook: {url: "http://bot.ops.svc:8080/rollback"}}',
                            "hook: {webhook: {url_secret: {name: hooks, key: url}}}")
    assert text != OPERATOR
    path = spec(tmp_path, ("current: canary", text))
    found = [d for d in pipeline.analyse([path]).diagnostics if "receiver 'hook'" in d.message]
    assert [d.severity for d in found] == ["warning"] and "sends nothing" in found[0].message, found
