"""The pull-request workflow: ``promote``, ``rollback``, ``set-stage`` and ``diff``.

``promote``, ``rollback`` and ``set-stage`` change the spec's ``current`` (or an
environment's) through :mod:`compiler.edit`: one line changes.  The edited spec
is analysed like ``rollout lint`` before anything is written, then written
atomically; on any problem the command prints a located message, exits 1 and
leaves the file as it was.  ``rollout compile`` then turns the change into
generated files, and ``rollout check`` fails until it has.

``diff`` shows what a compile would change in an output folder, with one line
per rollout naming the stage before and after.  The stage before is read from
the compiled ``kustomization.yaml`` of each rollout (its
``rollout-compiler.dev/stage`` annotation).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from collections.abc import Iterable

import click

from compiler import diagnostics as diag
from compiler.ops import edit
from compiler import emit
from compiler.targets import kube
from compiler import pipeline
from compiler import serialize
from compiler.diagnostics import Diagnostic, SpecError
from compiler.spec.load import display_path, load_file
from compiler.ir.plan import ROLLBACK, Plan, StagePlan

SPEC = click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
ENV = click.option("--env", help="The environment to change, for specs with `environments`.")
KUSTOMIZATION = "kustomization.yaml"
FLEET_DIR = pipeline.FLEET_DIR


class WorkflowError(Exception):
    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(d.text() for d in self.diagnostics))


def _fail(diagnostics: Iterable[Diagnostic]) -> None:
    items = list(diagnostics)
    click.echo(diag.render(items, "text"), nl=False, err=True)
    raise SystemExit(1)


def stage_label(plan: Plan, stage: StagePlan) -> str:
    """``canary 1%``, ``preview (testers only)``, ``rollback (all on stable)``."""
    traffic = plan.traffic(stage)
    return f"{stage.name} {traffic}" if traffic.endswith("%") else f"{stage.name} ({traffic})"


# --------------------------------------------------------------------------- reading the spec


def _analyse(path: Path) -> list[pipeline.Unit]:
    units, found = pipeline.analyse_file(path)
    if diag.has_errors(found):
        raise WorkflowError(d for d in found if d.severity == "error")
    return units


def _doc_data(path: Path) -> dict:
    try:
        return load_file(path).data
    except SpecError as exc:
        raise WorkflowError(exc.diagnostics) from None


def _error(path: Path, message: str, line: int = 1, col: int = 1) -> WorkflowError:
    return WorkflowError([Diagnostic(display_path(path), line, col, "error", message, "workflow")])


def _where(path: Path, data: dict, env: str | None) -> str | None:
    """The environment whose ``current`` is edited: ``env``, or None for the top-level key."""
    environments = data.get("environments")
    if env is not None and not isinstance(environments, dict):
        raise _error(path, f"--env {env}: the spec has no `environments`")
    if env is not None and env not in environments:
        raise _error(path, f"no environment '{env}' in `environments` ({', '.join(map(str, environments))})")
    return env


def _inheriting(units: list[pipeline.Unit], data: dict, env: str | None) -> list[pipeline.Unit]:
    """The plans whose stage in effect the edit moves."""
    if env is not None:
        return [u for u in units if u.plan.environment == env]
    environments = data.get("environments")
    if not isinstance(environments, dict):
        return units
    return [u for u in units if not (isinstance(environments.get(u.plan.environment), dict)
                                     and "current" in environments[u.plan.environment])]


def next_stage_name(path: Path, env: str | None) -> str:
    data = _doc_data(path)
    env = _where(path, data, env)
    units = _inheriting(_analyse(path), data, env)
    if not units:
        raise _error(path, "every environment sets its own `current`: choose one with --env")
    names = set()
    for unit in units:
        plan = unit.plan
        where = f" (environment '{plan.environment}')" if plan.environment else ""
        line, col = unit.doc.locate(("current",), prefer_key=False)
        if plan.is_rollback:
            raise _error(path, f"{plan.out} is rolled back{where}: choose the stage to resume from with "
                               f"`rollout set-stage {display_path(path)} STAGE`", line, col)
        following = plan.next_stage()
        if following is None:
            raise _error(path, f"{plan.out} is at its last stage '{plan.current.name}'{where}: nothing to promote to",
                         line, col)
        names.add(following.name)
    if len(names) > 1:
        raise _error(path, f"the environments that share `current` have different next stages ({', '.join(sorted(names))}): "
                           "choose one with --env")
    return names.pop()


# --------------------------------------------------------------------------- writing the spec


def _analyse_candidate(path: Path, text: str) -> Path:
    """Write ``text`` beside ``path`` in a hidden temporary file and analyse it; the file is returned on success."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.yaml", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
        units, found = pipeline.analyse_file(tmp)
        shown_tmp, shown = display_path(tmp), display_path(path)
        errors = [Diagnostic(shown if d.path == shown_tmp else d.path, d.line, d.col, d.severity, d.message, d.code)
                  for d in found if d.severity == "error"]
        if errors:
            raise WorkflowError(errors)
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def apply_edit(path: Path, value: str, env: str | None, reason: str | None = None) -> edit.Edit | None:
    """Set ``current`` and write the spec atomically; None when it already had that value."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(path, f"cannot read the spec: {getattr(exc, 'strerror', None) or exc}") from None
    data = _doc_data(path)
    env = _where(path, data, env)
    try:
        change = edit.set_current(text, value, env, display_path(path), reason)
    except edit.EditError as exc:
        raise WorkflowError([exc.diagnostic]) from None
    if change.text == text:
        return None
    tmp = _analyse_candidate(path, change.text)
    os.replace(tmp, path)
    return change


def _report(path: Path, change: edit.Edit | None, value: str, env: str | None) -> None:
    where = f" (environment {env})" if env else ""
    if change is None:
        click.echo(f"{display_path(path)}: `current` is already {value}{where}; nothing changed", err=True)
        return
    before = change.old if change.old is not None else "(inherited)"
    click.echo(f"{display_path(path)}:{change.line}: current{where}: {before} -> {value}", err=True)
    if env is None:
        environments = _doc_data(path).get("environments")
        if isinstance(environments, dict) and environments:
            own = sorted(e for e, o in environments.items() if isinstance(o, dict) and "current" in o)
            follow = sorted(e for e in environments if e not in own)
            click.echo(f"environments following it: {', '.join(follow) or 'none'}"
                       + (f"; with their own `current` (unchanged, use --env): {', '.join(own)}" if own else ""),
                       err=True)
    click.echo("next: `rollout compile` and commit the spec with the generated files", err=True)


def _run(action) -> None:
    try:
        action()
    except WorkflowError as exc:
        _fail(exc.diagnostics)


# --------------------------------------------------------------------------- commands


@click.command()
@SPEC
@ENV
def promote(spec: Path, env: str | None) -> None:
    """Move SPEC's `current` to the next stage (one line of the spec changes)."""

    def action() -> None:
        target = next_stage_name(spec, env)
        _report(spec, apply_edit(spec, target, env), target, env)

    _run(action)


