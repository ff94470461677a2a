"""Live routing: the generated HAProxy and nginx configurations, started on 127.0.0.1 in front of tiny
backends that name themselves, realise the stage's canary share, keep every sticky key on its variant
(also as the stage advances), send testers to the canary, skip servers that are down, mirror shadow
traffic (nginx), and send everything to stable once rolled back.

Sample sizes, from the binomial distribution.  With the stage's share p, the n distinct keys of a
measurement put X ~ Binomial(n, p) of them on the canary (the router's hash spreads fixed keys like
independent draws).  A measurement passes when X lies in the exact 99.9% acceptance interval of
Binomial(n, p): each tail outside it holds at most 0.05%.  n is picked with the normal
approximation so that the interval is about p * (1 +/- r):

    n = z^2 * (1 - p) / (p * r^2),   z = 3.29 (two-sided 99.9%)

    p = 50%    r = 10%   n = 1083    interval [487, 596]  = 45.0% .. 55.0%
    p = 10%    r = 25%   n = 1560    interval [118, 196]  = 7.6% .. 12.6%
    p = 1%     r = 50%   n = 4288    interval [23, 66]    = 0.54% .. 1.54%
    p = 0.1%   r = 80%   n = 16902   interval [5, 32]     = 0.030% .. 0.19%

Each interval excludes the neighbouring wrong answers: 0.1% excludes 0 and 0.39% (1/256, the
smallest share two integer server weights give), 1% excludes 0.5% and 2%, 10% excludes 5% and 15%.
On top of the statistics, every key's variant is compared with the hash the router applies (xxh32
mod N for HAProxy, MurmurHash2 for nginx), computed independently in tests/routers.py: the split is
exact, not only plausible.  Requests are pipelined on keep-alive connections (about 5000/s here);
every loop is bounded by its request list and a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from collections.abc import Callable, Iterator

import pytest

from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets.routers import haproxy
from compiler.targets.routers import nginx
from conftest import free_port, plan_of, tool
from routers import (Backend, Backends, Client, Response, Router, acceptance_interval, admin_command, murmur2,
                     sample_size, wait_until, write_nginx, xxh32)

# (stage, share, n): n from the relative precision r of each share, as in the table above
STAGES = [
    (stage, share, sample_size(share, r))
    for stage, share, r in (("tiny", 0.001, 0.8), ("canary", 0.01, 0.5), ("ramp", 0.10, 0.25), ("half", 0.50, 0.1))
]
HALF_N = sample_size(0.5, 0.1)
TESTER_VALUES = ["internal-testing", "beta-users"]

SPEC = """\
apiVersion: rollout-compiler/v1
kind: Rollout
metadata: {{name: live, namespace: routing, owner: routing-tests}}
service:
  host: live.example.com
  port: {port}
  stable:
    version: v1
    backend: live-stable
    servers: ["127.0.0.1:{stable_1}", "127.0.0.1:{stable_2}", {{address: "127.0.0.1:{stable_backup}", backup: true}}]
  canary: {{version: v2, backend: live-canary, servers: ["127.0.0.1:{canary_1}"]}}
  health: {{path: /health, interval: {interval}s, fall: 1, rise: 1}}
traffic:
  targets: [haproxy, nginx]
  sticky: {{header: X-User-ID}}
  testers: {{header: X-Canary, values: [{testers}]}}
stages:
  - {{name: shadow, mirror: 50%, hold: 1h}}
  - {{name: tiny, weight: 0.1%, hold: 1h}}
  - {{name: canary, weight: 1%, hold: 1h}}
  - {{name: ramp, weight: 10%, hold: 1h}}
  - {{name: half, weight: 50%, hold: 1h}}
  - {{name: full, weight: 100%}}
