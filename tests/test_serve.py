"""`rollout serve` on a temporary Git repository: alerts in, rollback commits out, for the holder of the token.

The repository holds copies of tests/golden/in-checkout.yaml (shop/checkout) and
in-ramp.yaml (shop/cart) under specs/ and their compiled generated/; the server runs as
a subprocess on a free port with a bearer token, and last behind a real Alertmanager running
the compiled routes of shop/cart, which sends the token from a file.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compiler import pipeline
from compiler.ops import repo as repo_ops
from compiler.ops import serve
from compiler.cli import main
from conftest import GIT_IDENTITY, GOLDEN, ROOT, free_port, git, plans_of, tool

TOKEN = "s3rve-t0ken-for-the-tests-0123456789"


def commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def call(port: int, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers)
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


def now() -> str:
    from datetime import datetime, UTC

    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def alert(rollout: str, name: str, severity: str = "critical", action: str = "rollback", status: str = "firing",
          gate: str = "error_rate", stage: str | None = None, starts: str | None = None) -> dict:
    stage = stage or {"cart": "ramp"}.get(rollout, "canary")
    labels = {"alertname": name, "rollout": rollout, "namespace": "shop", "stage": stage, "gate": gate,
              "severity": severity, "action": action}
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"shop/{rollout}: gate {gate} breached at stage canary"},
        "startsAt": starts or now(),
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
    token = repo.parent / "token"
    token.write_text(TOKEN + "\n")
    log = (repo.parent / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "compiler", "serve", "--specs", "specs", "--output", "generated",
         "--listen", f"127.0.0.1:{port}", "--commit", "--token-file", str(token)],
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
        [],  # the second alert found it rolled back: not a rollout left unchanged
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
    too_long.putheader("Authorization", f"Bearer {TOKEN}")
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
    credentials = {"authorization": {"type": "Bearer", "credentials_file": str(repo.parent / "token")}}
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{**c, "url": hook, "http_config": credentials}
                                                for c in r["webhook_configs"]]}
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
    fired = alert("ai-orchestra", "AiOrchestraErrorRateBreached", stage="preview")
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


# --------------------------------------------------------------------------- who may ask, and when


def test_a_request_without_the_token_is_refused_and_changes_nothing(served):
    repo, port = served
    head, spec = git(repo, "rev-parse", "HEAD"), (repo / "specs" / "cart.yaml").read_text()
    for token in (None, "wrong-token-0123456789abcdef", TOKEN[:-1]):
        status, body = call(port, "POST", "/alerts", payload(alert("cart", "CartErrorRateBreached")), token=token)
        assert status == 401 and "token" in body["error"]
    assert git(repo, "rev-parse", "HEAD") == head and (repo / "specs" / "cart.yaml").read_text() == spec
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'rollout_serve_refused_total{reason="token"} 3' in metrics
    assert 'rollout_serve_requests_total{code="401"} 3' in metrics


def test_serve_will_not_start_without_a_token_except_on_loopback(tmp_path):
    (tmp_path / "specs").mkdir()
    for args, words in ((["--listen", "0.0.0.0:9095"], "give --token-file"),
                        (["--listen", "0.0.0.0:9095", "--no-token"], "loopback address only")):
        done = subprocess.run([sys.executable, "-m", "compiler", "serve", "--specs", str(tmp_path / "specs"),
                               "-o", str(tmp_path / "out"), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and words in done.stderr, done.stderr


def _repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    shutil.copy(GOLDEN / "in-checkout.yaml", repo / "specs" / "checkout.yaml")
    shutil.copy(GOLDEN / "in-ramp.yaml", repo / "specs" / "cart.yaml")
    assert CliRunner().invoke(main, ["compile", str(repo / "specs"), "-o", str(repo / "generated")]).exit_code == 0
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", "fleet")
    return repo


def _with_remote(tmp_path: Path, repo: Path) -> tuple[Path, Path]:
    """A bare remote the repository pushes to, and another clone of it (someone else's checkout)."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "--quiet", "-u", "origin", "main")
    other = tmp_path / "other"
    git(tmp_path, "clone", "--quiet", str(remote), str(other))
    return remote, other


def test_a_replayed_alert_after_a_resume_changes_nothing_but_a_new_breach_rolls_back(tmp_path, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    old = alert("checkout", "CheckoutErrorRateBreached", starts=now())
    (first,) = rollbacks.handle(json.loads(payload(old)))
    assert first.result == "rolled back"
    time.sleep(1.1)  # commit times have one-second resolution
    resumed = CliRunner().invoke(main, ["set-stage", str(repo / "specs/checkout.yaml"), "canary"])
    assert resumed.exit_code == 0, resumed.output
    assert CliRunner().invoke(main, ["compile", str(repo / "specs"), "-o", str(repo / "generated")]).exit_code == 0
    git(repo, "commit", "--quiet", "-am", "resume checkout at canary")
    count = commits(repo)
    stale_start = "2024-05-01T10:00:00.123456789Z"
    (replay,) = rollbacks.handle(json.loads(payload(alert("checkout", "CheckoutErrorRateBreached",
                                                           starts=stale_start))))
    (stale,) = rollbacks.handle(json.loads(payload(alert("checkout", "CheckoutErrorRateBreached", stage="ramp"))))
    assert (replay.result, stale.result) == ("replay", "stale") and commits(repo) == count
    (again,) = rollbacks.handle(json.loads(payload(alert("checkout", "CheckoutErrorRateBreached", starts=now()))))
    assert again.result == "rolled back" and commits(repo) == count + 1


def test_a_broken_spec_elsewhere_never_blocks_a_rollback(tmp_path, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    broken = repo / "specs" / "broken.yaml"
    broken.write_text((GOLDEN / "in-ramp.yaml").read_text().replace("name: cart", "name: basket")
                      .replace("weight: 10%", "weight: 120%"))
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", "a broken spec")
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))
    assert outcome.result == "rolled back", outcome.detail
    changed = git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert "specs/cart.yaml" in changed and all(p == "specs/cart.yaml" or p.startswith("generated/shop/cart/")
                                                 for p in changed), changed
    assert git(repo, "status", "--porcelain") == ""


def test_a_rollback_is_pushed_and_retried_when_the_remote_moved(tmp_path, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    remote, other = _with_remote(tmp_path, repo)
    (other / "NOTES.md").write_text("someone else's change\n")
    git(other, "add", "NOTES.md")
    git(other, "commit", "--quiet", "-m", "meanwhile")
    git(other, "push", "--quiet")
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True, push=True)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))
    assert outcome.result == "rolled back" and "pushed" in outcome.detail, outcome.detail
    log = git(remote, "log", "--format=%s", "main").splitlines()
    assert log[0] == "rollback shop/cart: CartErrorRateBreached (error_rate)" and "meanwhile" in log


