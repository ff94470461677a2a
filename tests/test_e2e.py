"""The closed loop's short form on 127.0.0.1 (`make e2e` runs the full measurement): Prometheus, Alertmanager,
HAProxy, two backends, 20 requests/s, `rollout serve` with a token, a Git repository and an applier. A breach
is rolled back, a breach after a resume too, and a request without the token changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT, report_line, tool


def test_the_closed_loop_rolls_back_a_breach_and_a_second_breach_after_a_resume():
    for name in ("prometheus", "prometheus-alertmanager", "haproxy"):
        tool(name)  # `make unit` skips this test; a missing program fails it
    done = subprocess.run([sys.executable, "-m", "e2e", "--short"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in done.stdout.splitlines():
        if line.startswith("  "):
            report_line(f"e2e (short): {line.strip()}")
