"""alertmanager: who hears about a rollout's alerts, for Alertmanager 0.25 and the Prometheus Operator.

Every alert of a rollout with ``alerting`` carries the label ``rollout_route``:
a digest of its receivers and routes (:attr:`compiler.ir.plan.AlertingPlan.key`).
Rollouts that notify the same people the same way share it, so a configuration
grows with the number of distinct receiver sets, not with the number of
rollouts, and a promote never changes it.

Per rollout (``alertmanager/``):

- ``alertmanager.yaml``: a complete configuration with only this rollout's
  route subtree and receivers (checkable on its own);
- ``routes.test.txt``: ``amtool config routes test`` cases, one per line;
- ``alertmanagerconfig.yaml`` with ``alerting.operator``: an
  ``AlertmanagerConfig`` in the rollout's namespace, matching the rollout's
  own alerts (``rollout``, ``namespace``, ``environment`` besides
  ``rollout_route``, whatever matcher strategy the Operator runs with) and
  reading the receivers' secrets from Secrets there.

For the fleet (``_fleet/alertmanager/``): one subtree per distinct
``rollout_route``, and one case list per subtree.

A subtree matches ``rollout_route``.  Under it, alerts with
``action="rollback"`` go to the rollback receivers and to their severity's
receivers; the others go to their severity's receivers.  Each receiver is one
route with ``continue: true`` so that all of them get the alert, and a receiver
named twice is notified once.  A firing ``action="rollback"`` alert inhibits
the ``warning`` alerts of the same rollout.  Receivers are named
``<rollout_route>.<receiver>``.  Secrets are read from files (``*_file``) or,
for the Operator, from Secret keys (``*_secret``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from compiler import serialize
from compiler.gates import conventions as c
from compiler.gates.algebra import string
from compiler.gates.conventions import ROUTE_LABEL
from compiler.ir.fleet import FleetEntry
from compiler.ir.plan import AlertingPlan, Plan, ReceiverPlan, SecretPlan
from compiler.targets import kube
from compiler.targets.base import CONFIG as CONFIG_FILE, MANIFEST, OTHER, FleetTarget, Finding, Target

NAME = "alertmanager"
CONFIG = f"{NAME}/alertmanager.yaml"
CASES = f"{NAME}/routes.test.txt"
OPERATOR = f"{NAME}/alertmanagerconfig.yaml"
OPERATOR_API = "monitoring.coreos.com/v1alpha1"
#: Alerts in one webhook message; Alertmanager truncates a larger group (and counts the rest in truncatedAlerts).
#: A rollout's alerts are grouped per rollout and stage, far below it; `rollout serve` refuses a larger request.
WEBHOOK_MAX_ALERTS = 1000
UNROUTED = "rollout-unrouted"  # the root's receiver: no integration, nothing routed here is sent
SEVERITIES = ("critical", "warning", "info")
#: group_wait, group_interval, repeat_interval per kind of route. The rollback route flushes every 10s: the
#: resolution of a rolled-back stage's alert (its resolver rule) is sent within seconds, so that a breach after
#: a resume is a new notification at once rather than a repeat held back for the repeat interval.
TIMING = {
    "rollback": ("0s", "10s", "1h"),
    "critical": ("10s", "1m", "1h"),
    "warning": ("30s", "5m", "4h"),
    "info": ("1m", "10m", "24h"),
}
GROUP_BY = ["alertname", "rollout", "namespace", "environment", "stage", "gate"]
KINDS = [("critical", "rollback"), ("critical", "notify"), ("warning", "hold"), ("warning", "rollback"),
         ("info", "hold"), ("info", "notify")]
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


# --------------------------------------------------------------------------- one receiver set


def matcher(name: str, value: str, op: str = "=") -> str:
    return f"{name}{op}{string(value)}"


def receiver_name(key: str, name: str) -> str:
    return f"{key}.{name}"


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def route_names(alerting: AlertingPlan, severity: str, rollback: bool) -> list[str]:
    """The spec's receivers of an alert of this severity (and ``action="rollback"``), in notification order."""
    return _unique((list(alerting.route("rollback")) if rollback else []) + list(alerting.route(severity)))


def targets(alerting: AlertingPlan, severity: str, rollback: bool) -> list[str]:
    return [receiver_name(alerting.key, n) for n in route_names(alerting, severity, rollback)]


def _branch(alerting: AlertingPlan, severity: str, rollback: bool) -> dict[str, Any] | None:
    receivers = targets(alerting, severity, rollback)
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


