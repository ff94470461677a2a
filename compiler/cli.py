"""The ``rollout`` command line.

Exit codes: 0 success; 1 the input or the checked state is wrong (lint errors,
drift, a gate that says no); 2 usage.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from collections.abc import Callable

import click

from compiler import __version__
from compiler import diagnostics as diag
from compiler import emit
from compiler.spec import model
from compiler import pipeline
from compiler.diagnostics import Diagnostic, SpecError
from compiler.ir.plan import Plan
from compiler.spec.units import format_duration, format_percent

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


def _file_problem(out: Path, relative: str, why: str, code: str) -> Diagnostic:
    """A problem of a whole file of the output folder, located at its first line."""
    path = out if relative == "." else out / relative
    return Diagnostic(str(path), 1, 1, "error", why, code)


def _fail_on(result: pipeline.Result, fmt: str) -> None:
    _report(result.diagnostics, fmt)
    if not result.ok:
        raise SystemExit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    result = pipeline.analyse(paths, jobs=_jobs(jobs))
    _report(result.diagnostics, fmt)
    if not result.ok or (strict and result.diagnostics):
        raise SystemExit(1)
    if fmt == "text":
        click.echo(f"{len(result.units)} rollout(s) ok", err=True)


@main.command(name="compile")
@PATHS
@OUTPUT
@FORMAT
@JOBS
def compile_(paths: tuple[Path, ...], output: Path, fmt: str, jobs: int) -> None:
    """Compile specs into OUTPUT (every file or none; stale generated files removed).

    The output folder belongs to the specs compiled into it: compile them
    together.  Files in it that rollout did not generate are never touched.
    """
    result = pipeline.compile_paths(paths, jobs=_jobs(jobs), output=output)
    if not result.ok:
        _fail_on(result, fmt)
    try:
        changes = emit.emit(output, result.files)
    except emit.EmitError as exc:
        _report(result.diagnostics + [_file_problem(exc.out, path, why, "emit") for path, why in exc.problems], fmt)
        raise SystemExit(1) from None
    _report(result.diagnostics, fmt)
    if fmt == "text":
        click.echo(
            f"{len(result.units)} rollout(s), {len(result.files)} files: {len(changes.written)} written, "
            f"{len(changes.removed)} removed, {changes.unchanged} unchanged",
            err=True,
        )


@main.command()
@PATHS
@OUTPUT
@FORMAT
@JOBS
def check(paths: tuple[Path, ...], output: Path, fmt: str, jobs: int) -> None:
    """Exit 1 with a unified diff when OUTPUT is not what a compile would write (the CI guard)."""
    result = pipeline.compile_paths(paths, jobs=_jobs(jobs), output=output)
    if not result.ok:
        _fail_on(result, fmt)
    diffs = emit.drift_by_file(output, result.files)
    stale = [_file_problem(output, path, "differs from what `rollout compile` writes: run it and commit the result",
                           "drift") for path, _ in diffs]
    if fmt == "json":  # one JSON document on stdout; the diff itself is for the other formats
        _report(result.diagnostics + stale, fmt)
    else:
        _report(result.diagnostics + (stale if fmt == "github" else []), fmt)
        click.echo("".join(text for _, text in diffs), nl=False)
    if diffs:
        click.echo(f"{output} is stale: {len(diffs)} file(s) differ; run `rollout compile` and commit the result", err=True)
        raise SystemExit(1)
    if fmt == "text":
        click.echo(f"{output} is up to date ({len(result.files)} files)", err=True)


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of stdout.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of the spec language (for editors and CI)."""
    text = json.dumps(model.json_schema(), indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None


def _one_plan(spec: Path, env: str | None) -> Plan:
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
    plan = _one_plan(spec, env)
    rows = [["", "STAGE", "TRAFFIC", "MIRROR", "HOLD", "GATES", "ON BREACH"]]
    for stage in plan.stages:
        traffic = plan.traffic(stage)
        rows.append([
            "*" if stage.name == plan.current.name else "",
            stage.name, traffic,
            format_percent(stage.mirror) if stage.mirror else "-",
            format_duration(stage.hold) if stage.hold else "-",
            "; ".join(stage.gate_text(g) for g in stage.gates) or "-",
            f"{stage.on_breach} ({stage.severity})" if stage.gates else "-",
        ])
    title = f"{plan.out}: {plan.stable.version} -> {plan.canary.version} ({plan.strategy}), current: {plan.current.name}"
    click.echo(title)
    click.echo(_table(rows), nl=False)
    if plan.is_rollback:
        click.echo("* rollback: all traffic on stable")


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


from compiler.ops import workflow  # noqa: E402  (the pull-request commands)

main.add_command(workflow.promote)
main.add_command(workflow.rollback)
main.add_command(workflow.set_stage)
main.add_command(workflow.diff)

from compiler.ops import gate as gate_command  # noqa: E402  (live gates, the rollback webhook)
from compiler.ops import serve as serve_command  # noqa: E402

main.add_command(gate_command.gate)
main.add_command(serve_command.serve)
