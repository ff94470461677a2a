"""``python -m e2e [--short]``: run the closed loop and print what each run measured.

Short (``make test``): at 5 s scrape and evaluation intervals, one breach, a breach after a resume, and a
request without the token. Full (``make e2e``): five runs at 15 s intervals (each after a resume), a tenfold
breach, a broken spec beside the rollout, ten minutes of healthy traffic and an instant rollback without a
page, ``rollout advance`` of a healthy canary and of a stage that needs approval, and a run at 5 s intervals.
A run fails past three times its target (30 s at 15 s intervals, 15 s at 5 s), so that a busy machine does
not fail it; the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import sys
import time

from e2e.loop import Loop, breach, refused, resume, running, warm_up, wait_for

TARGET = {15: 30.0, 5: 15.0}


def _check(result_seconds: float, interval: int, label: str, lines: list[str]) -> None:
    bound = 3 * TARGET[interval]
    verdict = "within target" if result_seconds <= TARGET[interval] else (
        "over target" if result_seconds <= bound else "OVER THE BOUND")
    lines.append(f"  {label}: {result_seconds:.1f}s (target {TARGET[interval]:.0f}s, bound {bound:.0f}s): {verdict}")
    if result_seconds > bound:
        raise AssertionError(f"{label}: {result_seconds:.1f}s, past the bound of {bound:.0f}s")


def measured(loop: Loop, label: str, lines: list[str], error_ratio: float = 1.0) -> None:
    result = breach(loop, label, error_ratio, budget=3 * TARGET[loop.interval] + 30)
    print(result.line(), flush=True)
    _check(result.no_traffic, loop.interval, label, lines)


def short() -> list[str]:
    lines = ["short loop at 5s intervals, 20 req/s, canary 10% failing every request:"]
    with running(5) as loop:
        warm_up(loop)
        measured(loop, "breach", lines)
        resume(loop)
        warm_up(loop)
        measured(loop, "a second breach after a resume", lines)
        lines.append("  " + refused(loop))
    return lines


def full() -> list[str]:
    lines = ["full loop at 15s intervals, 20 req/s, canary 10% failing every request:"]
    with running(15) as loop:
        lines.append("  " + refused(loop))
        for run in range(1, 6):
            warm_up(loop)
            measured(loop, f"run {run}" + (" (after a resume)" if run > 1 else ""), lines)
            resume(loop)
        warm_up(loop)
        measured(loop, "a tenfold breach (50% errors against a 5% gate)", lines, error_ratio=0.5)
        resume(loop)
        broken = loop.repo / "specs" / "broken.yaml"
        text = loop.spec_text().replace("name: shop-api", "name: other").replace("weight: 10%", "weight: 120%")
        broken.write_text(text)
        loop.git("add", "specs/broken.yaml")
        loop.git("commit", "--quiet", "-m", "a broken spec beside the rollout")
        warm_up(loop)
        measured(loop, "a breach with a broken spec beside the rollout", lines)
        broken.unlink()
        loop.git("commit", "--quiet", "-am", "remove the broken spec")
        resume(loop)
        pages = len(loop.pager.pages)
        time.sleep(600)  # ten minutes of healthy traffic
        done = loop.rollout("rollback", "specs/shop.yaml", "--reason", "an instant rollback by hand")
        assert done.returncode == 0, done.stderr
        loop.commit("roll back shop-api by hand")
        wait_for("the canary to get no traffic", lambda: loop.canary_quiet(3.0), 60)
        time.sleep(loop.within + 4 * loop.interval)  # past rollback.within: the guard would have fired by now
        if len(loop.pager.pages) != pages:
            raise AssertionError(f"pages during healthy traffic or after the rollback: {loop.pager.pages[pages:]}")
        lines.append("  ten minutes of healthy traffic and an instant rollback: no page")
    lines += advance()
    lines.append("loop at 5s intervals:")
    with running(5) as loop:
        warm_up(loop)
        measured(loop, "breach", lines)
    return lines


def advance() -> list[str]:
    lines = ["rollout advance:"]
    with running(15, hold="1m") as loop:
        warm_up(loop)
        wait_for("the hold to be over", lambda: time.sleep(5) or True, 10)
        time.sleep(60)
        done = loop.rollout("advance", "specs", "-o", "generated", "--prometheus", loop.prom(""))
        assert done.returncode == 0 and "advanced" in done.stdout, done.stdout + done.stderr
        assert "current: ramp" in (loop.repo / "specs" / "shop.yaml").read_text()
        lines.append("  a healthy canary whose hold is over: advanced to ramp (" + loop.git("log", "-1", "--format=%s")
                     + ")")
    with running(15, hold="1m", approve=True) as loop:
        warm_up(loop)
        time.sleep(60)
        done = loop.rollout("advance", "specs", "-o", "generated", "--prometheus", loop.prom(""))
        assert done.returncode == 0 and "waits for approval" in done.stdout, done.stdout + done.stderr
        assert "current: canary" in (loop.repo / "specs" / "shop.yaml").read_text()
        lines.append("  a stage that needs approval: left where it is (" + done.stdout.strip().split(": ", 2)[1] + ")")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e")
    parser.add_argument("--short", action="store_true", help="The short form `make test` runs.")
    args = parser.parse_args(argv)
    started = time.monotonic()
    lines = short() if args.short else full()
    print("\n".join(lines + [f"e2e: {time.monotonic() - started:.0f}s"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
