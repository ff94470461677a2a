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

from typing import Any

from compiler.ir.plan import Plan, StagePlan, VariantPlan
from compiler.targets import kube
from compiler.targets.base import MANIFEST, Target

NAME = "kube-service"


ACTIVE = f"{NAME}/service-active.yaml"
PREVIEW = f"{NAME}/service-preview.yaml"


def render(plan: Plan) -> dict[str, str]:
    if plan.blue_green is None:
        return {}
    return {
        ACTIVE: kube.manifest(plan, active_service(plan), _active_note(plan)),
        PREVIEW: kube.manifest(plan, preview_service(plan), _preview_note(plan)),
    }


def stage_keys(plan: Plan, stage: StagePlan) -> dict[str, object]:
    if plan.blue_green is None:
        return {}
    return {ACTIVE: stage.active_color or plan.blue_green.old_color}


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


def _active_note(plan: Plan) -> str:
    assert plan.blue_green is not None
    bg = plan.blue_green
    colour = active_colour(plan)
    serving = plan.canary.version if colour == bg.new_color else plan.stable.version
    return (f"Blue-green: {plan.names.active_service}, the Service users reach, selects {bg.color_label}={colour} "
            f"({serving}).")


def _preview_note(plan: Plan) -> str:
    assert plan.blue_green is not None
    bg = plan.blue_green
    return (f"Blue-green: {plan.names.preview_service} always selects the new colour, {bg.color_label}={bg.new_color} "
            f"({plan.canary.version}); " + ("the routers send testers and weighted steps to it." if plan.targets else
                                              "testers call it directly (no router in front)."))


TARGET: Target = Target(NAME, render, rollback=True, kinds={ACTIVE: MANIFEST, PREVIEW: MANIFEST}, stage_keys=stage_keys)