def test_a_pull_that_conflicts_is_undone_and_reported_never_left_half_rebased(tmp_path, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    remote, other = _with_remote(tmp_path, repo)
    for where, stage in ((other, "shadow"), (repo, "full")):  # the same line changed both ways
        spec = where / "specs" / "checkout.yaml"
        spec.write_text(spec.read_text().replace("current: canary", f"current: {stage}"))
        git(where, "commit", "--quiet", "-am", f"checkout at {stage}")
    git(other, "push", "--quiet")
    head = git(repo, "rev-parse", "HEAD")
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True, push=True)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))
    assert outcome.result == "failed" and "undone" in outcome.detail, outcome.detail
    git_dir = Path(git(repo, "rev-parse", "--absolute-git-dir"))
    assert not (git_dir / "rebase-merge").exists() and not (git_dir / "rebase-apply").exists()
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""


def test_a_burst_of_requests_gets_answers_and_label_values_cannot_forge_log_lines(served):
    repo, port = served
    import concurrent.futures

    forged = alert("nothing", "Fake\n2030-01-01T00:00:00Z rollout serve: rolled back: shop/cart")
    body = payload(forged)
    with concurrent.futures.ThreadPoolExecutor(max_workers=60) as pool:
        answers = list(pool.map(lambda _: call(port, "POST", "/alerts", body)[0], range(60)))
    assert answers == [200] * 60
    log = (repo.parent / "serve.log").read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    assert all(line.startswith("{") and json.loads(line) for line in lines)
    assert not any(line.startswith("2030-01-01") for line in lines)



