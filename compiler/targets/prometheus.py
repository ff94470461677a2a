"""Placeholder of the prometheus target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("prometheus", lambda plan: {})
