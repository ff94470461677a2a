"""model: the spec language as pydantic v2 models.

Unknown fields are rejected everywhere.  Shorthands (``"< 1%"``, ``2h``,
``0.1%``) are parsed here into exact values, so that nothing after this module
handles spec text.  Rules that relate several fields live in ``compiler.rules``,
where each gets its own located message.  The JSON Schema editors use is
exported from these classes (``rollout schema``).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
    model_validator,
)

from compiler.spec import names
from compiler.spec import routers, secrets, units

API_VERSION = "rollout-compiler/v1"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True,
                              strict=True)  # a boolean is no port, "yes" no boolean: wrong types are errors


def _checked(check: Callable[[str], str]) -> PlainValidator:
    """A string validated by one of :mod:`compiler.spec.names`' checks."""

    def validate(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_kind(value)}")
        return check(value)

    return PlainValidator(validate)


def _string(**schema: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", **schema})


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


_PERCENT_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*%?\s*$"},
        {"type": "number", "minimum": 0, "maximum": 100},
    ],
    "description": "A percentage: '1%', '0.1%', '100%' (a bare number is read as percent).",
}
Percent = Annotated[Fraction, PlainValidator(units.parse_percent), WithJsonSchema(_PERCENT_SCHEMA)]
Latency = Annotated[Fraction, PlainValidator(units.parse_latency), WithJsonSchema(
    {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s)\s*$", "description": "A latency: '200ms', '1.5s'."})]
Ratio = Annotated[
    Fraction,
    PlainValidator(units.parse_ratio),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*x?\s*$"},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "A factor: '2x' or 2.",
        }
    ),
]
Number = Annotated[
    Fraction, PlainValidator(units.parse_number), WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}]})
]
def _duration(value: Any) -> int:
    seconds = units.parse_duration(value)
    if seconds > MAX_DURATION:
        raise ValueError(f"'{value}' is longer than {units.format_duration(MAX_DURATION)}, the most a duration "
                         "of a spec may be")
    return seconds


MAX_DURATION = 365 * 86400  # a hold of more than a year is a typo, not a plan
Duration = Annotated[
    int,
    PlainValidator(_duration),
    WithJsonSchema(
        {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w))+$",
         "description": "A duration of at most 365d: '30s', '5m', '2h', '7d'."}
    ),
]


def _window(value: Any) -> int:
    seconds = units.parse_duration(value)
    if seconds > MAX_WINDOW:
        raise ValueError(f"'{value}' is longer than {units.format_duration(MAX_WINDOW)}, the most this field takes")
    return seconds


MAX_WINDOW = 86400
WindowDuration = Annotated[int, PlainValidator(_window), _string(
    pattern=r"^([0-9]+(ms|s|m|h|d|w))+$", description=f"A duration of at most {units.format_duration(MAX_WINDOW)}.")]

DNSLabel = Annotated[
    str, _checked(names.check_dns1123_label), _string(pattern=names.DNS1123_LABEL.pattern, maxLength=63)
]
ServiceName = Annotated[
    str, _checked(names.check_dns1035_label), _string(pattern=names.DNS1035_LABEL.pattern, maxLength=63)
]
RolloutName = Annotated[
    str,
    _checked(names.check_rollout_name),
    _string(pattern=names.DNS1035_LABEL.pattern, maxLength=names.MAX_ROLLOUT_NAME),
]
LabelValue = Annotated[str, _checked(names.check_label_value), _string(pattern=names.LABEL_VALUE.pattern, maxLength=63)]
LabelKey = Annotated[str, _checked(names.check_label_key), _string()]
ExtraLabelKey = Annotated[str, _checked(names.check_extra_label), _string()]
TesterHeader = Annotated[str, _checked(names.check_tester_header), _string(pattern=names.HEADER_TOKEN.pattern)]
StickyHeader = Annotated[str, _checked(names.check_sticky_header), _string(pattern=names.HEADER_TOKEN.pattern)]
SafeValue = Annotated[str, _checked(names.check_safe_value), _string(pattern=names.SAFE_VALUE.pattern, maxLength=128)]
Hostname = Annotated[str, _checked(names.check_service_host), _string(maxLength=253)]
UrlPath = Annotated[str, _checked(names.check_url_path), _string(pattern=names.URL_PATH.pattern)]
EnvVar = Annotated[str, _checked(names.check_env_var), _string(pattern=names.ENV_VAR.pattern)]
FlagKey = Annotated[str, _checked(names.check_flag_key), _string(pattern=names.FLAG_KEY.pattern)]
StageName = Annotated[str, _checked(names.check_stage_name), _string(pattern=names.STAGE_NAME.pattern, maxLength=40)]
ReceiverName = Annotated[
    str, _checked(lambda v: names.check_dns1123_label(v, "receiver name")), _string(pattern=names.DNS1123_LABEL.pattern)
]


