"""Placeholder of the alertmanager target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("alertmanager", lambda plan: {})