def test_a_rollback_waits_for_the_repository_lock_another_command_holds(tmp_path, monkeypatch):
    """`advance` (or a second `serve`) holding the repository's lock: the rollback waits, commits nothing
    meanwhile, and is committed alone once the lock is free."""
    import threading

    from compiler.ops import repo as repository

    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    before = commits(repo)
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    done: list[serve.Outcome] = []
    waiting = threading.Thread(target=lambda: done.extend(
        rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))))
    with repository.lock_for(repo / "specs" / "cart.yaml", True, 10.0):
        waiting.start()
        waiting.join(1.5)
        assert waiting.is_alive() and commits(repo) == before
        assert "current: ramp" in (repo / "specs/cart.yaml").read_text()
    waiting.join(60)
    assert [o.result for o in done] == ["rolled back"] and commits(repo) == before + 1
    assert git(repo, "status", "--porcelain") == ""


KILLED = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[2])
import test_serve as ts
from compiler.ops import repo, serve
from pathlib import Path
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
{patch}
top = Path(sys.argv[1])
serve.Rollbacks(top / 'specs', top / 'generated', commit=True).handle(
    json.loads(ts.payload(ts.alert('cart', 'CartErrorRateBreached'))))
"""
#: Killed with the spec edited and compiled, nothing committed.
BEFORE_COMMIT = """
real = repo.build.build
def build_then_die(*args, **kwargs):
    real(*args, **kwargs)
    die()
repo.build.build = build_then_die
"""
#: Killed with HEAD moved to the rollback, the index not yet brought to it.
AFTER_COMMIT = "repo._index_takes = die"


def _killed_rollback(repo: Path, patch: str) -> None:
    """A rollback of shop/cart in another process, killed where ``patch`` says."""
    killed = subprocess.run([sys.executable, "-c", KILLED.format(patch=patch), str(repo), str(Path(__file__).parent)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr


def test_a_rollback_killed_before_its_commit_is_undone_and_done_by_the_next_request(tmp_path, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    before = commits(repo)
    _killed_rollback(repo, BEFORE_COMMIT)
    assert git(repo, "status", "--porcelain") != "" and commits(repo) == before  # half made: edited, uncommitted
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))
    assert outcome.result == "rolled back", outcome.detail
    assert commits(repo) == before + 1 and git(repo, "status", "--porcelain") == ""
    assert "current: rollback" in git(repo, "show", "HEAD:specs/cart.yaml")
    check = subprocess.run([sys.executable, "-m", "compiler", "check", "specs", "-o", "generated"], cwd=repo,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_rollback_killed_after_its_commit_stays_committed_and_the_index_takes_it(tmp_path, monkeypatch):
    """Between HEAD moving and the index taking the commit, the index still holds the old files: the recovery
    must not read them as an uncommitted change and undo the rollback (a person's next commit would revert it)."""
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    before = commits(repo)
    _killed_rollback(repo, AFTER_COMMIT)
    assert commits(repo) == before + 1 and git(repo, "diff", "--cached", "--name-only") != ""  # the stale index
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))
    assert outcome.result == "already rolled back", outcome.detail
    assert commits(repo) == before + 1 and git(repo, "status", "--porcelain") == ""
    assert "current: rollback" in (repo / "specs" / "cart.yaml").read_text()
    assert not list((repo / "specs").glob(".*"))


