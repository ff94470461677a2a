"""The compiler's passes: paths -> documents -> specs -> plans -> files.

Each spec file is loaded, validated, planned and rendered on its own (in
parallel processes with ``jobs``); an error in one file never hides the errors
of another, and no state is shared between them.  Fleet targets run last, over
what each rollout tells the fleet (:class:`compiler.ir.fleet.FleetEntry`).

:mod:`compiler.build` runs these passes into an output folder.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import sys

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from compiler import native
from compiler.gates.alerts import custom_query
from compiler.gates.algebra import render
from compiler.ir import planner
from compiler.spec import rules, secrets
from compiler.spec import environments as specs
from compiler.diagnostics import Diagnostic, SpecError, by_environment, has_errors
from compiler.ir.fleet import FleetEntry
from compiler.sources import Claim, SpecPath, collect, controller_clashes, duplicates, source_path
from compiler.spec.load import Document, load_bytes, load_file
from compiler.ir.plan import ROLLBACK, Plan, Source, StagePlan
from compiler.targets.base import CONFIG, CONTROLLER, MANIFEST, OTHER, Files, Rendered
from compiler.targets import fleets
from compiler.targets.registry import REGISTRY, SUMMARIES

FLEET_DIR = "_fleet"


def claim_of(unit: Unit) -> Claim:
    return Claim(unit.plan.out, unit.doc.path, unit.doc.locate(("metadata", "name")),
                 unit.doc.locate(("metadata", "namespace")))


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


def _is_rollout(data: object) -> bool:
    """A document that means to be a Rollout spec (so that a typo in it is reported, not skipped)."""
    if not isinstance(data, dict) or _foreign(data) is not None:
        return False
    version = data.get("apiVersion")
    return data.get("kind") == "Rollout" or (isinstance(version, str) and version.startswith("rollout-compiler/"))


def _foreign(data: object) -> str | None:
    """The API group of a manifest of another API (an Argo Rollouts ``argoproj.io/v1alpha1`` Rollout, a
    Kubernetes object), or None. A `kind: Rollout` is another API's only when its group is a domain that is
    not a misspelling of ours: a spec whose apiVersion has a typo is reported, never skipped (a folder compiled
    whole would take its rollout for gone)."""
    if not isinstance(data, dict):
        return None
    version = data.get("apiVersion")
    if not isinstance(version, str) or "/" not in version:
        return None
    group = version.split("/", 1)[0]
    if group == "rollout-compiler":
        return None
    if data.get("kind") == "Rollout" and ("." not in group or _near(group)):
        return None
    return group


def _near(group: str) -> bool:
    """A group that looks like a misspelt ``rollout-compiler``."""
    lowered = group.lower()
    return "rollout" in lowered or difflib.SequenceMatcher(None, lowered, "rollout-compiler").ratio() >= 0.75


def analyse_file(path: Path, named: bool = True, root: Path | None = None) -> tuple[list[Unit], list[Diagnostic]]:
    """Load, validate, check and plan one file; never raises for bad input.

    A YAML file found in a folder that is not a Rollout spec (a kustomization, a
    compiled output) is skipped; a file named on the command line is always a spec.
    """
    try:
        doc = load_file(path)
    except SpecError as exc:
        if not named and _declares_another_kind(_head(path)):
            return [], []
        return [], list(exc.diagnostics)
    return _analyse(doc, path, named, root)


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(HEAD)
    except OSError:
        return b""


#: Bytes of a file that cannot be loaded read for the apiVersion and kind it declares.
HEAD = 8192
_TOP_LEVEL = re.compile(rb"^(apiVersion|kind):[ \t]*[\"']?([A-Za-z0-9./-]+)", re.MULTILINE)


def _declares_another_kind(raw: bytes) -> bool:
    """A file found in a folder that does not load as one YAML document (a multi-document manifest, a large
    ConfigMap) but says near its top that it is another API's object: skipped like any other non-spec. One that
    says nothing, or says it is a Rollout of ours, is reported: it may be a spec with a mistake."""
    declared: dict[str, str] = {key.decode("ascii"): value.decode("ascii")
                                for key, value in _TOP_LEVEL.findall(raw[:HEAD])}
    if "apiVersion" in declared and _foreign(declared) is not None:
        return True
    return declared.get("kind", "Rollout") != "Rollout"


def analyse_bytes(
    raw: bytes, shown: str, named: bool, root: Path | None, path: Path
) -> tuple[list[Unit], list[Diagnostic]]:
    """:func:`analyse_file` of bytes already read (``shown``: the path as the user sees it)."""
    try:
        doc = load_bytes(raw, shown)
    except SpecError as exc:
        if not named and _declares_another_kind(raw):
            return [], []
        return [], list(exc.diagnostics)
    return _analyse(doc, path, named, root)


def _analyse(doc: Document, path: Path, named: bool, root: Path | None) -> tuple[list[Unit], list[Diagnostic]]:
    if not named and not _is_rollout(doc.data):
        return [], []
    group = _foreign(doc.data)
    if group is not None:  # named on the command line: one error, not one per field it lacks
        line, col = doc.locate(("apiVersion",), prefer_key=False)
        return [], [Diagnostic(doc.path, line, col, "error", f"not a rollout spec: the API group '{group}' is another "
                               "API's (a spec has apiVersion: rollout-compiler/v1 and kind: Rollout); a folder "
                               "compile skips such files", "spec")]
    leaks = secret_problems(doc)
    try:
        variants = specs.expand(doc)
    except SpecError as exc:
        return [], by_environment((d, None) for d in list(exc.diagnostics) + leaks)
    if leaks:
        return [], leaks
    found: list[tuple[Diagnostic, str | None]] = []
    units: list[Unit] = []
    for variant in variants:
        checked = rules.check(variant.spec, variant.doc)
        found += [(d, variant.environment) for d in checked]
        if has_errors(checked):
            continue
        source = Source(source_path(path, root), doc.sha256)
        plan = planner.build(variant.spec, source, variant.environment)
        unit = Unit(variant, plan)
        lint = lint_targets(unit)
        found += [(d, variant.environment) for d in lint]
        if not has_errors(lint):
            units.append(unit)
    apart = environments_apart(doc, units)
    found += [(d, None) for d in apart]
    return ([] if apart else units), by_environment(found)


def secret_problems(doc: Document) -> list[Diagnostic]:
    """A secret anywhere in a spec (a token in a tester value, a webhook URL in a description) is refused where it
    stands: generated files are committed and applied, and a spec is no place for secrets either."""
    out = []
    for at, found in secrets.anywhere(doc.data):
        line, col = doc.locate(at, prefer_key=False)
        where = ".".join(str(p) for p in at)
        out.append(Diagnostic(doc.path, line, col, "error", f"{where} holds what looks like {found}: generated files "
                              "are committed and applied, so a secret may reach them only by reference (the `*_file` "
                              "and `*_secret` fields of receivers); remove it", "secret"))
    return out


def environments_apart(doc: Document, units: list[Unit]) -> list[Diagnostic]:
    """Two environments of a spec that read the same series (a canary query, or a custom gate's, of the same text)
    would mix their canaries in one Prometheus: an error at the later environment."""
    seen: dict[str, str] = {}
    out = []
    for unit in units:
        plan = unit.plan
        if plan.environment is None:
            continue
        queries = {render(plan.metrics.canary.requests(plan.metrics.window))}
        queries |= {render(custom_query(plan, g)) for s in plan.stages for g in s.gates if g.query}
        shared = sorted(q for q in queries if seen.setdefault(q, plan.environment) != plan.environment)
        if shared:
            line, col = doc.locate(("environments", plan.environment))
            out.append(Diagnostic(doc.path, line, col, "error",
                                  f"environments '{seen[shared[0]]}' and '{plan.environment}' read the same series "
                                  f"({shared[0]}): one Prometheus would mix their canaries; give them different "
                                  "namespaces (metadata.namespace), and use $namespace in metrics.custom and custom "
                                  "gate queries", "metrics"))
    return out


def lint_targets(unit: Unit) -> list[Diagnostic]:
    out = []
    for target in REGISTRY:
        if target.lint is None:
            continue
        for finding in target.lint(unit.plan):
            line, col = unit.doc.locate(finding.loc)
            out.append(Diagnostic(unit.doc.path, line, col, finding.severity, finding.message, finding.code))
    return out


@dataclass
class _FileOutcome:
    units: list[Unit]
    diagnostics: list[Diagnostic]
    files: Files
    entries: list[FleetEntry]


def _process(spec: SpecPath, render: bool, root: Path | None) -> _FileOutcome:
    units, diagnostics = analyse_file(spec.path, spec.named, root)
    files: Files = {}
    entries = []
    if render and not has_errors(diagnostics):
        for unit in units:
            rendered, kinds = render_unit_files(unit.plan)
            files.update((f"{unit.plan.out}/{path}", text) for path, text in rendered.items())
            entries.append(fleet_entry(unit.plan, kinds, rendered))
    return _FileOutcome(units, diagnostics, files, entries)


def _process_all(paths: Iterable[str | Path], render: bool, jobs: int,
                 root: Path | None = None) -> tuple[Result, list[_FileOutcome]]:
    """Every spec file on its own, in ``jobs`` processes; results in file order, so output never depends on jobs."""
    found, problems = collect(paths)
    result = Result(diagnostics=list(problems))
    if not found and not problems:
        result.diagnostics.append(Diagnostic("-", 1, 1, "error", "no spec files (*.yaml, *.yml) found", "io"))
    work = partial(_process, render=render, root=root)
    if jobs > 1 and len(found) > 1:
        from concurrent.futures import ProcessPoolExecutor  # only when there are several jobs

        native.picklable()
        with ProcessPoolExecutor(max_workers=jobs, initializer=native.picklable) as pool:
            outcomes = list(pool.map(work, found, chunksize=max(1, len(found) // (jobs * 8))))
    else:
        outcomes = [work(path) for path in found]
    for outcome in outcomes:
        result.units.extend(outcome.units)
        result.diagnostics.extend(outcome.diagnostics)
    result.diagnostics.extend(duplicates([claim_of(u) for u in result.units]))
    result.diagnostics.extend(_controller_clashes_of(result.units))
    return result, outcomes


def _controller_clashes_of(units: Sequence[Unit]) -> list[Diagnostic]:
    """:func:`controller_clashes` of the rollouts analysed (what ``compile`` refuses, found by ``lint``)."""
    from compiler.spec import names

    return controller_clashes([(names.controller_name(u.plan.environment, u.plan.namespace, u.plan.name),
                                u.plan.out, claim_of(u)) for u in units if u.plan.gitops is not None])


def analyse(paths: Iterable[str | Path], jobs: int = 1) -> Result:
    """Load, validate and lint every spec: the diagnostics and the plans, nothing rendered."""
    return _process_all(paths, render=False, jobs=jobs)[0]


# --------------------------------------------------------------------------- rendering


def _kind(target_kinds: Mapping[str, str], path: str, owner: str) -> str:
    kind = target_kinds.get(path)
    if kind is None:
        raise RuntimeError(f"target {owner} wrote {path} without saying what it is (Target.kinds)")
    return kind


def render_unit(plan: Plan) -> Files:
    """A rollout's folder: every target at the stage in effect, ``rollback/``, then the summaries."""
    files, _ = render_unit_files(plan)
    return {f"{plan.out}/{path}": text for path, text in files.items()}


def render_unit_files(plan: Plan) -> tuple[Files, dict[str, str]]:
    """(files relative to the rollout's folder, what each is) of :func:`render_unit`."""
    files: Files = {}
    kinds: dict[str, str] = {}
    live: dict[str, Files] = {}
    for target in REGISTRY:
        live[target.name] = target.render(plan)
        for path, text in live[target.name].items():
            _merge(files, {path: text}, target.name)
            kinds[path] = _kind(target.kinds, path, target.name)
    rolled_back = plan if plan.is_rollback else plan.at(ROLLBACK)
    for target in REGISTRY:
        if not target.rollback:
            continue
        rendered = live[target.name] if plan.is_rollback else target.render(rolled_back)
        for path, text in rendered.items():
            name = sys.intern(f"rollback/{path}")  # one string for every rollout's folder, not one each
            _merge(files, {name: text}, "rollback")
            kinds[name] = _kind(target.kinds, path, target.name)

    def keys(stage: StagePlan) -> dict[str, Hashable]:
        out: dict[str, Hashable] = {}
        for target in REGISTRY:
            out.update(target.keys(plan, stage))
        return out

    rendered_unit = Rendered(plan, dict(files), kinds, keys)
    for summary in SUMMARIES:
        summarised = summary.render(rendered_unit)
        _merge(files, summarised, summary.name)
        kinds.update((path, OTHER) for path in summarised)
    return files, kinds


def fleet_entry(plan: Plan, kinds: Mapping[str, str], files: Mapping[str, str] | None = None) -> FleetEntry:
    """What the fleet files and checks read of a rollout; with its ``files``, the objects it applies too."""
    folders = sorted({path.split("/")[0] for path, kind in kinds.items()
                      if kind == CONTROLLER and "/" in path and not path.startswith("rollback/")})
    objects = applied_objects(plan, files, kinds) if files is not None else ()
    return FleetEntry.of(plan, folders[0] if folders else None, objects)


#: The object a manifest holds, as the serializer writes every object of a rollout: ``kind``, then ``metadata``
#: opening with ``name`` and ``namespace`` (a name that YAML would read as something else is quoted).
_IDENTITY = re.compile(r"^kind: (\S+)\nmetadata:\n  name: (\S+)\n  namespace: (\S+)$", re.MULTILINE)


def _unquoted(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value


def applied_objects(plan: Plan, files: Mapping[str, str], kinds: Mapping[str, str]) -> tuple[str, ...]:
    """``Kind/namespace/name`` of every object the rollout's folder applies: its manifests (one object each) and
    the ConfigMaps its kustomization generates. Its rollback folder applies the same ones."""
    from compiler.targets import kustomize

    out = set()
    for path, kind in kinds.items():
        if path.startswith("rollback/"):
            continue
        if kind == MANIFEST:
            found = _IDENTITY.search(files[path])
            if found is None:
                raise RuntimeError(f"{path}: a manifest without kind, metadata.name and metadata.namespace")
            out.add(f"{found.group(1)}/{_unquoted(found.group(3))}/{_unquoted(found.group(2))}")
        elif kind == CONFIG:
            out.add(f"ConfigMap/{plan.namespace}/{kustomize.generator_name(plan, posixpath.dirname(path))}")
    return tuple(sorted(out))


#: The most an object may hold: the API server refuses a larger ConfigMap (1 MiB of data), and kubectl's
#: client-side apply (Argo CD's default) keeps the whole object in an annotation of at most 256 KiB.
MAX_OBJECT = 1024 * 1024
MAX_CLIENT_SIDE = 256 * 1024


def object_sizes(plan: Plan, data: Mapping[str, bytes], kinds: Mapping[str, str]) -> list[tuple[int, str]]:
    """(bytes, what) of every object a folder of the rollout applies, live and rolled back: a manifest's file
    (its object and a header), a generated ConfigMap's files together."""
    from compiler.targets import kustomize

    out = []
    generated: dict[str, int] = {}
    for path, kind in kinds.items():
        if kind == MANIFEST:
            out.append((len(data[path]), f"{plan.out}/{path}"))
        elif kind == CONFIG:
            folder = posixpath.dirname(path)
            generated[folder] = generated.get(folder, 0) + len(data[path])
    for folder, size in generated.items():
        inner = folder[len("rollback/"):] if folder.startswith("rollback/") else folder
        where = f"{plan.out}/rollback" if folder.startswith("rollback/") else plan.out
        out.append((size, f"ConfigMap {kustomize.generator_name(plan, inner)} (from {where}/{folder.split('/')[-1]}/)"))
    return sorted(out, reverse=True)


def size_problems(unit: Unit, data: Mapping[str, bytes], kinds: Mapping[str, str]) -> list[Diagnostic]:
    """An error for an object the API server would refuse, a warning for one client-side apply cannot apply."""
    problems = []
    at = unit.doc.locate(("metadata", "name"))
    for size, what in object_sizes(unit.plan, data, kinds):
        kib = f"{size / 1024:.0f} KiB"
        if size > MAX_OBJECT:
            problems.append(Diagnostic(unit.doc.path, *at, "error", f"{what} would be {kib}: the Kubernetes API "
                                       "server takes at most 1 MiB; make the spec's lists (allowlists, flags, "
                                       "stages, gates) shorter", "output"))
        elif size > MAX_CLIENT_SIDE:
            problems.append(Diagnostic(unit.doc.path, *at, "warning", f"{what} would be {kib}: client-side "
                                       "`kubectl apply` (and Argo CD's default sync) keeps a copy in an annotation "
                                       "of at most 256 KiB; apply with --server-side (Argo CD: ServerSideApply=true)",
                                       "output"))
        else:
            break
    return problems


def render_fleet(entries: Sequence[FleetEntry]) -> Files:
    """The fleet-wide files (paths relative to ``_fleet/``) of every rollout of an output folder."""
    return fleets.render(entries)


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
    """Analyse and render every spec, then the fleet targets, in memory; ``result.files`` is empty on any error.

    Generated files name their specs relative to ``output``'s parent (the working folder when
    ``output`` is not given), so the same repository compiles to the same bytes from anywhere.
    """
    root = output.resolve().parent if output is not None else None
    result, outcomes = _process_all(paths, render=True, jobs=jobs, root=root)
    if not result.ok:
        return result
    files: Files = {}
    entries = []
    for outcome in outcomes:
        files.update(outcome.files)
        entries.extend(outcome.entries)
    for path, text in render_fleet(sorted(entries, key=lambda e: e.out)).items():
        files[f"{FLEET_DIR}/{path}"] = text
    result.files = dict(sorted(files.items()))
    return result