def _check_url(value: str) -> str:
    import re

    if not re.fullmatch(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/\-]*)?$", value):
        raise ValueError(f"'{secrets.redacted(value)}' is not an http(s) URL without user info, query or fragment")
    return value


def _check_link(value: str) -> str:
    found = secrets.in_url(value)
    if found is not None:
        raise ValueError(f"'{secrets.redacted(value)}' carries what looks like {found}: links are written into "
                         "alerts, dashboards and GitOps objects, which are committed; link to an address that needs "
                         "no secret in it")
    return _check_url(value)


def _check_webhook_url(value: str) -> str:
    found = secrets.in_url(value, strict=True)
    if found is not None:
        raise ValueError(f"'{secrets.redacted(value)}' carries what looks like {found}, which would be written into "
                         "the generated Alertmanager configuration. Alertmanager 0.25 has no url_file for webhooks: "
                         "set `alerting.operator: true` and give `url_secret: {name, key}` (the AlertmanagerConfig "
                         "reads the URL from a Kubernetes Secret), or use the receiver made for the service (slack "
                         "with api_url_file, pagerduty with routing_key_file)")
    return _check_url(value)


Url = Annotated[str, _checked(_check_link), _string(format="uri", pattern="^https?://")]
WebhookUrl = Annotated[str, _checked(_check_webhook_url), _string(format="uri", pattern="^https?://")]


def _check_abs_path(value: str) -> str:
    import re

    if not re.fullmatch(r"^/[A-Za-z0-9._\-/]+$", value) or "/../" in value + "/":
        raise ValueError(f"'{value}' must be an absolute file path of letters, digits and . _ - /")
    return value


SecretFile = Annotated[str, _checked(_check_abs_path), _string(pattern="^/")]


def _check_text(value: str) -> str:
    if len(value) > 200 or any(ch in value for ch in "\n\r\t\x00") or not value.strip():
        raise ValueError("must be one line of at most 200 characters")
    return value


Text = Annotated[str, _checked(_check_text), _string(maxLength=200)]


