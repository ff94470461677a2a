"""Placeholder of the grafana target, replaced by its implementation."""

from __future__ import annotations

from . import FleetTarget, Target

TARGET = Target("grafana", lambda plan: {})
FLEET = FleetTarget("grafana-fleet", lambda plans, files: {})
