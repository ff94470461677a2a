"""Placeholder of the kube_service target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("kube-service", lambda plan: {})
