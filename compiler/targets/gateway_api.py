"""Placeholder of the gateway_api target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("gateway-api", lambda plan: {})