def _check_email(value: str) -> str:
    import re

    if not re.fullmatch(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$", value):
        raise ValueError(f"'{value}' is not an email address")
    return value


Email = Annotated[str, _checked(_check_email), _string(format="email")]


def _check_host_port(value: str) -> str:
    names.check_server_address(value)
    return value


HostPort = Annotated[str, _checked(_check_host_port), _string(pattern=r"^[^:]+:[0-9]+$")]


def _check_slack_channel(value: str) -> str:
    import re

    if not re.fullmatch(r"^[#@][a-z0-9._\-]{1,80}$", value):
        raise ValueError(f"Slack channel '{value}' must be '#channel' or '@user' in lower case")
    return value


SlackChannel = Annotated[str, _checked(_check_slack_channel), _string(pattern="^[#@]")]


def _check_promql(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a PromQL expression")
    if len(value) > 4096:
        raise ValueError("PromQL expression is longer than 4096 characters")
    return value


PromQL = Annotated[str, PlainValidator(_check_promql), WithJsonSchema({"type": "string", "description": "PromQL"})]


# --------------------------------------------------------------------------- service


class Server(Model):
    address: Annotated[str, WithJsonSchema({"type": "string", "pattern": r"^[^:]+:[0-9]+$"})]
    backup: bool = Field(False, description="Only receives traffic when every non-backup server is down.")

    @model_validator(mode="after")
    def _address(self) -> Server:
        names.check_server_address(self.address)
        return self


def _server(value: Any) -> Any:
    return {"address": value} if isinstance(value, str) else value


ServerEntry = Annotated[
    Server,
    BeforeValidator(
        _server,
        json_schema_input_type=Union[
            Annotated[str, WithJsonSchema({"type": "string", "pattern": r"^[^:]+:[0-9]+$"})], Server
        ],
    ),
]


class Variant(Model):
    version: LabelValue = Field(description="The version this variant runs; the `version` label of its metrics.")
    backend: ServiceName = Field(description="The Kubernetes Service (or HAProxy/nginx backend) of this variant.")
    port: int | None = Field(None, ge=1, le=65535, description="Defaults to service.port.")
    servers: list[ServerEntry] = Field(
        default_factory=list, description="HOST:PORT of each instance, for haproxy and nginx."
    )


class Health(Model):
    path: UrlPath = "/health"
    interval: Duration = 30
    timeout: Duration | None = None
    expect_status: int = Field(200, ge=100, le=599)
    fall: int = Field(3, ge=1, le=100)
    rise: int = Field(2, ge=1, le=100)


class Service(Model):
    host: Hostname
    path: UrlPath = "/"
    port: int = Field(ge=1, le=65535, description="The port clients and routers use.")
    target_port: int | None = Field(
        None, ge=1, le=65535, description="The pods' port (default: port), for the Services of a blue-green rollout."
    )
    stable: Variant
    canary: Variant
    health: Health | None = None


# --------------------------------------------------------------------------- traffic


class Sticky(Model):
    header: StickyHeader | None = None
    cookie: Annotated[str, PlainValidator(lambda v: names.check_safe_value(v, "cookie name")),
                      WithJsonSchema({"type": "string"})] | None = None

    @model_validator(mode="after")
    def _one(self) -> Sticky:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("give exactly one of `header` or `cookie` (or `sticky: none`)")
        return self


def _none_word(value: Any) -> Any:
    return None if value == "none" else value


class Testers(Model):
    header: TesterHeader
    values: list[SafeValue] = Field(min_length=1)


class GatewayRef(Model):
    name: DNSLabel
    namespace: DNSLabel | None = None
    section: DNSLabel | None = Field(None, description="sectionName of the Gateway listener.")


class HAProxySettings(Model):
    """Where the haproxy target's HAProxy keeps its exporter and its admin socket."""

    exporter_port: int = Field(8405, ge=1, le=65535, description="Port of HAProxy's Prometheus exporter frontend.")
    admin_socket: SecretFile = Field("/run/haproxy/admin.sock", description="Path of the Runtime API socket.")
    hosts: list[Annotated[str, _checked(names.check_hostname), _string(maxLength=253)]] = Field(
        default_factory=lambda: ["localhost"], min_length=1, max_length=64,
        description="Where HAProxy runs: the generated scrape job reads HOST:exporter_port.")


class IstioSettings(Model):
    """What the istio target binds besides the mesh."""

    gateways: list[Annotated[str, _checked(names.check_istio_gateway), _string(maxLength=127)]] = Field(
        default_factory=list, max_length=8,
        description="Istio Gateways (`name` or `namespace/name`) whose traffic for service.host is split too: a "
        "second VirtualService binds them.")


class Traffic(Model):
    haproxy: HAProxySettings = Field(default_factory=HAProxySettings)
    istio: IstioSettings = Field(default_factory=IstioSettings)
    targets: list[routers.Router] = Field(
        default_factory=list,
        description="Routers to compile for. Empty: the stages are realised by flags that follow the stage.",
    )
    sticky: Annotated[
        Sticky | None, BeforeValidator(_none_word, json_schema_input_type=Union[Literal["none"], Sticky, None])
    ] = None
    testers: Testers | None = None
    gateway: GatewayRef | None = Field(None, description="The Gateway an HTTPRoute attaches to (gateway-api).")
    ingress_class: DNSLabel = Field("nginx", description="spec.ingressClassName of generated Ingresses.")


# --------------------------------------------------------------------------- metrics


class CustomQueries(Model):
    """PromQL templates; $variant, $version, $backend, $namespace, $window and (latency) $quantile are substituted."""

    requests: PromQL = Field(description="Requests per second of one variant over $window.")
    errors: PromQL = Field(description="Failed requests per second of one variant over $window.")
    latency: PromQL | None = Field(None, description="The $quantile latency of one variant over $window, in seconds.")


class Monitor(Model):
    """A Prometheus Operator ServiceMonitor or PodMonitor for the application's own metrics (source generic)."""

    kind: Literal["ServiceMonitor", "PodMonitor"] = "ServiceMonitor"
    selector: dict[LabelKey, LabelValue] = Field(min_length=1, description="Labels of the Services (or Pods).")
    port: DNSLabel = Field(description="The name of the port serving the metrics (a Service port's name for a "
                           "ServiceMonitor, a container port's, at most 15 characters, for a PodMonitor).")
    path: UrlPath = "/metrics"

    @model_validator(mode="after")
    def _container_port(self) -> Monitor:
        if self.kind == "PodMonitor":
            names.check_port_name(self.port, "port")
        return self


class Metrics(Model):
    source: Literal["generic", "ingress-nginx", "istio", "haproxy", "custom"] = "generic"
    scrape_interval: Annotated[int, PlainValidator(_window), _string(pattern=r"^([0-9]+(ms|s|m|h|d|w))+$")] = Field(
        15, description="How often Prometheus scrapes the series the gates read (windows need four scrapes).")
    evaluation_interval: Annotated[int, PlainValidator(_window), _string(pattern=r"^([0-9]+(ms|s|m|h|d|w))+$")] = Field(
        15, description="How often the rule group is evaluated (its `interval`).")
    monitor: Monitor | None = Field(None, description="Generate a ServiceMonitor or PodMonitor for the application.")
    min_requests: int = Field(
        100, ge=1, le=1_000_000, description="Fewer requests than this in a gate's window: the gate cannot judge."
    )
    expected_rps: float | None = Field(None, gt=0, description="Requests per second the whole service receives.")
    window: WindowDuration = Field(300, description="Default window of every gate (at most 1d).")
    namespace_label: Literal["namespace", "exported_namespace"] = Field(
        "namespace", description="generic, ingress-nginx, haproxy: the label holding the rollout's namespace; "
        "exported_namespace when Prometheus scrapes an exporter that sets `namespace` itself without honor_labels "
        "(the ingress-nginx chart's ServiceMonitor default).")
    workload_label: Annotated[str, _checked(names.check_prom_label), _string(pattern=names.PROM_LABEL_NAME.pattern)] = (
        Field("service", description="generic: the label naming the workload (a ServiceMonitor sets `service` to the "
              "Kubernetes Service's name, `job` to the job label's value)."))
    workload: Literal["name", "backend"] = Field(
        "name", description="generic: what the workload label holds: the rollout's name (one workload, versions told "
        "apart by `version`), or each variant's backend Service (a Deployment and Service per variant, each scraped "
        "by a ServiceMonitor; no `version` label needed).")
    custom: CustomQueries | None = None


# --------------------------------------------------------------------------- gates


def _shorthand(value: Any) -> Any:
    """``"< 1%"`` -> ``{"max": "1%"}``; mappings pass through."""
    if isinstance(value, str):
        text = value.strip()
        for prefix in ("<=", "<"):
            if text.startswith(prefix):
                return {"max": text[len(prefix):].strip()}
        raise ValueError(f"'{value}' is not a gate: write '< THRESHOLD' or a mapping {{max, for, window}}")
    return value


OnBreach = Literal["rollback", "hold", "alert"]


class _Gate(Model):
    for_: WindowDuration | None = Field(
        None, alias="for",
        description="How long the breach must last before it fires (default 0 for error-rate, latency and ratio "
        "gates, whose confidence bound already demands evidence; 60s for custom gates; at most 1d).",
    )
    window: WindowDuration | None = Field(
        None, description="The range the rate is measured over (default metrics.window; at most 1d)."
    )
    severity: Literal["critical", "warning", "info"] | None = None
    on_breach: OnBreach | None = Field(
        None, description="What a breach of this gate does (default: the stage's on_breach).")


class ErrorRateGate(_Gate):
    max: Percent


class LatencyGate(_Gate):
    max: Latency


class RatioGate(_Gate):
    max: Ratio = Field(description="The canary's error ratio may be at most this many times the stable one's.")


class CustomGate(_Gate):
    query: PromQL = Field(
        description="PromQL giving one value; $variant/$version/$backend/$namespace/$window are substituted.")
    max: Number | None = None
    min: Number | None = None
    description: Text | None = None

    @model_validator(mode="after")
    def _bound(self) -> CustomGate:
        if (self.max is None) == (self.min is None):
            raise ValueError("a custom gate needs exactly one of `max` or `min`")
        return self


_SHORTHAND = Annotated[
    str, WithJsonSchema({"type": "string", "pattern": r"^\s*<=?\s*\S+", "description": "'< THRESHOLD'"})
]


def _shorthand_of(cls: type[Model]) -> BeforeValidator:
    """A gate written as ``"< THRESHOLD"`` or as its mapping."""
    return BeforeValidator(_shorthand, json_schema_input_type=Union[_SHORTHAND, cls])


GateKey = Annotated[
    str, _checked(lambda v: names.check_flag_key(v, "gate name")), _string(pattern=names.FLAG_KEY.pattern)
]


class Gates(Model):
    error_rate: Annotated[ErrorRateGate, _shorthand_of(ErrorRateGate)] | None = None
    p95_latency: Annotated[LatencyGate, _shorthand_of(LatencyGate)] | None = None
    p99_latency: Annotated[LatencyGate, _shorthand_of(LatencyGate)] | None = None
    error_rate_vs_stable: Annotated[RatioGate, _shorthand_of(RatioGate)] | None = None
    custom: dict[GateKey, CustomGate] = Field(default_factory=dict)


# --------------------------------------------------------------------------- stages and strategies


class Stage(Model):
    name: StageName
    weight: Percent | None = Field(None, description="Share of live traffic on the canary.")
    mirror: Percent | None = Field(None, description="Share of traffic mirrored to the canary (a shadow stage).")
    hold: Duration | None = Field(None, description="How long the stage runs before it may advance.")
    approve: Literal["manual"] | None = Field(
        None, description="manual: a person approves the stage (`rollout approve`) before it may advance.")
    gates: Gates | None = None
    on_breach: OnBreach = "rollback"


Approve = list[StageName]


class Step(Model):
    """A weighted step with its own hold."""

    weight: Percent
    hold: Duration | None = Field(None, description="How long this step runs (default: the strategy's hold).")


def _step(value: Any) -> Any:
    """A bare percentage is a step with the strategy's hold."""
    return value if isinstance(value, (dict, Step)) else {"weight": value}


StepEntry = Annotated[Step, BeforeValidator(_step, json_schema_input_type=Union[Percent, Step])]


class PresetStrategy(Model):
    preset: Literal["safe", "fast", "instant", "custom"]
    steps: list[StepEntry] | None = Field(
        None, description="Canary weights of a custom preset, e.g. [5, 20, 100]; a step may be {weight, hold}.")
    hold: Duration | None = Field(None, description="Hold of every step (safe/fast/custom: 5m, instant: 1m).")
    shadow: Duration | None = Field(None, description="Prepend a 100% shadow stage of this length.")
    gates: Gates | None = None
    on_breach: OnBreach = "rollback"
    final_on_breach: OnBreach | None = Field(None, description="on_breach of the last (100%) stage.")
    approve: Approve = Field(default_factory=list, description="Stages a person approves before they may advance.")


class BlueGreen(Model):
    selector: dict[LabelKey, LabelValue] = Field(min_length=1, description="Pod labels common to both colours.")
    color_label: LabelKey = "version"
    active: Literal["blue", "green"] = Field("blue", description="The colour serving users before this release.")
    preview: Duration = Field(description="How long testers alone use the new colour.")
    steps: list[StepEntry] = Field(
        default_factory=list, description="Optional weighted steps before the switch; a step may be {weight, hold}.")
    hold: Duration | None = Field(None, description="Hold of each weighted step.")
    switch_hold: Duration | None = Field(None, description="How long the switched stage is watched.")
    gates: Gates | None = None
    on_breach: OnBreach = "rollback"
    approve: Approve = Field(default_factory=list, description="Stages a person approves before they may advance.")


class BlueGreenStrategy(Model):
    blue_green: BlueGreen = Field(alias="blue-green")


def _strategy_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "blue-green" in value or "blue_green" in value:
            return "<blue-green>"
        return "<preset>"
    if isinstance(value, (PresetStrategy, BlueGreenStrategy)):
        return "<blue-green>" if isinstance(value, BlueGreenStrategy) else "<preset>"
    return None


STRATEGY_TAGS = {"<preset>": PresetStrategy, "<blue-green>": BlueGreenStrategy}
Strategy = Annotated[
    Annotated[PresetStrategy, Tag("<preset>")] | Annotated[BlueGreenStrategy, Tag("<blue-green>")],
    Discriminator(
        _strategy_kind,
        custom_error_type="strategy",
        custom_error_message="strategy must be {preset: ...} or {blue-green: ...}",
    ),
]


# --------------------------------------------------------------------------- flags


def _parse_rollout(value: Any) -> Fraction | str:
    if value == "follow-stage":
        return "follow-stage"
    try:
        return units.parse_percent(value)
    except ValueError as exc:
        raise ValueError(f"rollout is 'follow-stage' or a percentage; {exc}") from None


Rollout = Annotated[
    Any,
    PlainValidator(_parse_rollout),
    WithJsonSchema({"anyOf": [{"const": "follow-stage"}, _PERCENT_SCHEMA]}),
]


class Flag(Model):
    rollout: Rollout | None = Field(
        None, description="'follow-stage' (the canary weight of the stage in effect) or a fixed percentage."
    )
    allow: list[SafeValue] = Field(default_factory=list, description="Targeting keys that always get the flag.")
    requires: list[FlagKey] = Field(default_factory=list, description="Flags that must be on for this one to be on.")
    env: EnvVar | None = Field(None, description="Environment variable that overrides the flag in the application.")
    kill_switch: bool = Field(False, description="This flag, when engaged, forces the flags it kills off.")
    kills: list[FlagKey] | None = Field(None, description="Flags a kill switch forces off (default: all others).")
    engaged: bool = Field(False, description="A kill switch pulled now.")
    engage_on_rollback: bool = Field(False, description="A kill switch pulled by `current: rollback`.")
    description: Text | None = None


# --------------------------------------------------------------------------- alerting


def _no_inline_secrets(**secrets: str) -> Any:
    """A before-validator that turns a secret written inline into a pointed message."""

    def check(value: Any) -> Any:
        if isinstance(value, dict):
            for key, instead in secrets.items():
                if key in value:
                    raise ValueError(
                        f"`{key}` would put a secret into the spec and the generated files: "
                        f"use `{instead}`, a file Alertmanager reads (e.g. a mounted Kubernetes Secret)"
                    )
        return value

    return model_validator(mode="before")(check)


def _check_secret_key(value: str) -> str:
    import re

    if not re.fullmatch(r"^[-._a-zA-Z0-9]{1,253}$", value):
        raise ValueError(f"'{value}' is not a Secret key: letters, digits, '-', '_' and '.'")
    return value


SecretKey = Annotated[str, _checked(_check_secret_key), _string(pattern=r"^[-._a-zA-Z0-9]+$", maxLength=253)]


class SecretRef(Model):
    """A key of a Kubernetes Secret in the rollout's namespace (read by the Prometheus Operator)."""

    name: Annotated[str, _checked(names.check_dns1123_subdomain),
                    _string(pattern=names.DNS1123_SUBDOMAIN.pattern, maxLength=253)]
    key: SecretKey


class PagerDuty(Model):
    routing_key_file: SecretFile
    routing_key_secret: SecretRef | None = Field(
        None, description="The same key in a Secret, for the AlertmanagerConfig (alerting.operator).")

    _secrets = _no_inline_secrets(routing_key="routing_key_file", service_key="routing_key_file")


class Slack(Model):
    channel: SlackChannel
    api_url_file: SecretFile
    api_url_secret: SecretRef | None = Field(
        None, description="The same URL in a Secret, for the AlertmanagerConfig (alerting.operator).")

    _secrets = _no_inline_secrets(api_url="api_url_file")


class EmailReceiver(Model):
    to: Email
    from_: Email | None = Field(None, alias="from")
    smarthost: HostPort | None = None
    auth_username: Text | None = None
    auth_password_file: SecretFile | None = None
    auth_password_secret: SecretRef | None = Field(
        None, description="The same password in a Secret, for the AlertmanagerConfig (alerting.operator).")

    _secrets = _no_inline_secrets(auth_password="auth_password_file", auth_secret="auth_password_file")


class Webhook(Model):
    url: WebhookUrl | None = None
    url_file: SecretFile | None = None
    url_secret: SecretRef | None = Field(
        None, description="The URL in a Secret, for the AlertmanagerConfig (alerting.operator).")
    bearer_token_file: SecretFile | None = Field(
        None, description="A bearer token Alertmanager sends (http_config.authorization.credentials_file).")
    bearer_token_secret: SecretRef | None = Field(
        None, description="The same token in a Secret, for the AlertmanagerConfig (alerting.operator).")

    @model_validator(mode="after")
    def _one(self) -> Webhook:
        if sum(x is not None for x in (self.url, self.url_file, self.url_secret)) != 1:
            raise ValueError("give exactly one of `url`, `url_file` or `url_secret`")
        return self


class Receiver(Model):
    pagerduty: PagerDuty | None = None
    slack: Slack | None = None
    email: EmailReceiver | None = None
    webhook: Webhook | None = None

    @model_validator(mode="after")
    def _some(self) -> Receiver:
        if not any((self.pagerduty, self.slack, self.email, self.webhook)):
            raise ValueError("a receiver needs at least one of pagerduty, slack, email, webhook")
        return self


class Routes(Model):
    critical: list[ReceiverName] = Field(default_factory=list)
    warning: list[ReceiverName] = Field(default_factory=list)
    info: list[ReceiverName] = Field(default_factory=list)
    rollback: list[ReceiverName] = Field(default_factory=list, description="Receivers of action=rollback alerts.")


class Alerting(Model):
    receivers: dict[ReceiverName, Receiver] = Field(min_length=1)
    routes: Routes
    grafana_url: Url | None = Field(None, description="Base URL of Grafana, for dashboard links in alerts.")
    operator: bool = Field(False, description="Also write an AlertmanagerConfig (Prometheus Operator) in the rollout's "
                                              "namespace; receivers then need their `*_secret` references.")


# --------------------------------------------------------------------------- rollback and gitops


class Rollback(Model):
    within: WindowDuration = Field(
        300, description="Time budget from the decision to all traffic on stable (at most 1d).")
    preserve: list[Text] = Field(default_factory=list, description="What to keep for the investigation.")


class ArgoCD(Model):
    repo_url: Url
    target_revision: Text = "main"
    project: DNSLabel = "default"
    namespace: DNSLabel = Field("argocd", description="Namespace of the Application object.")
    destination_server: Url = "https://kubernetes.default.svc"
    automated: bool = True


class Flux(Model):
    source: DNSLabel = Field(description="Name of the GitRepository source.")
    source_namespace: DNSLabel = "flux-system"
    namespace: DNSLabel = Field("flux-system", description="Namespace of the Kustomization object.")
    interval: Duration = 300
    prune: bool = True


class GitOps(Model):
    path: UrlPath = Field("/generated", description="Where the compiled tree lives in the repository.")
    argocd: ArgoCD | None = None
    flux: Flux | None = None

    @model_validator(mode="after")
    def _one(self) -> GitOps:
        if (self.argocd is None) == (self.flux is None):
            raise ValueError("give exactly one of `argocd` or `flux`")
        return self


# --------------------------------------------------------------------------- the spec


class Metadata(Model):
    name: RolloutName
    namespace: DNSLabel
    owner: Text
    runbook: Url | None = None
    labels: dict[ExtraLabelKey, LabelValue] = Field(
        default_factory=dict,
        description="Extra labels on every Kubernetes object (e.g. a PrometheusRule selector's `release`); not "
                    "those rollout sets (app.kubernetes.io/name, managed-by and component, rollout-compiler.dev/*, "
                    "grafana_dashboard).",
    )


class Approval(Model):
    """Written by `rollout approve`: a person let the stage advance."""

    stage: StageName
    by: Text
    at: Annotated[str, _checked(units.check_timestamp), _string(format="date-time")]


class RolloutSpec(Model):
    """One service's progressive delivery: how a new version goes live."""

    model_config = ConfigDict(title="Rollout", json_schema_extra={"$id": "https://rollout-compiler.dev/schema/rollout.schema.json"})

    schema_: str | None = Field(None, alias="$schema", description="Ignored; for editors.")
    api_version: Literal["rollout-compiler/v1"] = Field(alias="apiVersion")
    kind: Literal["Rollout"]
    metadata: Metadata
    service: Service
    traffic: Traffic
    metrics: Metrics = Field(default_factory=Metrics)
    stages: list[Stage] | None = None
    strategy: Strategy | None = None
    current: Annotated[str, WithJsonSchema({"type": "string", "description": "A stage name, or 'rollback'."})]
    approved: Approval | None = Field(None, description="The last approval (`rollout approve`); it lets the stage it "
                                      "names advance.")
    flags: dict[FlagKey, Flag] = Field(default_factory=dict, max_length=256,
                                       description="Feature flags (at most 256 per spec).")
    alerting: Alerting | None = None
    rollback: Rollback = Field(default_factory=Rollback)
    gitops: GitOps | None = None
    environments: dict[DNSLabel, dict[str, Any]] | None = Field(
        None, description="Per-environment overrides merged over this spec (mappings merge, stage lists merge by name)."
    )


def json_schema() -> dict[str, Any]:
    schema = RolloutSpec.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    _spelled_defaults(schema)
    return schema


def _spelled_defaults(node: Any) -> None:
    """Defaults as a spec writes them: a duration field's default of 300 (seconds, as the model holds it) is
    ``"5m"`` in the schema, which its own pattern accepts."""
    if isinstance(node, dict):
        default = node.get("default")
        if node.get("type") == "string" and isinstance(default, int) and not isinstance(default, bool):
            node["default"] = units.format_duration(default)
        for value in node.values():
            _spelled_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _spelled_defaults(value)
