"""targets: one module per output kind, each a pure function of the plan.

Three kinds of target:

- :class:`Target`: ``render(plan) -> {relative path: text}`` for one rollout,
  with an optional ``lint(plan) -> [Finding]`` for what this output cannot
  honour.  ``rollback=True`` targets are rendered a second time with every
  route on stable, into ``rollback/``.
- :class:`Summary`: reads what the targets produced for the same rollout
  (``kustomization.yaml`` lists the Kubernetes files; ``PLAN.md`` lists what
  each stage changes).
- :class:`FleetTarget`: one output for every rollout compiled together, under
  ``_fleet/``.

Paths are relative to the rollout's folder (``[env/]namespace/name/``), or to
``_fleet/`` for fleet targets.  No target imports another target.  Adding a
target is one module and one line in :mod:`compiler.targets.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from collections.abc import Callable, Mapping, Sequence

from compiler.spec.load import Loc
from compiler.ir.plan import ROLLBACK, Plan

Files = dict[str, str]


@dataclass(frozen=True)
class Finding:
    """A lint result of one target, located at a part of the spec."""

    loc: Loc
    message: str
    severity: str = "error"  # or "warning"
    code: str = "target"


@dataclass(frozen=True)
class Target:
    name: str
    render: Callable[[Plan], Files]
    lint: Callable[[Plan], list[Finding]] | None = None
    rollback: bool = False  # also rendered with the rollback state into rollback/


@dataclass
class Rendered:
    """What the targets produced for one rollout, for summaries to read."""

    plan: Plan
    files: Files  # at the stage in effect, paths relative to the rollout's folder
    _render_at: Callable[[Plan], Files] = field(repr=False)

    @cached_property
    def by_stage(self) -> dict[str, Files]:
        """The targets' files with each stage (and ``rollback``) in effect."""
        names = [s.name for s in self.plan.stages] + [ROLLBACK]
        return {name: self._render_at(self.plan.at(name)) for name in names}


@dataclass(frozen=True)
class Summary:
    name: str
    render: Callable[[Rendered], Files]


@dataclass(frozen=True)
class FleetTarget:
    name: str
    render: Callable[[Sequence[Plan], Mapping[str, str]], Files]
