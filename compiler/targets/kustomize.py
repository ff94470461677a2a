"""Placeholder of the kustomize target, replaced by its implementation."""

from __future__ import annotations

from . import FleetTarget, Summary

SUMMARY = Summary("kustomize", lambda rendered: {})
FLEET = FleetTarget("kustomize-fleet", lambda plans, files: {})
