"""alertmanager: who hears about a rollout's alerts, for Alertmanager 0.25.

Per rollout with ``alerting`` (``alertmanager/``):

- ``alertmanager.yaml``: a complete configuration with only this rollout's
  route subtree, its receivers and its inhibition (checkable on its own);
- ``routes.test.txt``: ``amtool config routes test`` cases, one per line.

For all rollouts (``_fleet/alertmanager/``): the same subtrees merged under
one root, and every rollout's cases.

A subtree matches ``rollout``, ``namespace`` and, for a rollout of an
environment, ``environment``; those come first, so that a rollout without
environments (which matches any ``environment``, as Prometheus' external
labels may set one) never takes their alerts.  Under it, alerts with ``action="rollback"`` go
to the rollback receivers and to their severity's receivers; the others go to
their severity's receivers.  Each receiver is one route with ``continue: true``
so that all of them get the alert, and a receiver named twice is notified once.
A firing ``action="rollback"`` alert inhibits the ``warning`` alerts of the same
rollout.  Receivers are named ``<[environment.]namespace.name>.<receiver>``,
unique in the fleet.  Secrets are read from files (``*_file`` fields).
"""

from __future__ import annotations

from typing import Any, Protocol
from collections.abc import Mapping, Sequence

from compiler.gates.algebra import string
from compiler import serialize
from compiler.ir.fleet import FleetEntry
from compiler.ir.plan import AlertingPlan, Plan, ReceiverPlan
from compiler.targets.base import CONFIG as CONFIG_FILE, OTHER, FleetTarget, Finding, Target

