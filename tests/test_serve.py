"""`rollout serve` on a temporary Git repository: alerts in, rollback commits out.

The repository holds copies of tests/golden/in-checkout.yaml (shop/checkout) and
in-ramp.yaml (shop/cart) under specs/ and their compiled generated/; the server runs as
a subprocess on a free port, and last behind a real Alertmanager running the compiled
routes of shop/cart.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compiler import pipeline
from compiler.ops import serve
from compiler.cli import main
from conftest import GIT_IDENTITY, GOLDEN, ROOT, free_port, git, plans_of, tool

def commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(ready, what: str, attempts: int = 150, pause: float = 0.1) -> None:
    for _ in range(attempts):
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(pause)
    pytest.fail(f"timed out waiting for {what}")


def alert(rollout: str, name: str, severity: str = "critical", action: str = "rollback", status: str = "firing",
          gate: str = "error_rate") -> dict:
    labels = {"alertname": name, "rollout": rollout, "namespace": "shop", "stage": "canary", "gate": gate,
              "severity": severity, "action": action}
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"shop/{rollout}: gate {gate} breached at stage canary"},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": "1",
    }


def payload(*alerts: dict) -> bytes:
    """An Alertmanager webhook body (version 4)."""
    return json.dumps({"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
                       "receiver": "shop.checkout.bot", "groupLabels": {}, "commonLabels": {},
                       "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
                       "alerts": list(alerts)}).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / "specs").mkdir()
    shutil.copy(GOLDEN / "in-checkout.yaml", repo / "specs" / "checkout.yaml")
    shutil.copy(GOLDEN / "in-ramp.yaml", repo / "specs" / "cart.yaml")
    compiled = CliRunner().invoke(main, ["compile", str(repo / "specs"), "-o", str(repo / "generated")])
    assert compiled.exit_code == 0, compiled.output
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", "Specs and their compiled files")
    port = free_port()
    log = (repo.parent / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "compiler", "serve", "--specs", "specs", "--output", "generated",
         "--listen", f"127.0.0.1:{port}", "--commit"],
        cwd=repo, stdout=log, stderr=log, env={**os.environ, **GIT_IDENTITY, "PYTHONPATH": str(ROOT)})
    try:
        wait_until(lambda: call(port, "GET", "/healthz")[0] == 200, "rollout serve")
        yield repo, port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_a_firing_rollback_alert_becomes_one_rollback_commit(served):
    repo, port = served
    spec = repo / "specs" / "checkout.yaml"
    before, count = spec.read_text(), commits(repo)

    status, body = call(
        port,
        "POST",
        "/alerts",
        payload(
            alert("checkout", "CheckoutErrorRateBreached"),
            alert("checkout", "CheckoutP99LatencyBreached", gate="p99_latency"),
        ),
    )
    assert (status, body["rolled_back"], body["unchanged"], body["failed"]) == (
        200,
        ["shop/checkout"],
        ["shop/checkout"],
        [],
    )
    changed = [(a, b) for a, b in zip(before.splitlines(), spec.read_text().splitlines()) if a != b]
    assert changed == [("current: canary", "current: rollback  # rolled back: CheckoutErrorRateBreached (error_rate): "
                                           "shop/checkout: gate error_rate breached at stage canary")]
    check = CliRunner().invoke(main, ["check", str(repo / "specs"), "-o", str(repo / "generated")])
    assert check.exit_code == 0, check.output
    assert "**rollback** (all on stable)" in (repo / "generated/shop/checkout/PLAN.md").read_text()
    assert commits(repo) == count + 1
    assert (
        git(repo, "log", "-1", "--format=%s").strip()
        == "rollback shop/checkout: CheckoutErrorRateBreached (error_rate)"
    )
    assert body["alerts"][0]["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "status", "--porcelain") == ""  # the spec and every generated file are in the commit

    # the same alert again (Alertmanager repeats it) and its resolution change nothing
    after = spec.read_text()
    for again in (
        alert("checkout", "CheckoutErrorRateBreached"),
        alert("checkout", "CheckoutErrorRateBreached", status="resolved"),
    ):
        status, body = call(port, "POST", "/alerts", payload(again))
        assert status == 200 and body["rolled_back"] == []
    assert body["ignored"] == 1
    assert spec.read_text() == after and commits(repo) == count + 1


def test_alerts_that_do_not_ask_for_a_rollback_change_nothing(served):
    repo, port = served
    head = git(repo, "rev-parse", "HEAD")
    status, body = call(port, "POST", "/alerts", payload(
        alert("cart", "CartCanaryStarved", severity="warning", action="hold", gate="min_requests"),
        alert("cart", "CartErrorRateBreached", status="resolved"),
        alert("basket", "BasketErrorRateBreached"),  # no such rollout
        "not an alert",
    ))
    assert (status, body["rolled_back"], body["ignored"]) == (200, [], 4)
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""
    assert "current: ramp\n" in (repo / "specs" / "cart.yaml").read_text()


def test_bad_requests_are_refused_and_the_server_keeps_serving(served):
    _, port = served
    assert call(port, "POST", "/alerts", b"{not json")[0] == 400
    assert call(port, "POST", "/alerts", b'{"alerts": {}}')[0] == 400
    assert call(port, "POST", "/alerts", b"\xff\xfe")[0] == 400
    assert call(port, "POST", "/alerts", b"[" * 100000)[0] == 400
    too_long = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # refused before its body is read
    too_long.putrequest("POST", "/alerts")
    too_long.putheader("Content-Length", str(5 << 20))
    too_long.endheaders()
    assert too_long.getresponse().status == 413
    too_long.close()
    assert call(port, "POST", "/elsewhere", b"{}")[0] == 404
    assert call(port, "GET", "/healthz") == (200, {"status": "ok"})


def test_a_real_alertmanager_delivers_the_rollback(served, tmp_path):
    """The compiled routes of shop/cart send its action="rollback" alert to the webhook receiver."""
    repo, port = served
    config = yaml.safe_load((repo / "generated/shop/cart/alertmanager/alertmanager.yaml").read_text())
    hook = f"http://127.0.0.1:{port}/alerts"
    # the webhook points at the server; the other receivers keep their names and deliver nowhere
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{**c, "url": hook} for c in r["webhook_configs"]]}
        if "webhook_configs" in r else {"name": r["name"]}
        for r in config["receivers"]
    ]
    (tmp_path / "alertmanager.yaml").write_text(yaml.safe_dump(config))
    am_port = free_port()
    process = subprocess.Popen(
        [tool("prometheus-alertmanager"), f"--config.file={tmp_path / 'alertmanager.yaml'}",
         f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{am_port}",
         "--cluster.listen-address=", "--log.level=error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: call(am_port, "GET", "/api/v2/status")[0] == 200, "Alertmanager")
        count = commits(repo)
        fired = alert("cart", "CartErrorRateBreached")
        route = config["route"]["routes"][0]["matchers"][0]  # rollout_route="<its receiver set>", as its rules label it
        fired["labels"]["rollout_route"] = route.split("=", 1)[1].strip('"')
        body = json.dumps([{"labels": fired["labels"], "annotations": fired["annotations"]}]).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{am_port}/api/v2/alerts", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        wait_until(lambda: commits(repo) == count + 1, "the rollback commit", attempts=100, pause=0.2)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert git(repo, "log", "-1", "--format=%s").strip() == "rollback shop/cart: CartErrorRateBreached (error_rate)"
    assert (
        "current: rollback  # rolled back: CartErrorRateBreached (error_rate)" in (repo / "specs/cart.yaml").read_text()
    )


def test_alerts_find_their_rollout_by_rollout_namespace_and_environment():
    units = pipeline.analyse([ROOT / "specs" / "ai-orchestra.yaml", GOLDEN / "in-checkout.yaml"]).units

    def found(**labels: str) -> str | None:
        unit = serve.find_unit(units, labels)
        return unit.plan.out if unit else None

    assert (
        found(rollout="ai-orchestra", namespace="production", environment="production")
        == "production/production/ai-orchestra"
    )
    assert found(rollout="ai-orchestra", namespace="staging", environment="staging") == "staging/staging/ai-orchestra"
    assert found(rollout="ai-orchestra", namespace="staging", environment="production") is None
    assert found(rollout="ai-orchestra", namespace="production") is None  # which environment?
    assert found(rollout="checkout", namespace="shop") == "shop/checkout"
    assert found(rollout="checkout", namespace="shop", environment="eu") == "shop/checkout"  # an external label
    assert found(rollout="checkout", namespace="payments") is None


def test_an_environment_alert_rolls_back_that_environment_only(tmp_path):
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "ai-orchestra.yaml"
    shutil.copy(ROOT / "specs" / "ai-orchestra.yaml", spec)
    before = spec.read_text()
    fired = alert("ai-orchestra", "AiOrchestraErrorRateBreached")
    fired["labels"].update(namespace="production", environment="production")
    rollbacks = serve.Rollbacks(tmp_path / "specs", tmp_path / "generated", commit=False)
    (outcome,) = rollbacks.handle(json.loads(payload(fired)))
    assert (outcome.result, outcome.rollout) == ("rolled back", "production/production/ai-orchestra")
    changed = [(a, b) for a, b in zip(before.splitlines(), spec.read_text().splitlines()) if a != b]
    (row,) = changed
    assert row[0] == "  production: {}"
    assert row[1].startswith(
        "  production: {current: rollback}  # rolled back: AiOrchestraErrorRateBreached (error_rate)"
    )
    plans = {p.environment: p for p in plans_of(spec)}
    assert plans["production"].is_rollback and plans["staging"].current.name == "switch"
    assert (
        "**rollback** (all on stable)"
        in (tmp_path / "generated/production/production/ai-orchestra/PLAN.md").read_text()
    )
