"""Placeholder of the ingress_nginx target, replaced by its implementation."""

from __future__ import annotations

from . import Target

TARGET = Target("ingress-nginx", lambda plan: {})