NAME = "alertmanager"
CONFIG = f"{NAME}/alertmanager.yaml"
CASES = f"{NAME}/routes.test.txt"
UNROUTED = "rollout-unrouted"  # the root's receiver: no integration, nothing routed here is sent
SEVERITIES = ("critical", "warning", "info")
#: group_wait, group_interval, repeat_interval per kind of route.
TIMING = {
    "rollback": ("0s", "1m", "1h"),
    "critical": ("10s", "1m", "1h"),
    "warning": ("30s", "5m", "4h"),
    "info": ("1m", "10m", "24h"),
}
GROUP_BY = ["alertname", "rollout", "namespace", "environment", "stage", "gate"]
#: Email receivers without `smarthost` / `from` send through a relay beside Alertmanager.
EMAIL_SMARTHOST = "localhost:25"
EMAIL_FROM = "alertmanager@localhost"
class Rollout(Protocol):
    """What routing needs of a rollout: a plan or a fleet entry."""

    @property
    def out(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def environment(self) -> str | None: ...
    @property
    def alerting(self) -> AlertingPlan | None: ...


# --------------------------------------------------------------------------- one rollout


def matcher(name: str, value: str, op: str = "=") -> str:
    return f"{name}{op}{string(value)}"


def identity_matchers(plan: Rollout) -> list[str]:
    """``environment`` only when the rollout has one: Prometheus' external labels may add it to any alert."""
    out = [matcher("rollout", plan.name), matcher("namespace", plan.namespace)]
    if plan.environment:
        out.append(matcher("environment", plan.environment))
    return out


def scope(plan: Rollout) -> str:
    return plan.out.replace("/", ".")


def receiver_name(plan: Rollout, name: str) -> str:
    return f"{scope(plan)}.{name}"


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def targets(plan: Rollout, severity: str, rollback: bool) -> list[str]:
    """The spec's receivers of an alert of this severity (and ``action="rollback"``), in notification order."""
    assert plan.alerting is not None
    names = (list(plan.alerting.route("rollback")) if rollback else []) + list(plan.alerting.route(severity))
    return [receiver_name(plan, n) for n in _unique(names)]


def _branch(plan: Rollout, severity: str, rollback: bool) -> dict[str, Any] | None:
    receivers = targets(plan, severity, rollback)
    if not receivers:
        return None
    wait, interval, repeat = TIMING["rollback" if rollback else severity]
    matchers = ([matcher("action", "rollback")] if rollback else []) + [matcher("severity", severity)]
    return {
        "matchers": matchers,
        "group_wait": wait,
        "group_interval": interval,
        "repeat_interval": repeat,
        "routes": [{"receiver": r, "continue": True} for r in receivers],
    }


def subtree(plan: Rollout) -> dict[str, Any]:
    branches = [_branch(plan, s, True) for s in SEVERITIES] + [_branch(plan, s, False) for s in SEVERITIES]
    return {
        "matchers": identity_matchers(plan),
        "group_by": list(GROUP_BY),
        "routes": [b for b in branches if b is not None],
    }


def inhibition(plan: Rollout) -> dict[str, Any]:
    return {
        "source_matchers": identity_matchers(plan) + [matcher("action", "rollback")],
        "target_matchers": identity_matchers(plan) + [matcher("severity", "warning"), matcher("action", "rollback", "!=")],
        "equal": ["rollout", "namespace", "environment"],
    }


def receivers(plan: Rollout) -> list[dict[str, Any]]:
    assert plan.alerting is not None
    return [receiver(receiver_name(plan, name), spec) for name, spec in plan.alerting.receivers]


def receiver(name: str, spec: ReceiverPlan) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if spec.pagerduty is not None:
        out["pagerduty_configs"] = [{
            "routing_key_file": spec.pagerduty.routing_key_file,
            "severity": "{{ .CommonLabels.severity }}",
            "send_resolved": True,
        }]
    if spec.slack is not None:
        out["slack_configs"] = [{
            "api_url_file": spec.slack.api_url_file,
            "channel": spec.slack.channel,
            "send_resolved": True,
        }]
    if spec.email is not None:
        email = spec.email
        smarthost = email.smarthost or EMAIL_SMARTHOST
        config: dict[str, Any] = {
            "to": email.to,
            "from": email.from_ or EMAIL_FROM,
            "smarthost": smarthost,
            # the default relay listens beside Alertmanager; anything else must use TLS
            "require_tls": email.smarthost is not None,
            "send_resolved": True,
        }
        if email.auth_username:
            config["auth_username"] = email.auth_username
        if email.auth_password_file:
            config["auth_password_file"] = email.auth_password_file
        out["email_configs"] = [config]
    if spec.webhook is not None:
        hook: dict[str, Any] = {"url": spec.webhook.url} if spec.webhook.url else {"url_file": spec.webhook.url_file}
        hook["send_resolved"] = True
        out["webhook_configs"] = [hook]
    return out


def config(plans: Sequence[Rollout]) -> dict[str, Any]:
    """A complete Alertmanager configuration routing the alerts of these rollouts."""
    # rollouts of an environment first: a plain rollout's subtree would also match their alerts
    routed = sorted((p for p in plans if p.alerting is not None), key=lambda p: (p.environment is None, p.out))
    every = [{"name": UNROUTED}] + sorted((r for p in routed for r in receivers(p)), key=lambda r: r["name"])
    return {
        "route": {
            "receiver": UNROUTED,
            "group_by": list(GROUP_BY),
            "routes": [subtree(p) for p in routed],
        },
        "inhibit_rules": [inhibition(p) for p in routed],
        "receivers": every,
    }


# --------------------------------------------------------------------------- amtool cases


def cases(plan: Rollout) -> list[tuple[list[str], dict[str, str]]]:
    """(expected receivers, alert labels): one alert of each kind this rollout's rules send."""
    base = {"rollout": plan.name, "namespace": plan.namespace}
    if plan.environment:
        base["environment"] = plan.environment
    kinds = [("critical", "rollback"), ("critical", "notify"), ("warning", "hold"), ("warning", "rollback"),
             ("info", "hold"), ("info", "notify")]
    out = []
    for severity, action in kinds:
        expected = targets(plan, severity, action == "rollback") or [UNROUTED]
        out.append((expected, {**base, "severity": severity, "action": action}))
    return out


def case_lines(plans: Sequence[Rollout]) -> str:
    lines = []
    for plan in sorted((p for p in plans if p.alerting is not None), key=lambda p: p.out):
        for expected, labels in cases(plan):
            args = " ".join(f"{k}={v}" for k, v in labels.items())
            lines.append(f"--verify.receivers={','.join(expected)} {args}\n")
    return "".join(lines)


CASES_NOTE = (
    "amtool config routes test cases: each line holds the arguments of one invocation,\n"
    "  amtool config routes test --config.file=alertmanager.yaml $line\n"
    "which fails unless the alert's labels route to exactly the receivers listed."
)


# --------------------------------------------------------------------------- targets


def render(plan: Plan) -> dict[str, str]:
    if plan.alerting is None:
        return {}
    header = serialize.header(plan.source.path)
    return {
        CONFIG: serialize.yaml_text(config([plan]), header),
        CASES: serialize.comment(header) + serialize.comment(CASES_NOTE) + case_lines([plan]),
    }


def render_fleet(plans: Sequence[FleetEntry], kinds: Mapping[str, str]) -> dict[str, str]:
    if not any(p.alerting is not None for p in plans):
        return {}
    return {
        CONFIG: serialize.yaml_text(config(plans), serialize.FLEET_HEADER),
        CASES: serialize.comment(serialize.FLEET_HEADER) + serialize.comment(CASES_NOTE) + case_lines(plans),
    }


def lint(plan: Plan) -> list[Finding]:
    if plan.alerting is None:
        return []
    out = []
    for name, spec in plan.alerting.receivers:
        if spec.webhook is not None and spec.webhook.url_file is not None:
            out.append(Finding(("alerting", "receivers", name, "webhook", "url_file"),
                               f"receiver '{name}': Alertmanager 0.25 has no `url_file` for webhooks; give `url` "
                               "(the URL lands in the generated configuration), or keep the secret in the receiving "
                               "service", code="alerting"))
    return out


TARGET = Target(NAME, render, lint, kinds={CONFIG: CONFIG_FILE, CASES: OTHER})
FLEET = FleetTarget("alertmanager-fleet", render_fleet, kinds={CONFIG: CONFIG_FILE, CASES: OTHER})
