"""Placeholder of the gitops target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("gitops", lambda plan: {})
