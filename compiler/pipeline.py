"""The compiler's driver: paths -> documents -> specs -> plans -> files.

Each spec file is loaded, validated, planned and rendered on its own (in
parallel processes with ``jobs``); an error in one file never hides the errors
of another, and no state is shared between them.  Fleet targets run last, over
every plan, in file order.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from compiler.ir import plan as planner
from compiler.spec import rules
from compiler.spec import environments as specs
from compiler.diagnostics import Diagnostic, SpecError, has_errors
from compiler.spec.load import Document, display_path, load_file
from compiler.ir.plan import ROLLBACK, Plan
from compiler.targets.base import Files, Rendered
from compiler.targets.registry import FLEET, REGISTRY, SUMMARIES

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


@dataclass(frozen=True)
class SpecPath:
    path: Path
    named: bool  # named on the command line, rather than found in a folder


def collect(paths: Iterable[str | Path]) -> tuple[list[SpecPath], list[Diagnostic]]:
    """Spec files named by ``paths`` (folders are searched recursively for *.yaml/*.yml), sorted."""
    found: dict[Path, SpecPath] = {}
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for p in path.rglob("*"):
                if p.is_file() and p.suffix in SPEC_SUFFIXES and not _hidden(p, path):
                    found.setdefault(p.resolve(), SpecPath(p, False))
        elif path.is_file():
            found[path.resolve()] = SpecPath(path, True)  # is_file: the path resolves, without a loop
        else:
            why = "not a regular file or folder" if path.exists() or path.is_symlink() else "no such file or directory"
            problems.append(Diagnostic(display_path(path), 1, 1, "error", why, "io"))
    return sorted(found.values(), key=lambda s: display_path(s.path)), problems


def _is_rollout(data: object) -> bool:
    """A document that means to be a Rollout spec (so that a typo in it is reported, not skipped)."""
    if not isinstance(data, dict):
        return False
    version = data.get("apiVersion")
    return data.get("kind") == "Rollout" or (isinstance(version, str) and version.startswith("rollout-compiler/"))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def source_path(path: Path, root: Path | None) -> str:
    """How generated files name their spec: relative to ``root`` (the output folder's parent) when inside it.

    Diagnostics name files relative to the working folder, for the user at the terminal; generated
    files must not depend on where the compile ran, or `rollout check` would see drift.
    """
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass  # a spec outside the folder holding the output: name it as the user did
    return display_path(path)


def analyse_file(path: Path, named: bool = True, root: Path | None = None) -> tuple[list[Unit], list[Diagnostic]]:
    """Load, validate, check and plan one file; never raises for bad input.

    A YAML file found in a folder that is not a Rollout spec (a kustomization, a
    compiled output) is skipped; a file named on the command line is always a spec.
    """
    try:
        doc = load_file(path)
        if not named and not _is_rollout(doc.data):
            return [], []
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
        source = planner.Source(source_path(path, root), doc.sha256)
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


@dataclass
class _FileOutcome:
    units: list[Unit]
    diagnostics: list[Diagnostic]
    files: Files


def _process(spec: SpecPath, render: bool, root: Path | None) -> _FileOutcome:
    units, diagnostics = analyse_file(spec.path, spec.named, root)
    files: Files = {}
    if render and not has_errors(diagnostics):
        for unit in units:
            files.update(render_unit(unit.plan))
    return _FileOutcome(units, diagnostics, files)


def _process_all(paths: Iterable[str | Path], render: bool, jobs: int,
                 root: Path | None = None) -> tuple[Result, list[_FileOutcome]]:
    """Every spec file on its own, in ``jobs`` processes; results in file order, so output never depends on jobs."""
    found, problems = collect(paths)
    result = Result(diagnostics=list(problems))
    if not found and not problems:
        result.diagnostics.append(Diagnostic("-", 1, 1, "error", "no spec files (*.yaml, *.yml) found", "io"))
    work = partial(_process, render=render, root=root)
    if jobs > 1 and len(found) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outcomes = list(pool.map(work, found, chunksize=max(1, len(found) // (jobs * 8))))
    else:
        outcomes = [work(path) for path in found]
    for outcome in outcomes:
        result.units.extend(outcome.units)
        result.diagnostics.extend(outcome.diagnostics)
    result.diagnostics.extend(_duplicates(result.units))
    return result, outcomes


def analyse(paths: Iterable[str | Path], jobs: int = 1) -> Result:
    """Load, validate and lint every spec: the diagnostics and the plans, nothing rendered."""
    return _process_all(paths, render=False, jobs=jobs)[0]


def _duplicates(units: list[Unit]) -> list[Diagnostic]:
    """Rollouts that would share a folder, or whose folder lies inside another rollout's."""
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
    for key, unit in sorted(first.items()):
        parts = key.split("/")
        prefixes = ("/".join(parts[:n]) for n in range(1, len(parts)))
        outer = next((first[p] for p in prefixes if p in first), None)
        if outer is not None:
            out.append(unit.doc.error(
                ("metadata", "namespace"),
                f"the folder of rollout {key} lies inside the folder of rollout {outer.plan.out} ({outer.doc.path}): "
                "give the environment or namespace another name", "fleet"))
    return out


# --------------------------------------------------------------------------- rendering


def _by_target(plan: Plan) -> dict[str, Files]:
    """Each target's files for the plan's stage in effect."""
    return {target.name: target.render(plan) for target in REGISTRY}


def _union(by_target: dict[str, Files], prefix: str = "", only_rollback: bool = False) -> Files:
    files: Files = {}
    for target in REGISTRY:
        if only_rollback and not target.rollback:
            continue
        _merge(files, {prefix + path: text for path, text in by_target[target.name].items()}, target.name)
    return files


def render_unit(plan: Plan) -> Files:
    """A rollout's folder: every target at the stage in effect, ``rollback/``, then the summaries."""
    renders: dict[str, dict[str, Files]] = {}

    def at(stage: str) -> dict[str, Files]:
        if stage not in renders:
            renders[stage] = _by_target(plan.at(stage))
        return renders[stage]

    files = _union(at(plan.current.name))
    _merge(files, _union(at(ROLLBACK), "rollback/", only_rollback=True), "rollback")
    rendered = Rendered(plan, dict(files), lambda other: _union(at(other.current.name)))
    for summary in SUMMARIES:
        _merge(files, summary.render(rendered), summary.name)
    return {f"{plan.out}/{path}": text for path, text in files.items()}


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


def compile_paths(paths: Iterable[str | Path], jobs: int = 1, output: Path | None = None) -> Result:
    """Analyse and render every spec, then the fleet targets; ``result.files`` is empty on any error.

    Generated files name their specs relative to ``output``'s parent (the working folder when
    ``output`` is not given), so the same repository compiles to the same bytes from anywhere.
    """
    root = output.resolve().parent if output is not None else None
    result, outcomes = _process_all(paths, render=True, jobs=jobs, root=root)
    if not result.ok:
        return result
    files: Files = {}
    for outcome in outcomes:
        files.update(outcome.files)
    plans = [u.plan for u in result.units]
    for fleet in FLEET:
        for path, text in fleet.render(plans, files).items():
            _check_relative(path, fleet.name)
            files[f"{FLEET_DIR}/{path}"] = text
    result.files = dict(sorted(files.items()))
    return result