def subtree(alerting: AlertingPlan) -> dict[str, Any]:
    branches = [_branch(alerting, s, True) for s in SEVERITIES] + [_branch(alerting, s, False) for s in SEVERITIES]
    return {
        "matchers": [matcher(ROUTE_LABEL, alerting.key)],
        "group_by": list(GROUP_BY),
        "routes": [b for b in branches if b is not None],
    }


def inhibition() -> dict[str, Any]:
    """A firing rollback alert silences the warnings of the same rollout (of any receiver set)."""
    routed = matcher(ROUTE_LABEL, ".+", "=~")
    return {
        "source_matchers": [routed, matcher("action", "rollback")],
        "target_matchers": [routed, matcher("severity", "warning"), matcher("action", "rollback", "!=")],
        "equal": ["rollout", "namespace", "environment"],
    }


def receivers(alerting: AlertingPlan) -> list[dict[str, Any]]:
    return [receiver(receiver_name(alerting.key, name), spec) for name, spec in alerting.receivers]


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
        config: dict[str, Any] = {
            "to": email.to,
            "from": email.from_ or EMAIL_FROM,
            "smarthost": email.smarthost or EMAIL_SMARTHOST,
            # the default relay listens beside Alertmanager; anything else must use TLS
            "require_tls": email.smarthost is not None,
            "send_resolved": True,
        }
        if email.auth_username:
            config["auth_username"] = email.auth_username
        if email.auth_password_file:
            config["auth_password_file"] = email.auth_password_file
        out["email_configs"] = [config]
    if spec.webhook is not None and (spec.webhook.url or spec.webhook.url_file):  # url_secret: the operator's only
        hook: dict[str, Any] = {"url": spec.webhook.url} if spec.webhook.url else {"url_file": spec.webhook.url_file}
        if spec.webhook.bearer_token_file:
            hook["http_config"] = {"authorization": {"type": "Bearer",
                                                     "credentials_file": spec.webhook.bearer_token_file}}
        hook["send_resolved"] = True
        hook["max_alerts"] = WEBHOOK_MAX_ALERTS
        out["webhook_configs"] = [hook]
    return out


def config(sets: Sequence[AlertingPlan]) -> dict[str, Any]:
    """A complete Alertmanager configuration routing the alerts of rollouts with these receiver sets."""
    distinct = sorted({a.key: a for a in sets}.items())
    every = [{"name": UNROUTED}] + sorted((r for _, a in distinct for r in receivers(a)), key=lambda r: r["name"])
    return {
        "route": {
            "receiver": UNROUTED,
            "group_by": list(GROUP_BY),
            "routes": [subtree(a) for _, a in distinct],
        },
        "inhibit_rules": [inhibition()] if distinct else [],
        "receivers": every,
    }


# --------------------------------------------------------------------------- amtool cases


def cases(rollout: Rollout) -> list[tuple[list[str], dict[str, str]]]:
    """(expected receivers, alert labels): one alert of each kind this rollout's rules send."""
    assert rollout.alerting is not None
    base = {"rollout": rollout.name, "namespace": rollout.namespace}
    if rollout.environment:
        base["environment"] = rollout.environment
    base[ROUTE_LABEL] = rollout.alerting.key
    out = []
    for severity, action in KINDS:
        expected = targets(rollout.alerting, severity, action == "rollback") or [UNROUTED]
        out.append((expected, {**base, "severity": severity, "action": action}))
    return out


def case_lines(rollouts: Sequence[Rollout]) -> str:
    lines = []
    for rollout in rollouts:
        for expected, labels in cases(rollout):
            args = " ".join(f"{k}={v}" for k, v in labels.items())
            lines.append(f"--verify.receivers={','.join(expected)} {args}\n")
    return "".join(lines)


CASES_NOTE = (
    "amtool config routes test cases: each line holds the arguments of one invocation,\n"
    "  amtool config routes test --config.file=alertmanager.yaml $line\n"
    "which fails unless the alert's labels route to exactly the receivers listed."
)


# --------------------------------------------------------------------------- the Prometheus Operator


def _secret(ref: SecretPlan | None) -> dict[str, str]:
    assert ref is not None, "checked by lint"
    return {"name": ref.name, "key": ref.key}


