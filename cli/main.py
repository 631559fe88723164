"""The ``actorgrid`` command.

Every sub-command is two functions and one entry in ``_COMMANDS``:

* ``_add_<name>(subparsers)`` declares the sub-command and its arguments, and sets
  ``handler=_run_<name>`` on its parser;
* ``_run_<name>(args) -> int`` does the work and returns the exit status (0 ok, 1 failed;
  argparse itself uses 2 for usage errors).

The cluster commands live in modules of their own, where ``add_<name>`` is public so that
``_COMMANDS`` can list it: ``up`` (up, down), ``serve`` (start --head, node), ``status``
(status, list), ``operate`` (kill, cancel), ``dashboard`` and ``jobs`` (submit, jobs).

Handlers use only the public API (``import actorgrid as ag``) and report failures as one
line on stderr and a non-zero status, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import actorgrid as ag

from . import dashboard, down, jobs, observe, operate, serve, status, up
from ._options import positive_int

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]

CHECK_NUM_TASKS = 8
CHECK_ACTOR_START = 5
CHECK_ACTOR_INCREMENT = 2
# Bounds each ag.get in `actorgrid check`, so a broken cluster fails instead of hanging.
CHECK_GET_TIMEOUT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error that argparse has already printed
        return _exit_status(exc)
    if args.version:
        return _run_version(args)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print("actorgrid: error: a command is required (see `actorgrid --help`)", file=sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:  # handlers that start something clean it up themselves
        print("actorgrid: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout went to `head` or similar, which has exited
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit fails no more
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actorgrid",
        description="Run and inspect actorgrid clusters.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    return 1


# --- actorgrid version ----------------------------------------------------------------------


def _add_version(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser("version", help="print the version and exit")
    parser.set_defaults(handler=_run_version)


def _run_version(args: argparse.Namespace) -> int:
    print(f"actorgrid {ag.__version__}")
    return 0


# --- actorgrid check ------------------------------------------------------------------------


def _add_check(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="start an embedded local cluster, run a few tasks and an actor call, stop it",
        description=(
            "Start an embedded local cluster, run "
            f"{CHECK_NUM_TASKS} tasks and one actor call, print the cold-start time and the "
            "results, and shut the cluster down. Exits 0 and prints 'ok' when all is well."
        ),
    )
    parser.add_argument(
        "--num-workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes to start (default: chosen by ag.init, one per CPU)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    as_json: bool = args.json
    num_workers: int | None = args.num_workers

    def say(line: str) -> None:
        if not as_json:
            print(line, flush=True)

    # Defined here, not at module level, so that they are pickled by value: the workers need
    # actorgrid, not this CLI module (which a worker whose sys.path puts a source checkout
    # first, or a worker on another machine, may not be able to import).
    def square(x: int) -> int:
        return x * x

    class Counter:
        def __init__(self, start: int) -> None:
            self.n = start

        def incr(self, k: int) -> int:
            self.n += k
            return self.n

    report: dict[str, Any] = {"version": ag.__version__, "num_workers": num_workers}
    t0 = time.perf_counter()
    try:
        say(
            f"actorgrid {ag.__version__}: starting an embedded local cluster "
            f"(num_workers={'default' if num_workers is None else num_workers})"
        )
        with ag.init(num_workers=num_workers):
            report["init_s"] = round(time.perf_counter() - t0, 6)
            say(f"ag.init returned after {report['init_s']:.3f} s")

            remote_square = ag.remote(square)
            refs = [remote_square.remote(i) for i in range(CHECK_NUM_TASKS)]
            results = ag.get(refs, timeout=CHECK_GET_TIMEOUT_S)
            report["cold_start_s"] = round(time.perf_counter() - t0, 6)
            report["results"] = list(results)
            say(f"cold start: {report['cold_start_s']:.3f} s (ag.init to {len(refs)} results)")
            say(f"tasks: square(0..{CHECK_NUM_TASKS - 1}) = {report['results']}")
            expected = [square(i) for i in range(CHECK_NUM_TASKS)]
            if report["results"] != expected:
                raise RuntimeError(f"tasks returned {report['results']}, expected {expected}")

            counter = ag.remote(Counter).remote(CHECK_ACTOR_START)
            actor_result = ag.get(
                counter.incr.remote(CHECK_ACTOR_INCREMENT), timeout=CHECK_GET_TIMEOUT_S
            )
            report["actor_result"] = actor_result
            say(
                f"actor: Counter({CHECK_ACTOR_START}).incr({CHECK_ACTOR_INCREMENT}) = {actor_result}"
            )
            if actor_result != CHECK_ACTOR_START + CHECK_ACTOR_INCREMENT:
                raise RuntimeError(
                    f"actor call returned {actor_result!r}, "
                    f"expected {CHECK_ACTOR_START + CHECK_ACTOR_INCREMENT}"
                )
    except Exception as exc:
        report.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        report["total_s"] = round(time.perf_counter() - t0, 6)
        if as_json:
            print(json.dumps(report))
        print(
            f"actorgrid check failed after {report['total_s']:.1f} s: {report['error']}",
            file=sys.stderr,
        )
        return 1
    report.update(ok=True, total_s=round(time.perf_counter() - t0, 6))
    if as_json:
        print(json.dumps(report))
    else:
        say(f"total: {report['total_s']:.3f} s (including shutdown)")
        say("ok")
    return 0


# Sub-commands in the order `actorgrid --help` lists them.
_COMMANDS: tuple[Callable[[_Subparsers], None], ...] = (
    up.add_up,
    down.add_down,
    serve.add_start,
    serve.add_node,
    status.add_status,
    observe.add_list_with_history,
    observe.add_logs,
    operate.add_kill,
    jobs.add_submit,
    jobs.add_jobs,
    operate.add_cancel,
    dashboard.add_dashboard,
    _add_check,
    _add_version,
)
