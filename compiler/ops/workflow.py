"""The pull-request workflow: ``promote``, ``rollback``, ``set-stage``, ``approve`` and ``diff``.

``promote``, ``rollback`` and ``set-stage`` change the spec's ``current`` (or an
environment's) through :mod:`compiler.edit`: one line changes.  The edited spec
is analysed like ``rollout lint`` before anything is written, then written
atomically; on any problem the command prints a located message, exits 1 and
leaves the file as it was.  ``rollout compile`` then turns the change into
generated files, and ``rollout check`` fails until it has.

``approve`` records that a person let the stage in effect advance: an
``approved: {stage, by, at}`` line beside ``current``, reviewed in the pull
request like any other edit.

``diff`` shows what a compile would change in an output folder, with one line
per rollout naming the stage before and after (the stage before is read from
each rollout's manifest).
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import click

from compiler import diagnostics as diag
from compiler.ops import edit
from compiler import build
from compiler import pipeline
from compiler.diagnostics import Diagnostic, SpecError
from compiler.sources import display_path
from compiler.spec.load import Document, load_file
from compiler.ir.plan import ROLLBACK

SPEC = click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
ENV = click.option("--env", help="The environment to change, for specs with `environments`.")
KUSTOMIZATION = "kustomization.yaml"
#: Seconds an edit waits for another edit of the same spec (they take well under a second).
SPEC_LOCK_TIMEOUT = 30.0
FLEET_DIR = pipeline.FLEET_DIR


class WorkflowError(Exception):
    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(d.text() for d in self.diagnostics))


def _fail(diagnostics: Iterable[Diagnostic]) -> None:
    items = list(diagnostics)
    click.echo(diag.render(items, "text"), nl=False, err=True)
    raise SystemExit(1)


# --------------------------------------------------------------------------- reading the spec


def _analyse(path: Path) -> list[pipeline.Unit]:
    units, found = pipeline.analyse_file(path)
    if diag.has_errors(found):
        raise WorkflowError(d for d in found if d.severity == "error")
    return units


def _doc(path: Path) -> Document:
    try:
        return load_file(path)
    except SpecError as exc:
        raise WorkflowError(exc.diagnostics) from None


def _doc_data(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = _doc(path).data
    return data


def _error(path: Path, message: str, line: int = 1, col: int = 1) -> WorkflowError:
    return WorkflowError([Diagnostic(display_path(path), line, col, "error", message, "workflow")])


def _where(path: Path, data: dict[str, Any], env: str | None) -> str | None:
    """The environment whose ``current`` is edited: ``env``, or None for the top-level key."""
    if env is None:
        return None
    environments = data.get("environments")
    if not isinstance(environments, dict):
        raise _error(path, f"--env {env}: the spec has no `environments`")
    if env not in environments:
        raise _error(path, f"no environment '{env}' in `environments` ({', '.join(map(str, environments))})")
    return env


def _inheriting(units: list[pipeline.Unit], data: dict[str, Any], env: str | None) -> list[pipeline.Unit]:
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
        raise _error(
            path,
            f"the environments that share `current` have different next stages ({', '.join(sorted(names))}): "
            "choose one with --env",
        )
    return names.pop()


# --------------------------------------------------------------------------- writing the spec


@contextmanager
def spec_locked(path: Path, timeout: float = SPEC_LOCK_TIMEOUT) -> Iterator[None]:
    """The spec's file (a symbolic link followed) held against other edits of it until the block ends: an
    advisory ``flock`` on the file itself, so nothing is left beside it. An edit replaces the file, so a waiter
    that gets the lock of the file it opened and finds another file at the path opens that one and waits again:
    edits run one after the other, each reading what the one before wrote."""
    deadline = time.monotonic() + timeout
    while True:
        real = os.path.realpath(path)
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                raise _error(path, "cannot edit: not a regular file")
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise _error(path, f"cannot read the spec: {exc.strerror or exc}") from None
        try:
            if not flock_by(fd, deadline):
                raise _error(path, f"another edit of this spec has run for more than {timeout:g}s")
            held, now = os.fstat(fd), _stat_or_none(real)
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                _remove_leftovers(Path(real))
                yield
                return
        finally:
            os.close(fd)


def _remove_leftovers(real: Path) -> None:
    """The temporary files of an edit of this spec that was killed (only an edit holding its lock makes them)."""
    own = re.compile(rf"\.{re.escape(real.name)}\.([a-z0-9_]{{8}}\.tmp\.yaml|restore)")
    try:
        names = [e.name for e in os.scandir(real.parent) if e.name.startswith(f".{real.name}.")]
    except OSError:
        return
    for name in names:
        if own.fullmatch(name):
            try:
                os.unlink(real.parent / name)
            except OSError:
                pass


def flock_by(fd: int, deadline: float) -> bool:
    """An exclusive ``flock`` on ``fd``, waited for until ``deadline`` (``time.monotonic``); False past it."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _analyse_candidate(path: Path, real: Path, text: str) -> Path:
    """Write ``text`` beside ``real`` (the file ``path`` names) in a hidden temporary file and analyse it; the
    file is returned on success, and nothing is left on failure."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp.yaml", dir=real.parent)
    except OSError as exc:
        raise _error(path, f"cannot write the spec: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode("utf-8"))
            os.chmod(tmp, stat.S_IMODE(real.stat().st_mode))
        except OSError as exc:
            raise _error(path, f"cannot write the spec: {exc.strerror or exc}") from None
        units, found = pipeline.analyse_file(tmp)
        shown_tmp, shown = display_path(tmp), display_path(path)
        errors = [Diagnostic(shown if d.path == shown_tmp else d.path, d.line, d.col, d.severity, d.message, d.code)
                  for d in found if d.severity == "error"]
        if errors:
            raise WorkflowError(errors)
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_spec(path: Path, text: str) -> None:
    """Replace the spec ``path`` names (its target, when it is a symbolic link) with ``text`` at once, once the
    text analyses without errors; on any failure a located error, and the spec and its folder as they were."""
    real = Path(os.path.realpath(path))
    tmp = _analyse_candidate(path, real, text)
    try:
        os.replace(tmp, real)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _error(path, f"cannot write the spec: {exc.strerror or exc}") from None


def _reason(path: Path, reason: str | None) -> str | None:
    """The rollback's reason as recorded on one line: None when empty; refused when it holds a secret (the
    spec is committed)."""
    from compiler.spec import secrets

    if reason is None or not edit.one_line(reason):
        return None
    found = secrets.in_text(reason)
    if found is not None:
        raise _error(path, f"--reason seems to hold {found}, which would be committed in the spec: leave it out")
    return reason


def _moves_nothing(doc: Document, path: Path, env: str | None) -> None:
    """Refuse a change of the top-level ``current`` that every environment overrides."""
    if env is not None:
        return
    environments = doc.data.get("environments")
    if isinstance(environments, dict) and environments and all(
            isinstance(o, dict) and "current" in o for o in environments.values()):
        line, col = doc.locate(("current",), prefer_key=False)
        raise _error(path, "every environment sets its own `current`, so this one moves none of them: choose one "
                           f"with --env ({', '.join(map(str, environments))})", line, col)


def apply_edit(path: Path, value: str, env: str | None, reason: str | None = None) -> edit.Edit | None:
    """Set ``current`` and write the spec atomically; None when it already had that value. Run it inside
    :func:`spec_locked` when what it sets was read from the spec."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(path, f"cannot read the spec: {getattr(exc, 'strerror', None) or exc}") from None
    doc = _doc(path)
    env = _where(path, doc.data, env)
    _moves_nothing(doc, path, env)
    try:
        change = edit.set_current(text, value, env, display_path(path), _reason(path, reason))
    except edit.EditError as exc:
        raise WorkflowError([exc.diagnostic]) from None
    if change.text == text:
        return None
    write_spec(path, change.text)
    return change


