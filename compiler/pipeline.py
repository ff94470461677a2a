"""The compiler's driver: paths -> documents -> specs -> plans -> files.

Each spec file is loaded, validated and planned on its own; an error in one
file never hides the errors of another, and no state is shared between them.
Fleet targets run last, over every plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable

from . import plan as planner
from . import rules, spec as specs
from .diagnostics import Diagnostic, SpecError, has_errors
from .load import Document, display_path, load_file
from .plan import ROLLBACK, Plan
from .targets import FLEET, REGISTRY, SUMMARIES, Files, Rendered

SPEC_SUFFIXES = (".yaml", ".yml")
FLEET_DIR = "_fleet"


@dataclass
class Unit:
    """One compilable rollout: a spec (or one environment of it), its document and its plan."""

    variant: specs.Variant
    plan: Plan

    @property
    def doc(self) -> Document:
        return self.variant.doc


@dataclass
class Result:
    units: list[Unit] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: Files = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)


def collect(paths: Iterable[str | Path]) -> tuple[list[Path], list[Diagnostic]]:
    """Spec files named by ``paths`` (directories are searched recursively), sorted."""
    found: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                p for p in path.rglob("*") if p.is_file() and p.suffix in SPEC_SUFFIXES and not _hidden(p, path)
            )
        elif path.is_file():
            found.append(path)
        else:
            problems.append(Diagnostic(display_path(path), 1, 1, "error", "no such file or directory", "io"))
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: display_path(p))
    return unique, problems


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def analyse_file(path: Path) -> tuple[list[Unit], list[Diagnostic]]:
    """Load, validate, check and plan one file; never raises for bad input."""
    try:
        doc = load_file(path)
        variants = specs.expand(doc)
    except SpecError as exc:
        return [], list(exc.diagnostics)
    diagnostics: list[Diagnostic] = []
    units: list[Unit] = []
    for variant in variants:
        found = rules.check(variant.spec, variant.doc)
        if variant.environment:
            found = [_in_env(d, variant.environment) for d in found]
        diagnostics.extend(found)
        if has_errors(found):
            continue
        source = planner.Source(doc.path, doc.sha256)
        plan = planner.build(variant.spec, source, variant.environment)
        unit = Unit(variant, plan)
        lint = lint_targets(unit)
        diagnostics.extend(lint)
        if not has_errors(lint):
            units.append(unit)
    return units, _unique(diagnostics)


def _in_env(d: Diagnostic, env: str) -> Diagnostic:
    return Diagnostic(d.path, d.line, d.col, d.severity, f"{d.message} (environment '{env}')", d.code)


def _unique(items: list[Diagnostic]) -> list[Diagnostic]:
    seen: dict[tuple, Diagnostic] = {}
    for item in items:
        seen.setdefault((item.path, item.line, item.col, item.severity, item.message), item)
    return sorted(seen.values())


def lint_targets(unit: Unit) -> list[Diagnostic]:
    out = []
    for target in REGISTRY:
        if target.lint is None:
            continue
        for finding in target.lint(unit.plan):
            message = finding.message
            if unit.plan.environment:
                message = f"{message} (environment '{unit.plan.environment}')"
            line, col = unit.doc.locate(finding.loc)
            out.append(Diagnostic(unit.doc.path, line, col, finding.severity, message, finding.code))
    return out


def analyse(paths: Iterable[str | Path]) -> Result:
    files, problems = collect(paths)
    result = Result(diagnostics=list(problems))
    if not files and not problems:
        result.diagnostics.append(Diagnostic("-", 1, 1, "error", "no spec files (*.yaml, *.yml) found", "io"))
    for path in files:
        units, diagnostics = analyse_file(path)
        result.units.extend(units)
        result.diagnostics.extend(diagnostics)
    result.diagnostics.extend(_duplicates(result.units))
    return result


def _duplicates(units: list[Unit]) -> list[Diagnostic]:
    first: dict[str, Unit] = {}
    out = []
    for unit in units:
        key = unit.plan.out
        if key in first:
            other = first[key]
            out.append(unit.doc.error(("metadata", "name"),
                                      f"rollout {key} is also defined in {other.doc.path}: each namespace/name (and environment) must be unique",
                                      "fleet"))
        else:
            first[key] = unit
    return out


# --------------------------------------------------------------------------- rendering


def render_targets(plan: Plan) -> Files:
    """Every target's files for this plan's stage in effect, plus ``rollback/``."""
    files: Files = {}
    for target in REGISTRY:
        _merge(files, target.render(plan), target.name)
    rollback_plan = plan.at(ROLLBACK)
    for target in REGISTRY:
        if target.rollback:
            _merge(files, {f"rollback/{k}": v for k, v in target.render(rollback_plan).items()}, target.name)
    return files


def _primary(plan: Plan) -> Files:
    files: Files = {}
    for target in REGISTRY:
        _merge(files, target.render(plan), target.name)
    return files


def _merge(into: Files, new: Files, owner: str) -> None:
    for path, text in new.items():
        _check_relative(path, owner)
        if path in into:
            raise RuntimeError(f"target {owner} writes {path}, which another target already wrote")
        into[path] = text


def _check_relative(path: str, owner: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RuntimeError(f"target {owner} produced an unsafe path {path!r}")


def render_unit(plan: Plan) -> Files:
    files = render_targets(plan)
    rendered = Rendered(plan, dict(files), _primary)
    for summary in SUMMARIES:
        _merge(files, summary.render(rendered), summary.name)
    return {f"{plan.out}/{path}": text for path, text in files.items()}


def compile_paths(paths: Iterable[str | Path]) -> Result:
    result = analyse(paths)
    if not result.ok:
        return result
    files: Files = {}
    for unit in result.units:
        files.update(render_unit(unit.plan))
    plans = [u.plan for u in result.units]
    for fleet in FLEET:
        for path, text in fleet.render(plans, files).items():
            _check_relative(path, fleet.name)
            files[f"{FLEET_DIR}/{path}"] = text
    result.files = dict(sorted(files.items()))
    return result