def test_serve_makes_a_killed_change_whole_when_it_starts(tmp_path, monkeypatch):
    """Not at the first request only: a person's commit before any alert came would take the stale index along
    and revert the rollback."""
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    _killed_rollback(repo, AFTER_COMMIT)
    assert git(repo, "diff", "--cached", "--name-only") != ""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "compiler", "serve", "--specs", "specs", "--output", "generated",
         "--listen", f"127.0.0.1:{port}", "--commit", "--no-token"],
        cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **GIT_IDENTITY, "PYTHONPATH": str(ROOT)})
    try:
        wait_until(lambda: call(port, "GET", "/healthz")[0] == 200, "rollout serve")
        assert git(repo, "status", "--porcelain") == ""
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_spec_written_by_someone_else_before_the_commit_commits_nothing(tmp_path, monkeypatch):
    """A person's `git checkout -- specs` in serve's clone between the compile and the commit: the compiled
    rollback files are not committed without the spec (the next compile would revert them)."""
    repo, rollbacks = _rollbacks(tmp_path, monkeypatch)
    spec = repo / "specs" / "cart.yaml"
    original = spec.read_bytes()
    real = repo_ops.build.build

    def build_then_checkout(*args, **kwargs):
        report = real(*args, **kwargs)
        if b"current: rollback" in spec.read_bytes():
            spec.write_bytes(original)  # the person's checkout, which takes no lock
        return report

    monkeypatch.setattr(repo_ops.build, "build", build_then_checkout)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))
    monkeypatch.setattr(repo_ops.build, "build", real)
    assert outcome.result == "failed" and "changed on disk while its change was committed" in outcome.detail
    assert commits(repo) == 1 and git(repo, "status", "--porcelain") == ""
    (again,) = rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))  # Alertmanager's retry
    assert again.result == "rolled back" and commits(repo) == 2


