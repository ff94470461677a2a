"""Placeholder of the haproxy target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("haproxy", lambda plan: {})
