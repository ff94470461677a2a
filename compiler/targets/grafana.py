"""Placeholder of the grafana target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("grafana", lambda plan: {})
