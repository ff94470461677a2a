"""kube-service: the two Services of a blue-green rollout.

- The active Service (``service.stable.backend``) is the one users reach.  It
  selects ``strategy.blue-green.selector`` plus ``<color_label>: <colour>``,
  the old colour until the ``switch`` stage, the new one from then on, and the
  old one again in the rollback state.
- The preview Service (``service.canary.backend``) always selects the new
  colour.  The routers send testers, and the weighted steps before the switch,
  to it.

Ports: each Service listens on its variant's port (``service.port`` unless the
variant overrides it, the port the routers use) and forwards to
``service.target_port``.  Nothing is rendered for a canary rollout.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from compiler.targets import kube
from compiler.ir.plan import Plan, VariantPlan
from compiler.spec.units import format_percent
from compiler.targets.base import Target

NAME = "kube-service"


def render(plan: Plan) -> dict[str, str]:
    if plan.blue_green is None:
        return {}
    note = _note(plan)
    return {
        f"{NAME}/service-active.yaml": kube.manifest(plan, active_service(plan), note),
        f"{NAME}/service-preview.yaml": kube.manifest(plan, preview_service(plan), note),
    }


def selector(plan: Plan, colour: str) -> dict[str, str]:
    assert plan.blue_green is not None
    return {**dict(plan.blue_green.selector), plan.blue_green.color_label: colour}


def active_colour(plan: Plan) -> str:
    assert plan.blue_green is not None
    return plan.current.active_color or plan.blue_green.old_color


def active_service(plan: Plan) -> dict[str, Any]:
    return _service(plan, plan.names.active_service, plan.stable, active_colour(plan))


def preview_service(plan: Plan) -> dict[str, Any]:
    assert plan.blue_green is not None
    return _service(plan, plan.names.preview_service, plan.canary, plan.blue_green.new_color)


def _service(plan: Plan, name: str, variant: VariantPlan, colour: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": kube.metadata(plan, name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(plan, colour),
            "ports": [{"name": "http", "protocol": "TCP", "port": variant.port, "targetPort": plan.target_port}],
        },
    }


def _note(plan: Plan) -> str:
    assert plan.blue_green is not None
    bg = plan.blue_green
    stage = plan.current
    colour = active_colour(plan)
    switched = colour == bg.new_color
    serving = plan.canary.version if switched else plan.stable.version
    through_service = (1 - stage.route_weight) if switched else Fraction(0)
    realised = stage.route_weight + through_service
    error = "exact" if realised == stage.weight else f"error {format_percent(realised - stage.weight)}"
    return "\n".join([
        f"Blue-green Services at stage '{stage.name}' ({stage.kind}).",
        f"{plan.names.active_service} selects {bg.color_label}={colour} ({serving}); "
        f"{plan.names.preview_service} selects {bg.color_label}={bg.new_color} ({plan.canary.version}).",
        f"Users on the new version: {format_percent(realised)} = {format_percent(stage.route_weight)} routed to "
        f"{plan.names.preview_service} + {format_percent(through_service)} through {plan.names.active_service} "
        f"(spec {format_percent(stage.weight)}, {error}).",
    ])


TARGET = Target(NAME, render, rollback=True)
