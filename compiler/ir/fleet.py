"""What the fleet-wide files need to know about one rollout.

A :class:`FleetEntry` comes from a rollout's plan when it is compiled, and from
its bookkeeping on disk (``.rollout-manifest``, where it is recorded as JSON)
when it is not: a compile of some specs writes fleet files that still list every
rollout of the output folder, without loading the other specs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Any

from compiler.ir.plan import (
    AlertingPlan,
    EmailPlan,
    PagerDutyPlan,
    Plan,
    ReceiverPlan,
    SecretPlan,
    SlackPlan,
    WebhookPlan,
)


@dataclass(frozen=True)
class FleetEntry:
    out: str  # the rollout's folder: [environment/]namespace/name
    name: str
    namespace: str
    environment: str | None
    stage: str
    weight: Fraction  # the canary's share of live traffic at that stage
    dashboard_uid: str
    alerting: AlertingPlan | None
    controller_folder: str | None  # the sub-folder holding its GitOps controller object, if any
    objects: tuple[str, ...] = ()  # ``Kind/namespace/name`` of every object its folder applies
    routes: tuple[str, ...] = ()  # the host and path it routes through each cluster router (see :func:`routes`)

    def for_fleet(self) -> FleetEntry:
        """What the fleet files may read: everything but the stage, so that a promote never changes them (and a
        compile of a promoted rollout need not render them)."""
        return replace(self, stage="", weight=Fraction(0))

    @classmethod
    def of(cls, plan: Plan, controller_folder: str | None, objects: tuple[str, ...] = ()) -> FleetEntry:
        return cls(plan.out, plan.name, plan.namespace, plan.environment, plan.current.name, plan.current.weight,
                   plan.names.dashboard_uid, plan.alerting, controller_folder, objects, routes(plan))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["weight"] = f"{self.weight.numerator}/{self.weight.denominator}"
        if self.alerting is not None:
            data["alerting"] = {
                "receivers": [[name, _compact(asdict(r))] for name, r in self.alerting.receivers],
                "routes": [[key, list(names)] for key, names in self.alerting.routes],
                "grafana_url": self.alerting.grafana_url,
                "operator": self.alerting.operator,
            }
        return data

    @classmethod
    def from_json(cls, data: Any) -> FleetEntry:
        """An entry as :meth:`to_json` wrote it; ``ValueError`` for anything else."""
        try:
            alerting = None
            if data["alerting"] is not None:
                a = data["alerting"]
                alerting = AlertingPlan(
                    receivers=tuple((str(name), _receiver(r)) for name, r in a["receivers"]),
                    routes=tuple((str(key), tuple(str(n) for n in names)) for key, names in a["routes"]),
                    grafana_url=a["grafana_url"],
                    operator=bool(a.get("operator", False)),
                )
            return cls(str(data["out"]), str(data["name"]), str(data["namespace"]), data["environment"],
                       str(data["stage"]), Fraction(data["weight"]), str(data["dashboard_uid"]), alerting,
                       data["controller_folder"], tuple(str(o) for o in data.get("objects", ())),
                       tuple(str(r) for r in data.get("routes", ())))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"not a fleet entry: {exc}") from None


def routes(plan: Plan) -> tuple[str, ...]:
    """What the rollout claims of each router it shares with other rollouts (``shared_by`` in the routers'
    table): ``ROUTER SCOPE HOST PATH``. Two rollouts with the same claim cannot both route: ingress-nginx's
    admission refuses the second Ingress of a host and path, a Gateway gives the match to the oldest HTTPRoute,
    Istio merges VirtualServices of a host in no order it promises."""
    from compiler.spec.routers import ROUTERS

    gateway = plan.gateway
    scopes: dict[str | None, str | None] = {
        "ingress class": plan.ingress_class,
        "gateway": f"{gateway.namespace or plan.namespace}/{gateway.name}/{gateway.section or ''}" if gateway else None,
        "mesh": "-",
        None: None,
    }
    return tuple(f"{target} {scope} {plan.host} {plan.path}" for target in plan.targets
                 if (scope := scopes[ROUTERS[target].shared_by]) is not None)


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _secret(data: Any) -> SecretPlan | None:
    return SecretPlan(str(data["name"]), str(data["key"])) if data else None


def _receiver(data: dict[str, Any]) -> ReceiverPlan:
    p, s, e, w = data.get("pagerduty"), data.get("slack"), data.get("email"), data.get("webhook")
    return ReceiverPlan(
        pagerduty=PagerDutyPlan(p["routing_key_file"], _secret(p.get("routing_key_secret"))) if p else None,
        slack=SlackPlan(s["channel"], s["api_url_file"], _secret(s.get("api_url_secret"))) if s else None,
        email=EmailPlan(e["to"], e.get("from_"), e.get("smarthost"), e.get("auth_username"),
                        e.get("auth_password_file"), _secret(e.get("auth_password_secret"))) if e else None,
        webhook=WebhookPlan(w.get("url"), w.get("url_file"), _secret(w.get("url_secret")), w.get("bearer_token_file"),
                            _secret(w.get("bearer_token_secret"))) if w else None,
    )
