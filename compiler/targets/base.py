"""targets: one module per output kind, each a pure function of the plan.

Three kinds of target:

- :class:`Target`: ``render(plan) -> {relative path: text}`` for one rollout,
  with an optional ``lint(plan) -> [Finding]`` for what this output cannot
  honour.  ``rollback=True`` targets are rendered a second time with every
  route on stable, into ``rollback/``.
- :class:`Summary`: reads what the targets produced for the same rollout
  (``kustomization.yaml`` lists the Kubernetes files by their kind; ``PLAN.md``
  lists what each stage changes, from the targets' stage keys).
- :class:`FleetTarget`: one output for every rollout compiled together, under
  ``_fleet/``.

Paths are relative to the rollout's folder (``[env/]namespace/name/``), or to
``_fleet/`` for fleet targets.  No target imports another target.  Adding a
target is one module and one line in :mod:`compiler.targets.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from compiler.ir.fleet import FleetEntry
from compiler.diagnostics import Severity
from compiler.ir.plan import Loc, Plan, StagePlan

Files = dict[str, str]

# What a generated file is, for the kustomization that lists what a GitOps controller applies.
MANIFEST = "manifest"  # Kubernetes objects: kustomize resources
CONTROLLER = "controller"  # the GitOps controller's own object (an Argo CD Application, a Flux Kustomization)
CONFIG = "config"  # a configuration file no generated ConfigMap carries: wrapped by a configMapGenerator
CARRIED = "carried"  # a configuration file a generated ConfigMap of the same target already carries
OTHER = "other"  # documentation, tests, operator commands: applied nowhere
KINDS = (MANIFEST, CONTROLLER, CONFIG, CARRIED, OTHER)

StageKeys = Callable[[Plan, StagePlan], Mapping[str, Hashable]]


@dataclass(frozen=True)
class Finding:
    """A lint result of one target, located at a part of the spec."""

    loc: Loc
    message: str
    severity: Severity = "error"
    code: str = "target"


@dataclass(frozen=True)
class Target:
    """One output kind.

    ``kinds`` says what each file it may write is.  ``stage_keys`` says, for each file whose content
    depends on the stage in effect, what it depends on: two stages with equal keys give the file the
    same bytes (a test renders every stage to hold it to that).  Files it leaves out do not depend on
    the stage.
    """

    name: str
    render: Callable[[Plan], Files]
    lint: Callable[[Plan], list[Finding]] | None = None
    rollback: bool = False  # also rendered with the rollback state into rollback/
    kinds: Mapping[str, str] = field(default_factory=dict)
    stage_keys: StageKeys | None = None

    def keys(self, plan: Plan, stage: StagePlan) -> Mapping[str, Hashable]:
        return self.stage_keys(plan, stage) if self.stage_keys is not None else {}


@dataclass(frozen=True)
class Rendered:
    """What the targets wrote for one rollout, for summaries to read."""

    plan: Plan
    files: Mapping[str, str]  # paths relative to the rollout's folder, rollback/ included
    kinds: Mapping[str, str]  # what each of those files is
    keys: Callable[[StagePlan], Mapping[str, Hashable]]  # each live file's stage key with a stage in effect


@dataclass(frozen=True)
class Summary:
    name: str
    render: Callable[[Rendered], Files]


@dataclass(frozen=True)
class FleetTarget:
    """One output for every rollout of the output folder: ``render(entries, kinds)``, ``kinds`` being what the
    fleet files written before it are (paths relative to ``_fleet/``)."""

    name: str
    render: Callable[[Sequence[FleetEntry], Mapping[str, str]], Files]
    kinds: Mapping[str, str] = field(default_factory=dict)