current: tiny
"""


def variant_of(response: Response) -> str:
    assert response.status == 200, response
    return "canary" if response.served_by.startswith("canary") else "stable"


def keyed(keys: list[str]) -> list[dict[str, str]]:
    return [{"X-User-ID": key} for key in keys]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    servers = Backends(
        Backend("stable-1"),
        Backend("stable-2", status=503, health_status=503),  # broken: health checks fail, requests fail
        Backend("stable-backup"),
        Backend("canary-1"),
    )
    with servers:
        yield servers


def live_plan(folder: Path, backends: Backends, router: str, interval: int) -> Plan:
    spec = folder / f"live-{router}.yaml"
    spec.write_text(SPEC.format(
        port=free_port(), interval=interval, testers=", ".join(TESTER_VALUES),
        **{name.replace("-", "_"): backends[name].port for name in backends.backends},
    ))
    return plan_of(spec)


@dataclasses.dataclass
class Running:
    plan: Plan
    client: Client
    admin_socket: Path | None = None
    metrics_port: int | None = None


class Routers:
    """HAProxy and nginx processes, one per (router, stage), started on first use and stopped at the end."""

    def __init__(self, folder: Path, backends: Backends):
        self.folder = folder
        self.backends = backends
        self.plans = {
            # HAProxy checks every second, so a failing server is marked down within a second or two.
            "haproxy": live_plan(folder, backends, "haproxy", interval=1),
            # nginx only learns from failed requests: one failure takes a server out for 60s.
            "nginx": live_plan(folder, backends, "nginx", interval=60),
        }
        self.running: dict[tuple[str, str], Running] = {}
        self.stack = contextlib.ExitStack()
        self.sockets = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # unix socket paths must stay short

    def close(self) -> None:
        self.stack.close()
        shutil.rmtree(self.sockets, ignore_errors=True)

    def get(self, router: str, stage: str, fresh: bool = False, path: str = "/") -> Running:
        key = (router, stage + ("/fresh" if fresh else "") + (path if path != "/" else ""))
        if key not in self.running:
            plan = dataclasses.replace(self.plans[router].at(stage), port=free_port(), path=path)
            start = self._haproxy if router == "haproxy" else self._nginx
            self.running[key] = start(plan, self.folder / f"{router}-{key[1].replace('/', '-')}")
        return self.running[key]

    def _haproxy(self, plan: Plan, folder: Path) -> Running:
        binary = tool("haproxy")
        folder.mkdir()
        metrics = free_port()
        socket_path = self.sockets / f"{folder.name}.sock"
        runtime = haproxy.Runtime("127.0.0.1", metrics, str(socket_path))
        (folder / "haproxy.cfg").write_text(haproxy.config(plan, runtime))
        self.stack.enter_context(Router([binary, "-db", "-f", str(folder / "haproxy.cfg")],
                                        [plan.port, metrics], folder / "haproxy.log"))
        wait_until(lambda: server_status(socket_path, "live-stable", "live-stable-2") == "DOWN", 15,
                   "HAProxy's health check to mark the broken stable server down")
        running = Running(plan, Client(plan.port, plan.host), socket_path, metrics)
        self.stack.callback(running.client.close)
        return running

    def _nginx(self, plan: Plan, folder: Path) -> Running:
        main = write_nginx(folder, nginx.config(plan, nginx.Listen("127.0.0.1")))
        self.stack.enter_context(Router([tool("nginx"), "-c", str(main), "-p", str(folder)], [plan.port],
                                        folder / "nginx.log"))
        running = Running(plan, Client(plan.port, plan.host))
        self.stack.callback(running.client.close)
        return running


@pytest.fixture(scope="module")
def routers(backends: Backends, tmp_path_factory) -> Iterator[Routers]:
    pool = Routers(tmp_path_factory.mktemp("live"), backends)
    try:
        yield pool
    finally:
        pool.close()


def server_status(socket_path: Path, backend: str, server: str) -> str:
    """A server's status (UP, DOWN, MAINT ...) from the Runtime API's ``show stat``."""
    if not socket_path.exists():
        return ""
    for line in admin_command(socket_path, "show stat").splitlines():
        fields = line.split(",")
        if len(fields) > 17 and fields[0] == backend and fields[1] == server:
            return fields[17]
    return ""


def predict_haproxy(plan: Plan) -> Callable[[str], str]:
    b = haproxy.bucketing(plan, plan.current)
    return lambda key: "canary" if xxh32(key.encode()) % b.buckets < b.threshold else "stable"


def predict_nginx(plan: Plan) -> Callable[[str], str]:
    threshold = nginx.percent(plan.current.route_weight).threshold
    return lambda key: "canary" if murmur2(key.encode()) < threshold else "stable"


PREDICT = {"haproxy": predict_haproxy, "nginx": predict_nginx}


# --------------------------------------------------------------------------- the split, stage by stage


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
def test_split_is_exact_sticky_and_monotone_as_stages_advance(router: str, routers: Routers, backends: Backends):
    backends.reset()
    was_canary: set[str] = set()
    for stage, share, n in STAGES:
        running = routers.get(router, stage)
        keys = [f"user-{i}" for i in range(n)]
        carried = sorted(was_canary - set(keys))
        responses = running.client.get_many(keyed(keys + carried))
        variant = {key: variant_of(r) for key, r in zip(keys + carried, responses)}

        canary = sum(variant[k] == "canary" for k in keys)
        lo, hi = acceptance_interval(share, n)
        print(f"\n{router:8} target {share:7.2%}  measured {canary / n:8.4%}  ({canary}/{n}, 99.9% interval {lo}-{hi})")
        assert lo <= canary <= hi, f"{router} at {stage}: {canary}/{n} canary keys, outside [{lo}, {hi}]"

        predict = PREDICT[router](running.plan)
        wrong = [k for k in variant if variant[k] != predict(k)]
        assert not wrong, f"{router} at {stage} routed {len(wrong)} keys against its hash, e.g. {wrong[:5]}"

        stayed = {k for k in was_canary if variant[k] == "canary"}
        assert stayed == was_canary, f"{router} at {stage} moved {sorted(was_canary - stayed)[:5]} off the canary"

        sample = [k for k in keys if variant[k] == "canary"][:40] + [k for k in keys if variant[k] == "stable"][:40]
        again = running.client.get_many(keyed([k for k in sample for _ in range(3)]))
        assert [variant_of(r) for r in again] == [variant[k] for k in sample for _ in range(3)]
        was_canary = {k for k, v in variant.items() if v == "canary"}
    assert backends["stable-backup"].requests == 0, "the backup served while a primary was up"


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
def test_requests_without_a_key_are_split_one_by_one(router: str, routers: Routers):
    running = routers.get(router, "half")
    n = HALF_N
    requests = [{} for _ in range(n // 2)] + [{"X-User-ID": ""} for _ in range(n - n // 2)]
    canary = sum(variant_of(r) == "canary" for r in running.client.get_many(requests))
    lo, hi = acceptance_interval(0.5, n)
    print(f"\n{router:8} key-less target 50%  measured {canary / n:.2%} ({canary}/{n})")
    assert lo <= canary <= hi


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
def test_testers_always_reach_the_canary(router: str, routers: Routers):
    running = routers.get(router, "tiny")
    predict = PREDICT[router](running.plan)
    keys = [f"tester-{i}" for i in range(150)]
    responses = running.client.get_many(
        [{"X-User-ID": k, "X-Canary": TESTER_VALUES[i % len(TESTER_VALUES)]} for i, k in enumerate(keys)])
    assert {variant_of(r) for r in responses} == {"canary"}
    # values are compared exactly, case included, as on every other target
    near_misses = ["internal-testing-2", "INTERNAL-Testing", "Beta-Users"]
    others = running.client.get_many(
        [{"X-User-ID": k, "X-Canary": near_misses[i % len(near_misses)]} for i, k in enumerate(keys)])
    assert [variant_of(r) for r in others] == [predict(k) for k in keys]
    assert {predict(k) for k in keys} == {"stable"}


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
def test_a_server_that_is_down_receives_nothing(router: str, routers: Routers, backends: Backends):
    running = routers.get(router, "canary")
    backends.reset()
    responses = running.client.get_many(keyed([f"health-{i}" for i in range(600)]))
    assert {r.status for r in responses} == {200}
    assert backends["stable-backup"].requests == 0
    if router == "haproxy":
        # marked down by its health check before the first request: not one request reaches it
        assert backends["stable-2"].requests == 0
    else:
        # nginx learns from one failed request (max_fails=1), retries it on stable-1, then skips the server
        assert backends["stable-2"].requests <= 1
    assert backends["stable-1"].requests >= 590


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
def test_only_the_service_path_is_split(router: str, routers: Routers, backends: Backends):
    running = routers.get(router, "full", path="/api")
    tester = {"X-Canary": TESTER_VALUES[0]}
    for path in ("/api", "/api/", "/api/v1/score?x=1"):
        responses = running.client.get_many(keyed([f"p-{i}" for i in range(30)]) + [tester], path=path)
        assert {variant_of(r) for r in responses} == {"canary"}, path
    backends.reset()
    for path in ("/", "/apix", "/other/api"):
        responses = running.client.get_many(keyed([f"p-{i}" for i in range(30)]) + [tester], path=path)
        if router == "haproxy":  # the frontend serves every path: the others stay on stable
            assert {variant_of(r) for r in responses} == {"stable"}, path
        else:  # the server block routes service.path only, as an Ingress or HTTPRoute would
            assert {r.status for r in responses} <= {403, 404}, path  # nginx's own answer, no upstream
    assert backends["canary-1"].requests == 0
    if router == "nginx":
        assert sum(b.requests for b in backends.backends.values()) == 0


def test_haproxy_backup_server_takes_over_when_every_primary_is_down(routers: Routers, backends: Backends):
    running = routers.get("haproxy", "canary", fresh=True)
    stable = [k for k in (f"b-{i}" for i in range(300)) if predict_haproxy(running.plan)(k) == "stable"][:100]
    assert admin_command(running.admin_socket, "set server live-stable/live-stable-1 state maint").strip() == ""
    assert server_status(running.admin_socket, "live-stable", "live-stable-1") == "MAINT"
    backends.reset()
    responses = running.client.get_many(keyed(stable))
    assert {r.status for r in responses} == {200}
    assert backends["stable-backup"].requests == len(stable)
    assert backends["stable-1"].requests == backends["stable-2"].requests == 0
    assert admin_command(running.admin_socket, "set server live-stable/live-stable-1 state ready").strip() == ""
    backends.reset()
    running.client.get_many(keyed(stable))
    assert backends["stable-backup"].requests == 0 and backends["stable-1"].requests == len(stable)


# --------------------------------------------------------------------------- shadow and rollback


def test_haproxy_keeps_everyone_on_stable_during_a_shadow_stage(routers: Routers, backends: Backends):
    running = routers.get("haproxy", "shadow")
    backends.reset()
    responses = running.client.get_many(keyed([f"user-{i}" for i in range(300)]))
    assert {variant_of(r) for r in responses} == {"stable"}
    assert backends["canary-1"].requests == 0 and backends["canary-1"].mirrored == 0
    testers = running.client.get_many([{"X-Canary": "beta-users", "X-User-ID": f"t{i}"} for i in range(20)])
    assert {variant_of(r) for r in testers} == {"canary"}


def test_nginx_mirrors_the_shadow_share_to_the_canary(routers: Routers, backends: Backends):
    running = routers.get("nginx", "shadow")
    backends.reset()
    n = HALF_N
    responses = running.client.get_many(keyed([f"user-{i}" for i in range(n)]))
    assert {variant_of(r) for r in responses} == {"stable"}
    canary = backends["canary-1"]
    settled: list[int] = []

    def mirror_settled() -> bool:
        settled.append(canary.mirrored)
        return len(settled) > 5 and settled[-1] == settled[-6]

    wait_until(mirror_settled, 10, "mirrored requests to arrive", step=0.05)
    lo, hi = acceptance_interval(0.5, n)
    print(f"\nnginx    mirror target 50%  measured {canary.mirrored / n:.2%} ({canary.mirrored}/{n})")
    assert lo <= canary.mirrored <= hi
    assert canary.requests == 0, "a shadow stage serves no user from the canary"
    before = canary.mirrored
    testers = running.client.get_many([{"X-Canary": "beta-users", "X-User-ID": f"t{i}"} for i in range(50)])
    assert {variant_of(r) for r in testers} == {"canary"}
    time.sleep(0.3)
    assert canary.mirrored == before, "tester requests are not mirrored"


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
def test_rollback_sends_everyone_to_stable_testers_included(router: str, routers: Routers, backends: Backends):
    running = routers.get(router, ROLLBACK)
    half = routers.plans[router].at("half")
    predict = PREDICT[router](half)
    keys = [k for k in (f"user-{i}" for i in range(600)) if predict(k) == "canary"][:200]
    backends.reset()
    responses = running.client.get_many(keyed(keys) + [{"X-Canary": v, "X-User-ID": "x"} for v in TESTER_VALUES * 20])
    assert {variant_of(r) for r in responses} == {"stable"}
    assert backends["canary-1"].requests == 0 and backends["canary-1"].mirrored == 0


def test_haproxy_runtime_rollback_commands_take_effect_without_a_reload(routers: Routers, backends: Backends):
    running = routers.get("haproxy", "half", fresh=True)
    predict = predict_haproxy(running.plan)
    keys = [f"user-{i}" for i in range(400)]
    before = running.client.get_many(keyed(keys))
    assert [variant_of(r) for r in before] == [predict(k) for k in keys]
    assert "canary" in {predict(k) for k in keys}

    runtime = haproxy.Runtime("127.0.0.1", running.metrics_port, str(running.admin_socket))
    commands = [line for line in haproxy.runtime_rollback(running.plan, runtime).splitlines()
                if line and not line.startswith("#")]
    assert commands
    for command in commands:
        assert admin_command(running.admin_socket, command).strip() == ""
    assert server_status(running.admin_socket, "live-canary", "live-canary-1") == "MAINT"

    backends.reset()
    after = running.client.get_many(keyed(keys) + [{"X-Canary": v, "X-User-ID": "x"} for v in TESTER_VALUES * 20])
    assert {variant_of(r) for r in after} == {"stable"}
    assert backends["canary-1"].requests == 0


def test_haproxy_exports_backend_metrics_under_the_backend_names(routers: Routers):
    running = routers.get("haproxy", "tiny")
    running.client.get_many(keyed([f"m-{i}" for i in range(50)]))
    with urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10) as reply:
        metrics = reply.read().decode()
    for backend in ("live-stable", "live-canary"):
        assert f'haproxy_backend_http_requests_total{{proxy="{backend}"}}' in metrics
    line = next(
        l for l in metrics.splitlines() if l.startswith('haproxy_backend_http_requests_total{proxy="live-stable"}')
    )
    assert float(line.split()[-1]) > 0

