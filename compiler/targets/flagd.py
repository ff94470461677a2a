"""Placeholder of the flagd target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("flagd", lambda plan: {})
