"""``actorgrid submit`` and ``actorgrid jobs list|logs|stop``: driver programs run on the
head's machine (``cluster.jobs``).

``submit`` ships ``--working-dir`` (minus ``--exclude`` patterns), starts the command there,
prints its output as it comes and exits with its exit status (128+N for a job killed by
signal N). A Ctrl-C stops the job (and what it started) and exits with 130; with
``--no-wait`` it prints the job id and leaves the job running.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
from typing import TYPE_CHECKING

import trio

import actorgrid as ag

from ._common import connect_error, fail, leaves
from .status import _secret_for, add_connection_flags, ask

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_jobs", "add_submit"]

INTERRUPTED = 130


# --- actorgrid submit -----------------------------------------------------------------------


def add_submit(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="run a driver program on the head's machine and follow it",
        description=(
            "Run COMMAND as a job on the head's machine (its ag.init() joins the cluster), "
            "with --working-dir shipped there as its current directory and its workers' code. "
            "Its output streams here; the exit status is the job's. Ctrl-C stops the job and "
            "everything it started."
        ),
    )
    parser.add_argument("--working-dir", metavar="DIR", default=None, help="folder to ship")
    parser.add_argument(
        "--exclude",
        metavar="PATTERN",
        action="append",
        default=[],
        help=".gitignore-style pattern left out of --working-dir (repeatable)",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="print the job id and leave it running"
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=None,
        help='the head (default: $ACTORGRID_ADDRESS, else "auto": the cluster `actorgrid up` '
        "started)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    parser.set_defaults(handler=_run_submit)


def _target(address: str | None) -> tuple[str, bytes | None] | str:
    address = address or os.environ.get("ACTORGRID_ADDRESS") or "auto"
    if address == "auto":
        try:
            recorded = ag.ClusterFile.load()
        except ag.NotInitializedError as exc:
            return f"{exc}; or pass --address HOST:PORT with ACTORGRID_SECRET set"
        return recorded.address, recorded.secret
    secret = _secret_for(address)
    if secret is None:
        return (
            f"submitting to the head at {address} needs the cluster secret: set "
            "ACTORGRID_SECRET to it (hex)"
        )
    return address, secret


def _run_submit(args: argparse.Namespace) -> int:
    command: list[str] = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        return fail("submit", "no command given: `actorgrid submit -- python script.py`", 2)
    target = _target(args.address)
    if isinstance(target, str):
        return fail("submit", target)
    address, secret = target
    try:
        return trio.run(
            _submit, address, secret, command, args.working_dir, args.exclude, args.no_wait
        )
    except BaseException as exc:
        leaf = next(leaves(exc)) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(leaf, ag.AuthenticationError | ag.NotInitializedError):
            return fail("submit", connect_error(leaf, address))
        if isinstance(leaf, ag.ActorgridError | OSError):
            return fail("submit", str(leaf))
        raise leaf from None


async def _submit(
    address: str,
    secret: bytes | None,
    command: list[str],
    working_dir: str | None,
    excludes: list[str],
    no_wait: bool,
) -> int:
    # Installed first: a Ctrl-C at any point stops the job, never the runtime under it.
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with ag.connect(address, secret=secret) as cluster:
            async with trio.open_nursery() as nursery:
                interrupted = trio.Event()

                async def watch() -> None:
                    async for _ in interrupts:
                        interrupted.set()

                nursery.start_soon(watch)
                run: ag.JobRun | None = None
                with trio.CancelScope() as scope:
                    nursery.start_soon(_cancel_on, interrupted, scope)
                    run = await cluster.jobs.submit_async(
                        command, working_dir=working_dir, excludes=excludes, follow=not no_wait
                    )
                if run is None:
                    # Interrupted before the head answered: leaving closes our link, and the
                    # head stops a job whose submitter left.
                    nursery.cancel_scope.cancel()
                    return INTERRUPTED
                if no_wait:
                    print(run.job_id, flush=True)
                    nursery.cancel_scope.cancel()
                    return 0
                print(f"actorgrid submit: job {run.job_id} started", file=sys.stderr, flush=True)

                async def stop_on_interrupt() -> None:
                    await interrupted.wait()
                    print(
                        f"actorgrid submit: interrupted; stopping job {run.job_id}",
                        file=sys.stderr,
                        flush=True,
                    )
                    await cluster.jobs.stop_async(run.job_id)

                nursery.start_soon(stop_on_interrupt)
                out = sys.stdout.buffer
                async for chunk in run.output():
                    out.write(chunk)
                    out.flush()
                nursery.cancel_scope.cancel()
            if interrupted.is_set():
                return INTERRUPTED
            code = run.exit_code
            if code is None:
                return fail("submit", f"lost the head before job {run.job_id} ended")
            return 128 - code if code < 0 else code


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


# --- actorgrid jobs -------------------------------------------------------------------------


def add_jobs(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="list jobs, show a job's output, stop a job",
        description="The jobs `actorgrid submit` started on the cluster's head.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION")
    listing = actions.add_parser("list", help="every job the head remembers")
    add_connection_flags(listing)
    listing.set_defaults(handler=_run_list)
    logs = actions.add_parser("logs", help="a job's output so far")
    logs.add_argument("job_id", metavar="ID")
    add_connection_flags(logs)
    logs.set_defaults(handler=_run_logs)
    stop = actions.add_parser("stop", help="stop a job and everything it started")
    stop.add_argument("job_id", metavar="ID")
    add_connection_flags(stop)
    stop.set_defaults(handler=_run_stop)
    parser.set_defaults(handler=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return fail("jobs", "an action is required: list, logs ID or stop ID", 2)


def _run_list(args: argparse.Namespace) -> int:
    answer = ask(args.address, lambda c: c.jobs.list_async())
    if isinstance(answer, str):
        return fail("jobs list", answer)
    jobs = answer[1]
    if args.json:
        print(json.dumps([_job(j) for j in jobs], indent=2))
        return 0
    if not jobs:
        print("no jobs")
        return 0
    print(f"{'JOB ID':<14} {'STATE':<10} {'EXIT':>4} {'PID':>7}  {'STARTED':<8}  COMMAND")
    for j in jobs:
        exit_code = "" if j.exit_code is None else str(j.exit_code)
        started = datetime.datetime.fromtimestamp(j.start_time).strftime("%H:%M:%S")
        command = " ".join(j.argv)
        print(f"{j.job_id:<14} {j.state:<10} {exit_code:>4} {j.pid:>7}  {started:<8}  {command}")
    return 0


def _job(j: ag.JobStatistics) -> dict[str, object]:
    return {
        "job_id": j.job_id,
        "argv": list(j.argv),
        "state": j.state,
        "exit_code": j.exit_code,
        "start_time": j.start_time,
        "end_time": j.end_time,
        "pid": j.pid,
    }


def _run_logs(args: argparse.Namespace) -> int:
    job_id: str = args.job_id
    try:
        answer = ask(args.address, lambda c: c.jobs.logs_async(job_id))
    except ag.ActorgridError as exc:
        return fail("jobs logs", str(exc))
    if isinstance(answer, str):
        return fail("jobs logs", answer)
    sys.stdout.write(answer[1])
    sys.stdout.flush()
    return 0


def _run_stop(args: argparse.Namespace) -> int:
    job_id: str = args.job_id
    try:
        answer = ask(args.address, lambda c: c.jobs.stop_async(job_id))
    except ag.ActorgridError as exc:
        return fail("jobs stop", str(exc))
    if isinstance(answer, str):
        return fail("jobs stop", answer)
    print(f"stopped job {job_id}")
    return 0
