"""``rollout advance``: promote every rollout whose hold is over and whose gates pass, for a CronJob or a
scheduled CI job.

For each rollout of the specs given: the time its stage took effect is read from Git (the commit that set
its ``current``), the gates are asked (:func:`compiler.ops.gate.ask`, with that time as ``--since``), and a
rollout that may advance is promoted, its spec alone compiled and committed with the files that changed
(pushed with ``--push``), all under the repository's lock that ``rollout serve`` takes too. Left alone and
listed: a rolled-back rollout, one with a firing rollback alert, one whose hold is not over or whose gates
hold or cannot judge, one at its last stage, one whose stage waits for a person's approval (reported with
the command to run). A pause file at the repository's top (``.rollout-pause``) stops every advance: a change
freeze. ``--dry-run`` says what it would do and changes nothing. Rollback always wins: ``advance`` never
promotes a rollout that is rolled back or has a firing rollback alert.

Exit 0 when every rollout was judged (advanced or left alone), 1 when a promotion failed, a spec is broken or a
rollout has no Prometheus to ask.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import click

from compiler import pipeline
from compiler.gates.algebra import string
from compiler.ir.plan import Plan
from compiler.ops import gate as gates
from compiler.ops import repo
from compiler.ops.edit import one_line
from compiler.ops.workflow import WorkflowError
from compiler.sources import collect

PAUSE_FILE = ".rollout-pause"
LOCK_TIMEOUT = 300.0


@dataclass
class Advance:
    rollout: str
    stage: str
    result: str  # advanced | would advance | waits for approval | held | rolled back | firing | last | failed
    detail: str
    commit: str | None = None


def firing_rollback(plan: Plan, prometheus: gates.Prometheus, at: float | None = None) -> bool:
    """A rollback alert of the rollout is firing (rollback wins over any promotion)."""
    matchers = ['alertstate="firing"', 'action="rollback"', f"rollout={string(plan.name)}",
                f"namespace={string(plan.namespace)}"]
    if plan.environment:
        matchers.append(f"environment={string(plan.environment)}")
    return bool(prometheus.instant(f"ALERTS{{{','.join(matchers)}}}", at if at is not None else prometheus.now()))


def judge_one(spec: Path, plan: Plan, prometheus: gates.Prometheus, at: float | None = None) -> Advance | gates.Report:
    """A reason to leave the rollout alone, or the gates' report."""
    stage = plan.current.name
    if plan.is_rollback:
        return Advance(plan.out, stage, "rolled back", "resume with set-stage; advance never leaves a rollback")
    following = plan.next_stage()
    if following is None:
        return Advance(plan.out, stage, "last", f"{stage} is the last stage")
    try:
        if firing_rollback(plan, prometheus, at):
            return Advance(plan.out, stage, "firing", "a rollback alert is firing: rollback wins")
    except gates.PrometheusError as exc:
        return Advance(plan.out, stage, "held", f"cannot judge: {exc}")
    since = repo.stage_since(spec, plan.environment, stage)
    if since is None:
        return Advance(plan.out, stage, "held", f"cannot tell when {stage} took effect: commit the spec first")
    return gates.ask(plan, prometheus, at, since)


def advance_one(spec: Path, plan: Plan, prometheus: gates.Prometheus, output: Path, *, dry_run: bool, commit: bool,
                push: bool, at: float | None = None) -> Advance:
    judged = judge_one(spec, plan, prometheus, at)
    if isinstance(judged, Advance):
        return judged
    stage = plan.current.name
    reasons = "; ".join(judged.reasons)
    if judged.decision == "approval":
        return Advance(plan.out, stage, "waits for approval", f"{reasons} (`{judged.command}`)")
    if judged.decision != "promote" or judged.next_stage is None:
        return Advance(plan.out, stage, "held", f"{judged.decision}: {reasons or 'no reason given'}")
    target = judged.next_stage
    if dry_run:
        return Advance(plan.out, stage, "would advance", f"{stage} -> {target}")
    message = one_line(f"advance {plan.out}: {stage} -> {target}") + "\n\nHold over and every gate passed " \
        f"(rollout advance, {judged.at}).\n"
    try:
        with repo.lock_for(spec, commit, LOCK_TIMEOUT):
            fresh, _ = pipeline.analyse_file(spec)  # the spec as it is now, under the lock
            now = next((u.plan for u in fresh if u.plan.out == plan.out), None)
            if now is None or now.current.name != stage:
                return Advance(plan.out, stage, "held", "the spec changed meanwhile: judged again next time")
            change = repo.change_spec(spec, target, plan.environment, output, message, reason=None, commit=commit,
                                      push=push)
    except (OSError, WorkflowError, repo.GitError) as exc:
        return Advance(plan.out, stage, "failed", one_line(str(exc)))
    return Advance(plan.out, stage, "advanced", f"{stage} -> {target}, {len(change.written)} files",
                   change.commit)