@click.command()
@SPEC
@ENV
@click.option("--reason", help="Why: recorded as a comment on the changed line.")
def rollback(spec: Path, env: str | None, reason: str | None) -> None:
    """Set SPEC's `current` to rollback: every route on stable once compiled."""

    def action() -> None:
        _report(spec, apply_edit(spec, ROLLBACK, env, reason), ROLLBACK, env)

    _run(action)


@click.command(name="set-stage")
@SPEC
@click.argument("name")
@ENV
def set_stage(spec: Path, name: str, env: str | None) -> None:
    """Set SPEC's `current` to the stage NAME (or rollback)."""

    def action() -> None:
        _report(spec, apply_edit(spec, name, env), name, env)

    _run(action)


# --------------------------------------------------------------------------- diff


def compiled_stage(output: Path, out: str) -> str | None:
    """The stage in effect when ``output/<out>`` was compiled (from its kustomization.yaml)."""
    try:
        text = (output / out / KUSTOMIZATION).read_text(encoding="utf-8")
        (data,) = serialize.read_yaml(text)
    except (OSError, UnicodeDecodeError, serialize.YAMLError, ValueError):
        return None
    try:
        stage = data["metadata"]["annotations"][kube.ANNOTATION_STAGE]
    except (TypeError, KeyError):
        return None
    return stage if isinstance(stage, str) else None