def _operator_receiver(name: str, spec: ReceiverPlan) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if spec.pagerduty is not None:
        out["pagerdutyConfigs"] = [{"routingKey": _secret(spec.pagerduty.routing_key_secret),
                                    "severity": "{{ .CommonLabels.severity }}", "sendResolved": True}]
    if spec.slack is not None:
        out["slackConfigs"] = [{"apiURL": _secret(spec.slack.api_url_secret), "channel": spec.slack.channel,
                                "sendResolved": True}]
    if spec.email is not None:
        email = spec.email
        config: dict[str, Any] = {"to": email.to, "from": email.from_ or EMAIL_FROM,
                                  "smarthost": email.smarthost or EMAIL_SMARTHOST,
                                  "requireTLS": email.smarthost is not None, "sendResolved": True}
        if email.auth_username:
            config["authUsername"] = email.auth_username
            config["authPassword"] = _secret(email.auth_password_secret)
        out["emailConfigs"] = [config]
    if spec.webhook is not None:
        hook: dict[str, Any] = {"url": spec.webhook.url} if spec.webhook.url else {
            "urlSecret": _secret(spec.webhook.url_secret)}
        if spec.webhook.bearer_token_secret is not None:
            hook["httpConfig"] = {"authorization": {"type": "Bearer",
                                                    "credentials": _secret(spec.webhook.bearer_token_secret)}}
        hook["sendResolved"] = True
        hook["maxAlerts"] = WEBHOOK_MAX_ALERTS
        out["webhookConfigs"] = [hook]
    return out


def _operator_matchers(pairs: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "matchType": op, "value": value} for name, op, value in pairs]


def alertmanager_config(plan: Plan) -> dict[str, Any]:
    """The rollout's routes as an ``AlertmanagerConfig`` (the Operator confines it to the rollout's namespace)."""
    alerting = plan.alerting
    assert alerting is not None
    routes = []
    for rollback in (True, False):
        for severity in SEVERITIES:
            names = route_names(alerting, severity, rollback)
            if not names:
                continue
            wait, interval, repeat = TIMING["rollback" if rollback else severity]
            pairs = ([("action", "=", "rollback")] if rollback else []) + [("severity", "=", severity)]
            routes.append({"matchers": _operator_matchers(pairs), "groupWait": wait, "groupInterval": interval,
                           "repeatInterval": repeat,
                           "routes": [{"receiver": n, "continue": True} for n in names]})
    # The rollout's own labels too: under the Operator's `None` matcher strategy nothing confines a config to its
    # namespace, and two rollouts with the same receivers share `rollout_route`.
    own = [("rollout", "=", plan.name), ("namespace", "=", plan.namespace)]
    own += [("environment", "=", plan.environment)] if plan.environment else []
    spec: dict[str, Any] = {
        "route": {
            "receiver": UNROUTED,
            "groupBy": list(GROUP_BY),
            "matchers": _operator_matchers([(ROUTE_LABEL, "=", alerting.key), *own]),
            "routes": routes,
        },
        "receivers": [{"name": UNROUTED}] + [_operator_receiver(n, r) for n, r in alerting.receivers],
        "inhibitRules": [{
            "sourceMatch": _operator_matchers([(ROUTE_LABEL, "=", alerting.key), ("action", "=", "rollback")]),
            "targetMatch": _operator_matchers([(ROUTE_LABEL, "=", alerting.key), ("severity", "=", "warning"),
                                               ("action", "!=", "rollback")]),
            "equal": ["rollout", "namespace", "environment"],
        }],
    }
    return {"apiVersion": OPERATOR_API, "kind": "AlertmanagerConfig",
            "metadata": kube.metadata(plan, plan.names.alertmanager_configmap), "spec": spec}


# --------------------------------------------------------------------------- targets


def render(plan: Plan) -> dict[str, str]:
    if plan.alerting is None:
        return {}
    header = serialize.header(plan.source.path)
    files = {
        CONFIG: serialize.yaml_text(config([plan.alerting]), header),
        CASES: serialize.comment(header) + serialize.comment(CASES_NOTE) + case_lines([plan]),
    }
    if plan.alerting.operator:
        files[OPERATOR] = kube.manifest(plan, alertmanager_config(plan))
    return files


def render_fleet(entries: Sequence[FleetEntry], kinds: Mapping[str, str]) -> dict[str, str]:
    """One subtree per distinct receiver set, and its cases once (for the first rollout that uses it)."""
    routed = [e for e in entries if e.alerting is not None]
    if not routed:
        return {}
    first: dict[str, FleetEntry] = {}
    for entry in sorted(routed, key=lambda e: e.out):
        assert entry.alerting is not None
        first.setdefault(entry.alerting.key, entry)
    sets = [e.alerting for e in first.values() if e.alerting is not None]
    return {
        CONFIG: serialize.yaml_text(config(sets), serialize.FLEET_HEADER),
        CASES: serialize.comment(serialize.FLEET_HEADER) + serialize.comment(CASES_NOTE)
        + case_lines([first[key] for key in sorted(first)]),
    }