def test_a_killed_edit_s_temporary_files_are_removed_by_the_next_edit_of_that_spec(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(GOLDEN / "in-ramp.yaml", specs / "cart.yaml")
    shutil.copy(GOLDEN / "in-ramp.yaml", specs / "cart.yaml.b.yaml")
    leftovers = [specs / ".cart.yaml.ab3_x9zq.tmp.yaml", specs / ".cart.yaml.restore"]
    someone_else = [specs / ".cart.yaml.b.yaml.ab3_x9zq.tmp.yaml", specs / ".cart.yaml.notes"]
    for path in leftovers + someone_else:
        path.write_text("x")
    result = CliRunner().invoke(main, ["promote", str(specs / "cart.yaml")])
    assert result.exit_code == 0, result.output
    assert [p.exists() for p in leftovers] == [False, False] and all(p.exists() for p in someone_else)


def _rollbacks(tmp_path: Path, monkeypatch) -> tuple[Path, serve.Rollbacks]:
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    return repo, serve.Rollbacks(repo / "specs", repo / "generated", commit=True)


def test_labels_that_name_no_rollout_never_spoil_the_other_alerts_of_a_request(tmp_path, monkeypatch):
    """A NUL, a path or a newline in a label is ignored where it is; the good alert beside it rolls back."""
    repo, rollbacks = _rollbacks(tmp_path, monkeypatch)
    bad = [alert("x\u0000", "A"), alert("../../etc", "B"), alert("cart\nx", "C"),
           {**alert("cart", "D"), "labels": {**alert("cart", "D")["labels"], "namespace": "shop/../shop"}}]
    outcomes = rollbacks.handle(json.loads(payload(*bad, alert("cart", "CartErrorRateBreached"))))
    assert [o.result for o in outcomes] == ["ignored"] * 4 + ["rolled back"], outcomes
    assert all("names no rollout" in o.detail for o in outcomes[:4])
    assert commits(repo) == 2


@pytest.mark.parametrize("change, says", [
    (lambda a: a["labels"].pop("stage"), "has no `stage` label"),
    (lambda a: a.update(startsAt="garbage"), "is not an RFC 3339 time"),
    (lambda a: a.pop("startsAt"), "is not an RFC 3339 time"),
])
def test_an_alert_without_its_stage_or_start_changes_nothing(tmp_path, monkeypatch, change, says):
    repo, rollbacks = _rollbacks(tmp_path, monkeypatch)
    sent = alert("cart", "CartErrorRateBreached")
    change(sent)
    (outcome,) = rollbacks.handle(json.loads(payload(sent)))
    assert outcome.result == "ignored" and says in outcome.detail, outcome
    assert commits(repo) == 1


def test_a_symlink_loop_among_the_specs_never_blocks_a_rollback(tmp_path, monkeypatch):
    repo, rollbacks = _rollbacks(tmp_path, monkeypatch)
    (repo / "specs" / "loop.yaml").symlink_to(repo / "specs" / "loop.yaml")
    shutil.rmtree(repo / "generated" / "shop" / "cart")  # no manifest: every spec is read to find the rollout
    outcomes = rollbacks.handle(json.loads(payload(alert("nobody", "X"), alert("cart", "CartErrorRateBreached"))))
    assert [o.result for o in outcomes] == ["ignored", "rolled back"], outcomes
    assert all("loop.yaml" in o.detail for o in outcomes)  # reported, left alone


def test_a_rollback_another_server_made_meanwhile_is_not_counted_twice(tmp_path, monkeypatch):
    """Two servers on one repository get the same alert: the one that waited for the lock finds it done."""
    import contextlib

    repo, rollbacks = _rollbacks(tmp_path, monkeypatch)
    other = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    real = serve.repo.lock_for
    raced: list[serve.Outcome] = []

    @contextlib.contextmanager
    def lock_won_by_the_other(spec, commit, timeout):
        if not raced and spec.name == "cart.yaml":  # the rollback's lock: the other server takes it first
            monkeypatch.setattr(serve.repo, "lock_for", real)
            raced.extend(other.handle(json.loads(payload(alert("cart", "CartErrorRateBreached")))))
        with real(spec, commit, timeout):
            yield

    monkeypatch.setattr(serve.repo, "lock_for", lock_won_by_the_other)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))
    assert [o.result for o in raced] == ["rolled back"]
    assert outcome.result == "already rolled back", outcome
    assert commits(repo) == 2


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """A server in this process (its limits patched by the test before it starts)."""
    import contextlib
    import threading

    @contextlib.contextmanager
    def start():
        rollbacks = serve.Rollbacks(tmp_path, tmp_path / "out", commit=False)
        server = serve.Server(("127.0.0.1", 0), rollbacks, TOKEN.encode())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()

    return start


def _closed_within(sock, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_a_client_that_sends_a_byte_at_a_time_is_cut_off_at_the_request_deadline(in_process, monkeypatch):
    """Headers are bounded more tightly than the request (a client without a token cannot hold a slot long), and
    a client cut off is counted as a timeout, not as a request without a token."""
    import socket
    import threading

    monkeypatch.setattr(serve, "HEADER_DEADLINE", 1.0)
    monkeypatch.setattr(serve, "REQUEST_DEADLINE", 30.0)
    with in_process() as port:
        sock = socket.create_connection(("127.0.0.1", port))
        stop = threading.Event()

        def trickle() -> None:
            sock.sendall(b"POST /alerts HTTP/1.1\r\n")
            while not stop.is_set():
                try:
                    sock.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.2)

        threading.Thread(target=trickle, daemon=True).start()
        started = time.monotonic()
        try:
            assert _closed_within(sock, 10)
            assert time.monotonic() - started < 5  # READ_TIMEOUT (30s per read) would never end it
            assert call(port, "GET", "/healthz")[0] == 200
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/metrics")
            metrics = conn.getresponse().read().decode()
            conn.close()
            assert 'rollout_serve_refused_total{reason="timeout"} 1' in metrics, metrics
            assert 'code="401"' not in metrics and 'reason="token"' not in metrics
        finally:
            stop.set()
            sock.close()


