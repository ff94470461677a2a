"""Placeholder of the kustomize target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("kustomize", lambda plan: {})
