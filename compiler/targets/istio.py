"""Placeholder of the istio target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("istio", lambda plan: {})