def _owner(path: str, outs: list[str]) -> str | None:
    """The rollout folder a generated path belongs to (the longest matching prefix)."""
    matches = [o for o in outs if path.startswith(o + "/")]
    return max(matches, key=len) if matches else None


def _removed_rollouts(removes: list[str]) -> list[str]:
    """Folders of rollouts whose files a compile removes: the outermost folders of removed kustomizations."""
    folders = sorted({p.rsplit("/", 1)[0] for p in removes if p.endswith("/" + KUSTOMIZATION)
                      and not p.startswith(FLEET_DIR + "/")})
    return [f for f in folders if not any(f.startswith(other + "/") for other in folders)]


def compiled_hash(output: Path, out: str) -> str | None:
    """The short spec hash ``output/<out>`` was compiled from (from its kustomization.yaml header)."""
    try:
        head = (output / out / KUSTOMIZATION).read_text(encoding="utf-8")[:400]
    except (OSError, UnicodeDecodeError):
        return None
    found = serialize.SPEC_HASH.search(head)
    return found.group(1) if found else None


def _only_the_hash(output: Path, path: str, data: bytes, old: str | None, new: str) -> bool:
    """Whether ``path`` changes in nothing but the spec hash every generated file names."""
    if old is None or old == new:
        return False
    try:
        existing = (output / path).read_bytes()
    except OSError:
        return False
    return existing.replace(old.encode(), new.encode()) == data


def _count(n: int, what: str = "") -> str:
    return f"{n} file{'s' if n != 1 else ''}" + (f" {what}" if what else "")


def summary_lines(output: Path, result: pipeline.Result) -> list[str]:
    writes, removes, _ = emit.plan_changes(output, result.files)
    touched = sorted(set(writes) | set(removes))
    outs = sorted(u.plan.out for u in result.units)
    gone = _removed_rollouts(removes)
    hashes = {u.plan.out: (compiled_hash(output, u.plan.out), u.plan.source.short) for u in result.units}
    counts: dict[str, int] = {}
    hash_only: dict[str, int] = {}
    for path in touched:
        owner = _owner(path, outs) or (FLEET_DIR if path.startswith(FLEET_DIR + "/") else None)
        owner = owner or _owner(path, gone) or path.rsplit("/", 1)[0]
        if owner in hashes and path in writes and _only_the_hash(output, path, writes[path], *hashes[owner]):
            hash_only[owner] = hash_only.get(owner, 0) + 1
        else:
            counts[owner] = counts.get(owner, 0) + 1
    lines = []
    for unit in sorted(result.units, key=lambda u: u.plan.out):
        plan = unit.plan
        before = compiled_stage(output, plan.out)
        after = stage_label(plan, plan.current)
        changed, restamped = counts.pop(plan.out, 0), hash_only.get(plan.out, 0)
        files = _count(changed, "changed") if changed else ""
        if restamped:
            files += f" ({restamped} more only in the spec hash)" if changed else _count(restamped, "changed only in the spec hash")
        files = files or "up to date"
        if before is None:
            lines.append(f"{plan.out}: new -> {after}, {files}")
        elif before == plan.current.name:
            lines.append(f"{plan.out}: {after}, {files}")
        else:
            try:
                shown = stage_label(plan, plan.stage(before))
            except KeyError:
                shown = before
            lines.append(f"{plan.out}: {shown} -> {after}, {files}")
    fleet = counts.pop(FLEET_DIR, 0)
    for owner, count in sorted(counts.items()):
        lines.append(f"{owner}: removed, {_count(count)}")
    if fleet:
        lines.append(f"{FLEET_DIR}: {_count(fleet, 'changed')}")
    return lines


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The output folder to compare with (e.g. generated).")
def diff(paths: tuple[Path, ...], output: Path) -> None:
    """Show what `rollout compile` would change in OUTPUT: one line per rollout, then a unified diff."""
    result = pipeline.compile_paths(paths, output=output)
    if not result.ok:
        _fail(result.diagnostics)
    for line in summary_lines(output, result):
        click.echo(line)
    diffs = emit.drift(output, result.files)
    if diffs:
        click.echo("")
        click.echo("".join(diffs), nl=False)
