"""Placeholder of the alertmanager target, replaced by its implementation."""

from __future__ import annotations

from . import FleetTarget, Target

TARGET = Target("alertmanager", lambda plan: {})
FLEET = FleetTarget("alertmanager-fleet", lambda plans, files: {})
