"""The ``rollout`` command line.

Exit codes: 0 success; 1 the input or the checked state is wrong (lint errors,
drift, a gate that says no); 2 usage.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from compiler import __version__
from compiler import diagnostics as diag
from compiler.diagnostics import Diagnostic, SpecError

if TYPE_CHECKING:
    from compiler.ir.plan import Plan

#: Commands defined in other modules, loaded when used: a small command does not pay for every library.
#: Each with the first sentence of its help, shown by ``rollout --help`` without importing it (a test
#: keeps the two the same).
LAZY = {
    "promote": (
        "compiler.ops.workflow:promote",
        "Move SPEC's `current` to the next stage (one line of the spec changes).",
    ),
    "rollback": (
        "compiler.ops.workflow:rollback",
        "Set SPEC's `current` to rollback: every route on stable once compiled.",
    ),
    "set-stage": ("compiler.ops.workflow:set_stage", "Set SPEC's `current` to the stage NAME (or rollback)."),
    "approve": ("compiler.ops.workflow:approve", "Record that BY approves SPEC's stage in effect, so that it may "
                "advance (one line of the spec)."),
    "diff": (
        "compiler.ops.workflow:diff",
        "Show what `rollout compile` would change in OUTPUT: one line per rollout that changes, then a unified diff.",
    ),
    "gate": (
        "compiler.ops.gate:gate",
        "Ask Prometheus whether SPEC's stage in effect may advance: promote, hold or rollback.",
    ),
    "serve": (
        "compiler.ops.serve:serve",
        "Serve Alertmanager's webhook: a firing rollback alert sets its spec to rollback and recompiles.",
    ),
    "runtime": (
        "compiler.ops.runtime:runtime",
        "Send the HAProxy Runtime API commands of FILE to the admin socket, one by one, and print the answers.",
    ),
    "advance": (
        "compiler.ops.advance:advance",
        "Promote every rollout whose hold is over and whose gates pass: promote, compile and commit each.",
    ),
}


class Commands(click.Group):
    """A group whose commands from other modules are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY and name not in self.commands:
            module, attr = LAZY[name][0].split(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list, with the lazy commands' help from :data:`LAZY` (nothing imported)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in LAZY and name not in self.commands:
                rows.append((name, click.Command(name, help=LAZY[name][1]).get_short_help_str(limit)))
            else:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


FORMAT = click.option(
    "--format", "fmt", type=click.Choice(diag.FORMATS), default="text", show_default=True,
    help="How to print problems: text (path:line:col: ...), github (Actions annotations) or json.",
)


def _folder_path(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """An output folder that can exist: no file in its place or above it."""
    blocking = next((p for p in [value, *value.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise click.BadParameter(f"'{blocking}' is a file, so '{value}' cannot be a folder", ctx, param)
    return value


OUTPUT = click.option(
    "-o", "--output", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
    callback=_folder_path, help="The output folder (e.g. generated).",
)
PATHS = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
JOBS = click.option(
    "-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True,
    help="Specs compiled in parallel processes (0: one per CPU). The output does not depend on it.",
)


def _jobs(jobs: int) -> int:
    return jobs or os.cpu_count() or 1


def _report(diagnostics: list[Diagnostic], fmt: str) -> None:
    if fmt == "json":
        click.echo(diag.render(diagnostics, fmt), nl=False)
    elif diagnostics:
        click.echo(diag.render(diagnostics, fmt), nl=False, err=fmt == "text")


def _fail_on(result: Any, fmt: str) -> None:
    _report(result.diagnostics, fmt)
    if not result.ok:
        raise SystemExit(1)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rollout")
def main() -> None:
    """Compile progressive-delivery specs into the files GitOps controllers apply.

    One YAML spec per service says how a new version goes live: stages, the
    gates each must pass, flags, alert routing and rollback.  `rollout`
    validates it and compiles it, byte for byte deterministically, into
    router configs, Prometheus rules, Alertmanager routes, dashboards, flag
    definitions and rollback manifests under an output folder.
    """


@main.command()
@PATHS
@FORMAT
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@JOBS
def lint(paths: tuple[Path, ...], fmt: str, strict: bool, jobs: int) -> None:
    """Validate specs (files or folders) without writing anything."""
    from compiler import pipeline

    result = pipeline.analyse(paths, jobs=_jobs(jobs))
    _report(result.diagnostics, fmt)
    if not result.ok or (strict and result.diagnostics):
        raise SystemExit(1)
    if fmt == "text":
        click.echo(f"{len(result.units)} rollout(s) ok", err=True)


LOCK_TIMEOUT = click.option(
    "--lock-timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
    help="Seconds to wait for another compile of the same output folder to finish.",
)
PROGRESS = click.option(
    "--progress/--no-progress", default=None,
    help="A progress bar on stderr (default: when stderr is a terminal and there are more than 20 specs).",
)


def _progress_bar(enabled: bool | None) -> Callable[[int, int], None] | None:
    """A one-line progress bar on stderr; silent in CI logs unless asked for."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    shown = {"last": -1}

    def update(done: int, total: int) -> None:
        if enabled is None and total <= 20:
            return
        percent = done * 100 // max(total, 1)
        if percent == shown["last"] and done != total:
            return
        shown["last"] = percent
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} specs")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return update


@main.command(name="compile")
@PATHS
@OUTPUT
@FORMAT
@JOBS
@click.option("--prune", is_flag=True,
              help="Also remove the rollouts of OUTPUT whose spec file is gone, wherever it was.")
@click.option("--force", is_flag=True, help="Render every spec, also those whose files are up to date.")
@LOCK_TIMEOUT
@PROGRESS
def compile_(paths: tuple[Path, ...], output: Path, fmt: str, jobs: int, prune: bool, force: bool,
             lock_timeout: float, progress: bool | None) -> None:
    """Compile specs into OUTPUT: every file or none; only the rollouts of these specs change.

    A spec whose rollouts' files are what it compiles to (its digest and their
    hashes, recorded in each rollout's .rollout-manifest) is not rendered again.
    Rollouts of OUTPUT whose specs were not compiled are left alone, except when
    their spec is gone from a folder compiled whole, or gone at all with --prune.
    Files in OUTPUT that rollout did not generate are never touched.
    """
    from compiler import build

    report = build.build(paths, output, jobs=_jobs(jobs), prune=prune, force=force, lock_timeout=lock_timeout,
                         progress=_progress_bar(progress))
    _report(report.diagnostics, fmt)
    if not report.ok:
        raise SystemExit(1)
    if fmt == "text":
        if report.recovered:
            click.echo(f"{output}: {report.recovered}", err=True)
        line = (f"{report.rollouts} rollout(s): {report.rendered} compiled, {report.skipped} unchanged; "
                f"{report.written_count} files written, {len(report.removed)} removed")
        if report.removed_rollouts:
            line += f" ({len(report.removed_rollouts)} rollout(s) whose spec is gone)"
        if report.left_alone:
            line += (f"; {report.left_alone} other rollout(s) of {output} left alone "
                     "(not compiled now: compile their folder to bring them up to date)")
        click.echo(line, err=True)


@main.command()
@PATHS
@OUTPUT
@FORMAT
@JOBS
@LOCK_TIMEOUT
def check(paths: tuple[Path, ...], output: Path, fmt: str, jobs: int, lock_timeout: float) -> None:
    """Exit 1 with a unified diff when OUTPUT is not what a compile would write (the CI guard).

    Nothing is written.  Rollouts whose recorded digests and file hashes match
    are not rendered; the others are, to show the difference.
    """
    from compiler import build

    report = build.verify(paths, output, jobs=_jobs(jobs), lock_timeout=lock_timeout)
    if not report.ok:
        _fail_on_diagnostics(report.diagnostics, fmt)
    drift = build.drift(report, output)
    if fmt == "json":  # one JSON document on stdout; the diff itself is for the other formats
        _report(report.diagnostics + drift, fmt)
    else:
        _report(report.diagnostics + (drift if fmt == "github" else []), fmt)
        click.echo("".join(text for _, text in report.diffs), nl=False)
    if report.diffs:
        click.echo(f"{output} is stale: {len(report.diffs)} file(s) differ in {len(drift)} rollout(s) or fleet "
                   "folder(s); run `rollout compile` and commit the result", err=True)
        raise SystemExit(1)
    if fmt == "text":
        click.echo(f"{output} is up to date ({report.rollouts} rollout(s), {report.files} files)", err=True)


def _fail_on_diagnostics(diagnostics: list[Diagnostic], fmt: str) -> None:
    _report(diagnostics, fmt)
    if diag.has_errors(diagnostics):
        raise SystemExit(1)


@main.command()
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of stdout."
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of the spec language (for editors and CI)."""
    from compiler.spec import model

    text = json.dumps(model.json_schema(), indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None


def _one_plan(spec: Path, env: str | None) -> Plan:
    from compiler import pipeline

    result = pipeline.analyse([spec])
    _fail_on(result, "text")
    units = [u for u in result.units if env is None or u.plan.environment == env]
    if not units:
        known = ", ".join(sorted(u.plan.environment or "-" for u in result.units))
        raise click.BadParameter(f"no environment '{env}' in {spec} (environments: {known})", param_hint="--env")
    if len(units) > 1:
        known = ", ".join(sorted(u.plan.environment or "-" for u in units))
        raise click.BadParameter(f"{spec} has several environments ({known}): choose one", param_hint="--env")
    return units[0].plan


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in rows)


@main.command()
@click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--env", help="The environment to explain, for specs with `environments`.")
def explain(spec: Path, env: str | None) -> None:
    """Print a spec's stages, weights, holds, gates and breach actions as a table."""
    from compiler.spec.units import format_percent

    plan = _one_plan(spec, env)
    rows = [["", "STAGE", "TRAFFIC", "MIRROR", "HOLD", "GATES", "ON BREACH"]]
    for stage in plan.stages:
        traffic = plan.traffic(stage)
        rows.append([
            "*" if stage.name == plan.current.name else "",
            stage.name, traffic,
            format_percent(stage.mirror) if stage.mirror else "-",
            stage.hold_text("-"),
            "; ".join(stage.gate_text(g) for g in stage.gates) or "-",
            f"{stage.on_breach} ({stage.severity})" if stage.gates else "-",
        ])
    title = (
        f"{plan.out}: {plan.stable.version} -> {plan.canary.version} ({plan.strategy}), current: {plan.current.name}"
    )
    click.echo(title)
    click.echo(_table(rows), nl=False)
    if plan.is_rollback:
        click.echo("* rollback: all traffic on stable")
    if any(stage.gates for stage in plan.stages):
        import textwrap

        click.echo(textwrap.fill(
            "Gates judge confidence bounds, not raw measurements: an error rate breaches when the lower bound of "
            "its Wilson interval is above the threshold, a latency when a lower confidence bound of the quantile "
            f"is; below {plan.metrics.min_requests} canary requests in a gate's window it does not judge, and the "
            "stage holds (docs/observability.md).", 100))


def run(entry: Callable[..., object] = main) -> None:
    """Entry point: no traceback ever reaches the user."""
    try:
        entry(standalone_mode=True)
    except SpecError as exc:
        click.echo(diag.render(exc.diagnostics, "text"), nl=False, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # a bug: say so plainly, without a traceback
        click.echo(f"rollout: internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("This is a bug in rollout; please report it with the spec that caused it.", err=True)
        sys.exit(1)