def _prometheus_urls(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        env, sep, url = value.partition("=")
        parts = urllib.parse.urlsplit(url)
        if not sep or not env or parts.scheme not in ("http", "https") or not parts.netloc:
            raise click.BadParameter(f"'{value}' is not ENV=URL (e.g. production=http://prometheus-prod:9090)")
        out[env] = url
    return out


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The output folder the specs compile into (e.g. generated).")
@click.option("--prometheus", "url", help="Base URL of the Prometheus that scrapes the exporters.")
@click.option("--prometheus-env", "urls", multiple=True, callback=_prometheus_urls,
              help="ENV=URL: the Prometheus of one environment (repeat for each); --prometheus for the others.")
@click.option("--dry-run", is_flag=True, help="Say what would be advanced; change nothing.")
@click.option("--commit/--no-commit", default=True, show_default=True, help="Commit each promotion.")
@click.option("--push", is_flag=True, help="Push each promotion (rebasing and retrying when the remote moved).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for each answer from Prometheus.")
@click.option("--at", type=gates.Time(), help="Judge at this time (RFC 3339 or Unix seconds) instead of now.")
def advance(paths: tuple[Path, ...], output: Path, url: str | None, urls: dict[str, str], dry_run: bool, commit: bool,
            push: bool, timeout: float, at: float | None) -> None:
    """Promote every rollout whose hold is over and whose gates pass: promote, compile and commit each.

    The hold is measured from the commit that set the stage. A stage that needs
    approval (`approve: manual`) is reported, never advanced; a rolled-back rollout
    or one with a firing rollback alert is never promoted. A file named
    .rollout-pause at the top of the repository stops every advance. Exit 0 when
    every rollout was judged, 1 when a promotion failed, a spec is broken or a
    rollout has no Prometheus.
    """
    if push and not commit:
        raise click.UsageError("--push needs --commit")
    found, problems = collect(paths)
    for problem in problems:
        click.echo(problem.text(), err=True)
    if found:
        try:
            top = repo.toplevel(found[0].path)
        except repo.GitError:
            top = None
        if top is not None and repo.paused(top, PAUSE_FILE):
            click.echo(f"paused: {top / PAUSE_FILE} exists (a change freeze): nothing advanced")
            return
        if top is not None and commit and not dry_run:
            try:
                with repo.lock_for(top, True, LOCK_TIMEOUT):
                    said = repo.recover(top)
            except (OSError, WorkflowError, repo.GitError) as exc:
                raise click.ClickException(f"cannot undo an interrupted change: {one_line(str(exc))}") from None
            if said:
                click.echo(said)
    failed = bool(problems)
    for spec in found:
        units, diagnostics = pipeline.analyse_file(spec.path)
        errors = [d for d in diagnostics if d.severity == "error"]
        if errors:
            click.echo(f"{spec.shown}: broken, left alone: {errors[0].text()}")
            failed = True
            continue
        for unit in units:
            chosen = urls.get(unit.plan.environment or "", url)
            if chosen is None:
                which = (f"environment {unit.plan.environment}: give --prometheus or --prometheus-env "
                         f"{unit.plan.environment}=URL") if unit.plan.environment else "it: give --prometheus URL"
                click.echo(f"{unit.plan.out}: no Prometheus for {which}")
                failed = True
                continue
            done = advance_one(spec.path, unit.plan, gates.Prometheus(chosen, timeout), output, dry_run=dry_run,
                               commit=commit, push=push, at=at)
            suffix = f" (commit {done.commit[:12]})" if done.commit else ""
            click.echo(f"{done.rollout} at {done.stage}: {done.result}: {done.detail}{suffix}")
            failed = failed or done.result == "failed"
    if failed:
        raise SystemExit(1)