def lint(plan: Plan) -> list[Finding]:
    if plan.alerting is None:
        return []
    out = []
    for name, spec in plan.alerting.receivers:
        at = ("alerting", "receivers", name)
        if spec.webhook is not None and spec.webhook.url_file is not None:
            out.append(Finding(at + ("webhook", "url_file"),
                               f"receiver '{name}': Alertmanager 0.25 has no `url_file` for webhooks; give `url` "
                               "(the URL lands in the generated configuration), or, with `alerting.operator: true`, "
                               "`url_secret` (a Secret key the AlertmanagerConfig references)", code="alerting"))
        if spec.webhook is not None and spec.webhook.url_secret is not None and not plan.alerting.operator:
            out.append(Finding(at + ("webhook", "url_secret"),
                               f"receiver '{name}': `url_secret` is read by the AlertmanagerConfig that "
                               "`alerting.operator: true` writes; without it no configuration can reach the webhook",
                               code="alerting"))
        if spec.webhook is not None and spec.webhook.url is None and spec.webhook.url_secret is not None:
            out.append(Finding(at + ("webhook", "url_secret"),
                               f"receiver '{name}': its URL is only a Secret, which only the AlertmanagerConfig "
                               "reads: in the plain configurations (alertmanager/alertmanager.yaml, "
                               "_fleet/alertmanager/alertmanager.yaml) this receiver sends nothing; deploy the "
                               "AlertmanagerConfig alone, or give `url` too", "warning", code="alerting"))
        if plan.alerting.operator:
            out.extend(_operator_findings(name, spec, at))
    return out + _unrouted(plan, plan.alerting)


def _unrouted(plan: Plan, alerting: AlertingPlan) -> list[Finding]:
    """A severity the stages raise that no route sends: its alerts reach the root's receiver, which sends nothing."""
    raised: dict[str, list[str]] = {}
    for stage in plan.stages:
        if stage.kind == "rollback":
            continue
        severities = {gate.severity for gate in stage.gates} | {b.severity for b in c.stage_burn_rates(stage)}
        if stage.gates:
            severities.add("info")  # the starved alert: too little canary traffic to judge
        for severity in severities:
            raised.setdefault(severity, []).append(stage.name)
    out = []
    for severity in ("critical", "warning", "info"):
        stages = raised.get(severity)
        if stages and not alerting.route(severity):
            named = ", ".join(f"'{s}'" for s in stages)
            who = f"stages {named} raise" if len(stages) > 1 else f"stage {named} raises"
            what = " (too little canary traffic to judge)" if severity == "info" else ""
            out.append(Finding(("alerting", "routes"), f"{who} {severity} alerts{what}, and alerting.routes has no "
                               f"`{severity}` receivers: Alertmanager sends them to no one ({UNROUTED}); add "
                               f"`{severity}: [RECEIVER]`", "warning", code="alerting"))
    return out


def _operator_findings(name: str, spec: ReceiverPlan, at: tuple[str, ...]) -> list[Finding]:
    missing = []
    if spec.pagerduty is not None and spec.pagerduty.routing_key_secret is None:
        missing.append((("pagerduty",), "pagerduty.routing_key_secret"))
    if spec.slack is not None and spec.slack.api_url_secret is None:
        missing.append((("slack",), "slack.api_url_secret"))
    if spec.email is not None and spec.email.auth_username and spec.email.auth_password_secret is None:
        missing.append((("email",), "email.auth_password_secret"))
    if spec.webhook is not None and spec.webhook.url is None and spec.webhook.url_secret is None:
        missing.append((("webhook",), "webhook.url_secret"))
    if spec.webhook is not None and spec.webhook.bearer_token_file and spec.webhook.bearer_token_secret is None:
        missing.append((("webhook",), "webhook.bearer_token_secret"))
    return [Finding(at + loc, f"receiver '{name}': alerting.operator writes an AlertmanagerConfig, which reads "
                    f"secrets from Secrets in the rollout's namespace: give `{field}` {{name, key}}", code="alerting")
            for loc, field in missing]


TARGET: Target = Target(NAME, render, lint, kinds={CONFIG: CONFIG_FILE, CASES: OTHER, OPERATOR: MANIFEST})
FLEET: FleetTarget = FleetTarget("alertmanager-fleet", render_fleet, kinds={CONFIG: CONFIG_FILE, CASES: OTHER})