def _report(path: Path, change: edit.Edit | None, value: str, env: str | None) -> None:
    where = f" (environment {env})" if env else ""
    if change is None:
        click.echo(f"{display_path(path)}: `current` is already {value}{where}; nothing changed", err=True)
        return
    before = change.old if change.old is not None else "(inherited)"
    click.echo(f"{display_path(path)}:{change.line}: current{where}: {before} -> {value}", err=True)
    if change.note:
        click.echo(f"note: {change.note}", err=True)
    if env is None:
        environments = _doc_data(path).get("environments")
        if isinstance(environments, dict) and environments:
            own = sorted(e for e, o in environments.items() if isinstance(o, dict) and "current" in o)
            follow = sorted(e for e in environments if e not in own)
            click.echo(f"environments following it: {', '.join(follow) or 'none'}"
                       + (f"; with their own `current` (unchanged, use --env): {', '.join(own)}" if own else ""),
                       err=True)
    click.echo("next: `rollout compile` and commit the spec with the generated files", err=True)


def _run(spec: Path, action: Callable[[], object]) -> None:
    """``action`` with the spec held against other edits (it reads the spec, then changes it)."""
    try:
        with spec_locked(spec):
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

    _run(spec, action)


@click.command()
@SPEC
@ENV
@click.option("--reason", help="Why: recorded as a comment on the changed line.")
def rollback(spec: Path, env: str | None, reason: str | None) -> None:
    """Set SPEC's `current` to rollback: every route on stable once compiled."""

    def action() -> None:
        _report(spec, apply_edit(spec, ROLLBACK, env, reason), ROLLBACK, env)

    _run(spec, action)


