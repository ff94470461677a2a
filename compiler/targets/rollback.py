"""Placeholder of the rollback target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("rollback", lambda plan: {})