def _healthz(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def test_connections_beyond_the_cap_get_503_and_no_thread(in_process, monkeypatch):
    import socket

    monkeypatch.setattr(serve, "MAX_CONNECTIONS", 2)
    with in_process() as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.3)
        try:
            with socket.create_connection(("127.0.0.1", port)) as extra:
                extra.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
                extra.settimeout(5)
                assert extra.recv(100).startswith(b"HTTP/1.1 503")
            with socket.create_connection(("127.0.0.1", port)) as silent:  # no request line: busy after a second
                silent.settimeout(5)
                assert silent.recv(100).startswith(b"HTTP/1.1 503")
            assert _healthz(port) == 200  # alive, only busy: a liveness probe must not restart it mid-burst
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: _healthz(port) == 200, "a free slot")  # the held connections' threads end


def test_a_client_refused_as_busy_while_it_sends_a_body_reads_its_503_not_a_reset(in_process, monkeypatch):
    """The refusal reads what the client still sends before closing: closing on unread data resets the
    connection, and a client sending a large body may then never read the answer."""
    monkeypatch.setattr(serve, "MAX_CONNECTIONS", 1)
    with in_process() as port:
        import socket

        held = socket.create_connection(("127.0.0.1", port))
        time.sleep(0.3)
        try:
            statuses = []
            for _ in range(5):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    conn.request("POST", "/alerts", body=b"x" * (256 << 10),
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
                    statuses.append(conn.getresponse().status)
                except (ConnectionResetError, BrokenPipeError) as exc:
                    statuses.append(type(exc).__name__)
                finally:
                    conn.close()
            assert statuses == [503] * 5
        finally:
            held.close()


def test_a_body_too_large_gets_its_413_not_a_reset(in_process):
    with in_process() as port:
        for token in (TOKEN, "wrong"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/alerts", body=b"x" * (serve.MAX_BODY + 1),
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            assert conn.getresponse().status == (413 if token == TOKEN else 401)
            conn.close()


def test_a_rollback_commits_its_files_alone_and_leaves_what_a_person_staged(tmp_path, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    (repo / "NOTES.md").write_text("a person's notes\n")
    git(repo, "add", "NOTES.md")
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    real = repo_ops.git
    moved: list[str] = []

    def meanwhile(cwd: Path, *args: str, **kwargs: object) -> str:
        if args[:1] == ("update-ref",) and not moved:  # a person commits between serve's commit and its ref
            (repo / "OTHER.md").write_text("committed meanwhile\n")
            real(repo, "add", "OTHER.md")
            real(repo, "commit", "--quiet", "-m", "a person's commit", "--", "OTHER.md")
            moved.append(real(repo, "rev-parse", "HEAD"))
        return real(cwd, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(repo_ops, "git", meanwhile)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("checkout", "CheckoutErrorRateBreached"))))
    monkeypatch.setattr(repo_ops, "git", real)
    assert outcome.result == "rolled back", outcome.detail
    assert git(repo, "rev-parse", "HEAD^").strip() == moved[0]  # built on the person's commit, not over it
    committed = git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert "NOTES.md" not in committed and "specs/checkout.yaml" in committed
    assert git(repo, "diff", "--cached", "--name-only").split() == ["NOTES.md"]  # still staged
    assert git(repo, "status", "--porcelain").splitlines() == ["A  NOTES.md"]  # nothing else differs from HEAD


def test_a_spec_with_uncommitted_changes_is_not_rolled_back_from_under_its_author(tmp_path, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    spec = repo / "specs" / "checkout.yaml"
    spec.write_text(spec.read_text().replace("owner: payments", "owner: payments-team"))
    count = commits(repo)
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    (outcome,) = rollbacks.handle(json.loads(payload(alert("checkout", "CheckoutErrorRateBreached"))))
    assert outcome.result == "failed" and "uncommitted changes" in outcome.detail  # a 500: Alertmanager retries
    assert commits(repo) == count and "current: canary" in spec.read_text()


def test_one_request_repeating_a_rollout_reads_its_history_once(tmp_path, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    rollbacks = serve.Rollbacks(repo / "specs", repo / "generated", commit=True)
    calls: list[str] = []
    real = repo_ops.stage_since

    def counted(*args: object, **kwargs: object) -> float | None:
        calls.append("stage_since")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(repo_ops, "stage_since", counted)
    old = [alert("checkout", f"Breach{i}", starts="2024-05-01T10:00:00Z") for i in range(300)]
    outcomes = rollbacks.handle(json.loads(payload(*old)))
    assert {o.result for o in outcomes} == {"replay"} and len(calls) == 1


def test_a_request_of_more_alerts_than_a_webhook_should_send_is_refused_whole():
    with pytest.raises(serve.PayloadError, match="generates set `max_alerts: 1000`"):
        serve.alerts_of({"alerts": [{}] * (serve.MAX_ALERTS + 1)})
    assert len(serve.alerts_of({"alerts": [{}] * serve.MAX_ALERTS})) == serve.MAX_ALERTS


@pytest.mark.parametrize("name, summary, kept", [
    ("CartErrorRateBreached", "error rate 5% at ramp", "CartErrorRateBreached (error_rate): error rate 5% at ramp"),
    ("CartErrorRateBreached", "password=hunter2hunter2 token ghp_" + "a" * 36,
     "CartErrorRateBreached (error_rate): (its summary is left out: it seems to hold a secret)"),
    ("token=AKIA" + "B" * 16, "", "a rollback alert (its name is left out: it seems to hold a secret)"),
])
def test_the_words_of_a_rollback_commit_never_carry_an_alert_s_secret(name, summary, kept):
    reason, subject = serve._committed_words("shop/cart", name, "error_rate", summary)
    assert reason == kept and subject.startswith("rollback shop/cart: ")
    assert "AKIA" not in reason + subject and "ghp_" not in reason + subject


def test_a_stopping_server_begins_no_request(tmp_path, monkeypatch):
    """After SIGTERM, a request still waiting for the lock changes nothing (its sender gets a 503 and retries)."""
    repo, rollbacks = _rollbacks(tmp_path, monkeypatch)
    rollbacks.stopping.set()
    with pytest.raises(serve.Stopping):
        rollbacks.handle(json.loads(payload(alert("cart", "CartErrorRateBreached"))))
    assert commits(repo) == 1 and "current: ramp" in (repo / "specs/cart.yaml").read_text()


def test_sigterm_answers_the_request_under_way_then_stops(tmp_path, monkeypatch):
    """A rollback under way when SIGTERM comes is committed and answered; the server stops after it."""
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    repo = _repository(tmp_path)
    port, token = free_port(), tmp_path / "token"
    token.write_text(TOKEN + "\n")
    log = tmp_path / "serve.log"
    slow = ("import sys, time; sys.argv[0] = 'rollout'\n"
            "from compiler.ops import repo\n"
            "real = repo.commit_files\n"
            "def slow(*a, **k):\n    time.sleep(1.5)\n    return real(*a, **k)\n"
            "repo.commit_files = slow\n"
            "from compiler.cli import run\nsys.exit(run())\n")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", slow, "serve", "--specs", "specs", "--output", "generated",
             "--listen", f"127.0.0.1:{port}", "--commit", "--token-file", str(token)],
            cwd=repo, stdout=out, stderr=out, env={**os.environ, **GIT_IDENTITY, "PYTHONPATH": str(ROOT)})
        try:
            wait_until(lambda: call(port, "GET", "/healthz")[0] == 200, "rollout serve")
            answer: list = []
            sender = threading.Thread(target=lambda: answer.append(
                call(port, "POST", "/alerts", payload(alert("cart", "CartErrorRateBreached")))))
            sender.start()
            time.sleep(0.7)  # the rollback is under way (its commit waits 1.5 s)
            process.send_signal(signal.SIGTERM)
            sender.join(timeout=30)
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()
    status, body = answer[0]
    assert status == 200 and body["rolled_back"] == ["shop/cart"], body
    assert commits(repo) == 2 and git(repo, "status", "--porcelain") == ""
    assert '"every request answered"' in log.read_text()
