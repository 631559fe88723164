"""Developer tasks. ``nox`` runs tests, lint and typecheck; ``nox -s examples`` / ``bench``.

All tool configuration lives in pyproject.toml; these sessions only install and invoke.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = Path(__file__).parent
EXAMPLE_TIMEOUT_S = 120

# Runs each example in its own process group, so that on a timeout the example's worker
# processes are killed with it; prints one line per example and exits 1 if any failed.
_RUN_EXAMPLES = """
import os, signal, subprocess, sys, time

timeout_s = float(sys.argv[1])
failed = []
for path in sys.argv[2:]:
    print(f"--- {path}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, path], start_new_session=True)
    try:
        status = proc.wait(timeout=timeout_s)
        outcome = "ok" if status == 0 else f"exit status {status}"
    except subprocess.TimeoutExpired:
        outcome = f"timed out after {timeout_s:.0f} s"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    print(f"--- {path}: {outcome} ({time.monotonic() - started:.1f} s)", flush=True)
    if outcome != "ok":
        failed.append(f"{path}: {outcome}")
if failed:
    print("failed examples:", *failed, sep="\\n  ", file=sys.stderr)
    sys.exit(1)
"""


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; arguments after ``--`` go to pytest."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check (no changes are made)."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the files listed in pyproject.toml."""
    session.install(".[test]", "mypy")
    session.run("mypy")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every examples/*.py; each must exit 0 within EXAMPLE_TIMEOUT_S."""
    paths = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.py"))
    if not paths:
        session.error("no examples/*.py found; this session expects at least one example")
    session.install(".[examples]")
    session.run("python", "-c", _RUN_EXAMPLES, str(EXAMPLE_TIMEOUT_S), *paths)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark suite; arguments after ``--`` go to benchmarks/run.py."""
    session.install(".[test]")
    session.run("python", "benchmarks/run.py", *session.posargs)
