"""Placeholder of the nginx target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("nginx", lambda plan: {})