@click.command(name="set-stage")
@SPEC
@click.argument("name")
@ENV
def set_stage(spec: Path, name: str, env: str | None) -> None:
    """Set SPEC's `current` to the stage NAME (or rollback)."""

    def action() -> None:
        _report(spec, apply_edit(spec, name, env), name, env)

    _run(spec, action)


@click.command()
@SPEC
@ENV
@click.option("--by", required=True, help="Who approves (a name or an email address), recorded in the spec.")
def approve(spec: Path, env: str | None, by: str) -> None:
    """Record that BY approves SPEC's stage in effect, so that it may advance (one line of the spec)."""

    def action() -> None:
        from datetime import datetime, UTC

        units = _analyse(spec)
        data = _doc_data(spec)
        where = _where(spec, data, env)
        chosen = [u for u in units if u.plan.environment == where] if where else _inheriting(units, data, None)
        if not chosen:
            raise _error(spec, "every environment sets its own `current`: choose one with --env")
        stages = {u.plan.current.name for u in chosen}
        if len(stages) > 1 or chosen[0].plan.is_rollback:
            raise _error(spec, "nothing to approve: the rollout is rolled back" if chosen[0].plan.is_rollback else
                         "the environments that share `current` are at different stages: choose one with --env")
        stage = stages.pop()
        if not any(u.plan.current.approve for u in chosen):
            needing = [s.name for s in chosen[0].plan.stages if s.approve]
            raise _error(spec, f"nothing to approve: stage {stage} needs no approval (" +
                         (f"stages a person approves: {', '.join(needing)}" if needing else
                          "no stage has `approve: manual`") + "); it advances when its hold is over and its gates pass")
        if not one_line_ok(by):
            raise _error(spec, "--by must be a name on one line, without secrets")
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = spec.read_bytes().decode("utf-8")
        try:
            change = edit.record_approval(text, stage, by, at, where, display_path(spec))
        except edit.EditError as exc:
            raise WorkflowError([exc.diagnostic]) from None
        write_spec(spec, change.text)
        click.echo(f"{display_path(spec)}:{change.line}: approved{f' (environment {where})' if where else ''}: "
                   f"stage {stage} by {edit.one_line(by)} at {at}", err=True)
        click.echo("next: commit the spec (a pull request reviews the approval); `rollout gate` and `rollout "
                   "advance` then let the stage advance", err=True)

    _run(spec, action)


def one_line_ok(text: str) -> bool:
    from compiler.spec import secrets

    return bool(text.strip()) and edit.one_line(text) == text.strip() and secrets.in_text(text) is None


# --------------------------------------------------------------------------- diff


def _count(n: int, what: str = "") -> str:
    return f"{n} file{'s' if n != 1 else ''}" + (f" {what}" if what else "")


def summary_lines(report: build.Report) -> list[str]:
    """One line per rollout that a compile would change (rollouts that would stay as they are are not listed)."""
    lines = []
    rollouts = sorted((r for o in report.outcomes for r in o.rollouts), key=lambda r: r.out)
    for rollout in rollouts:
        changed = len(rollout.changed) + len(rollout.stale)
        if not changed:
            continue
        if rollout.before is None:
            lines.append(f"{rollout.out}: new -> {rollout.stage}, {_count(changed, 'changed')}")
        elif rollout.before == rollout.stage:
            lines.append(f"{rollout.out}: {rollout.stage}, {_count(changed, 'changed')}")
        else:
            lines.append(f"{rollout.out}: {rollout.before} -> {rollout.stage}, {_count(changed, 'changed')}")
    for gone in sorted(report.removed_rollouts):
        lines.append(f"{gone}: removed (its spec is gone)")
    if report.fleet_changed:
        lines.append(f"{FLEET_DIR}: {_count(len(report.fleet_changed), 'changed')}")
    return lines


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The output folder to compare with (e.g. generated).")
def diff(paths: tuple[Path, ...], output: Path) -> None:
    """Show what `rollout compile` would change in OUTPUT: one line per rollout that changes, then a unified diff."""
    report = build.verify(paths, output)
    if not report.ok:
        _fail(report.diagnostics)
    lines = summary_lines(report)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"{output} is up to date: `rollout compile` would change nothing")
    if report.diffs:
        click.echo("")
        click.echo("".join(text for _, text in report.diffs), nl=False)
