"""No secret reaches a generated file: planted in every string field of rich specs, each is refused or never
written; legitimate links with ids still pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler import pipeline
from compiler.spec import secrets
from conftest import FUZZ, SPECS, report_line

HEX_KEY = "0123456789abcdef0123456789abcdef"

#: (value planted, what must never appear in a generated file); detectable in any URL or text field.
PLANTED = [
    ("https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/XyZsecretTOKEN", "XyZsecretTOKEN"),
    (f"https://events.pagerduty.com/integration/{HEX_KEY}/enqueue", HEX_KEY),
    ("https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
     "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("https://acme.webhook.office.com/webhookb2/0c6a2e6e-1111-2222-3333-444444444444@0c6a2e6e-5555-6666-7777-"
     f"888888888888/IncomingWebhook/{HEX_KEY}/0c6a2e6e-9999-aaaa-bbbb-cccccccccccc", "0c6a2e6e-9999-aaaa"),
    ("https://deploy:s3cr3tP4ss@git.example.com/acme/rollouts.git", "s3cr3tP4ss"),
    ("https://wiki.example.com/runbooks/checkout/share/4kTz9QmX2pLw8RvN3sYb7HcJ", "4kTz9QmX2pLw8RvN3sYb7HcJ"),
    ("ghp_0123456789abcdefghijABCDEFGHIJ0123456789", "ghp_0123456789abcdefghij"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx"),
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
]
#: Keys in a webhook's path, which only the webhook field (a notification endpoint) can tell from an id.
PLANTED_IN_WEBHOOKS = [
    (f"https://alerts-proxy.example.com/pagerduty/{HEX_KEY}", HEX_KEY),
    ("https://hooks.example.com/T0AAAAAAA/B0BBBBBBB/xYz0123456789abcdefghijk", "xYz0123456789abcdefghijk"),
]

LINKS = [
    "https://runbooks.example.com/checkout",
    "https://wiki.example.com/display/OPS/Checkout+Runbook",
    "https://www.notion.so/acme/Checkout-runbook-0123456789abcdef0123456789abcdef",
    "https://github.com/acme/runbooks/blob/3f786850e387550fdab836ed7e6dc881de23001b/checkout.md",
    "https://gitlab.example.com/acme/runbooks/-/blob/9fceb02d0ae598e95dc970b74767f19372d61af8/README.md",
    "https://github.com/acme/platform/commit/9fceb02d0ae598e95dc970b74767f19372d61af8",
    "https://grafana.example.com/d/a1B2c3D4e/checkout-overview",
    "https://grafana.example.com/d/rollout-993b444e4ada8f731f55/ai-orchestra",
    "https://app.datadoghq.com/dashboard/abc-def-ghi/checkout-service-overview",
    "https://docs.example.com/runbooks/2024-05-01-checkout-v2-release-procedure",
    "https://confluence.example.com/spaces/OPS/pages/123456789/Checkout+Runbook",
    "https://runbooks.example.com/services/ledger-api/ProductionIncidentResponse2024",
    "https://grafana.example.com",
]
WEBHOOKS = [
    "http://rollout-bot.ops.svc:9095/alerts",
    "https://alerts.example.com/hooks/checkout",
    "https://hooks.example.com/rollout/v1/notify",
    "https://rollout-serve.platform.svc.cluster.local:8443/alerts",
]

BASES = ["ai-orchestra.yaml", "ultra-fast-analyzer.yaml"]


def _rich(name: str) -> dict[str, Any]:
    data = yaml.safe_load((SPECS / name).read_text())
    data["metadata"]["runbook"] = "https://runbooks.example.com/checkout"
    alerting = data.setdefault("alerting", {"receivers": {}, "routes": {"critical": []}})
    alerting["receivers"]["hook"] = {"webhook": {"url": "https://alerts.example.com/hooks/checkout"}}
    alerting["routes"].setdefault("rollback", []).append("hook")
    alerting["grafana_url"] = "https://grafana.example.com"
    return data


def _leaves(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, at + (k,))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, at + (i,))]
    return [at] if isinstance(node, str) else []


def _set(data: Any, at: tuple[Any, ...], value: str) -> Any:
    import copy

    out = copy.deepcopy(data)
    node = out
    for part in at[:-1]:
        node = node[part]
    node[at[-1]] = value
    return out


def _plant(tmp_path: Path, data: Any) -> dict[str, str] | None:
    spec = tmp_path / "planted.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    result = pipeline.compile_paths([spec], output=tmp_path / "generated")
    return result.files if result.ok else None


def test_no_planted_secret_reaches_a_generated_file(tmp_path):
    """`make fuzz` plants every value, alone and inside text, in every string field; `make test` four of them."""
    cases = refused = 0
    leaks = []
    chosen = PLANTED if FUZZ else [PLANTED[i] for i in (0, 1, 4, 6)]
    for base in BASES:
        data = _rich(base)
        assert _plant(tmp_path, data) is not None, base  # the base compiles
        for at in _leaves(data):
            planted = chosen + (PLANTED_IN_WEBHOOKS if at[-2:] == ("webhook", "url") else [])
            for value, needle in planted:
                for text in (value, f"see {value} for details") if FUZZ else (value,):
                    cases += 1
                    files = _plant(tmp_path, _set(data, at, text))
                    if files is None:
                        refused += 1
                        continue
                    leaks += [(base, at, value, path) for path, body in files.items() if needle in body]
    report_line(f"secrets: {cases} plantings in every string field of {len(BASES)} specs, {refused} refused, "
                f"{cases - refused} accepted (the field never reaches a file, or keeps no secret), {len(leaks)} leaks")
    assert not leaks, leaks[:5]


@pytest.mark.parametrize("url", LINKS)
def test_links_with_ids_still_pass(tmp_path, url):
    data = _rich("ultra-fast-analyzer.yaml")
    data["metadata"]["runbook"] = url
    data["alerting"]["grafana_url"] = url
    assert _plant(tmp_path, data) is not None, url
    assert secrets.in_url(url) is None


@pytest.mark.parametrize("url", WEBHOOKS)
def test_plain_webhook_urls_still_pass(tmp_path, url):
    data = _rich("ultra-fast-analyzer.yaml")
    data["alerting"]["receivers"]["hook"]["webhook"]["url"] = url
    assert _plant(tmp_path, data) is not None, url


def test_a_refused_url_is_not_echoed_and_the_message_says_what_to_do(tmp_path):
    data = _rich("ultra-fast-analyzer.yaml")
    data["alerting"]["receivers"]["hook"]["webhook"]["url"] = PLANTED[0][0]
    spec = tmp_path / "planted.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    (problem,) = [d for d in pipeline.analyse([spec]).diagnostics if d.severity == "error"]
    assert "XyZsecretTOKEN" not in problem.message and "hooks.slack.com/…" in problem.message
    assert "a Slack webhook URL" in problem.message and "url_secret" in problem.message
    assert "Alertmanager 0.25 has no url_file" in problem.message
