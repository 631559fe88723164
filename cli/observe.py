"""``actorgrid logs`` and ``actorgrid list tasks``: the nodes' worker log files, and tasks
with their state, worker and duration, through a short-lived driver connection
(``Cluster.read_logs``, ``Cluster.follow_logs``, ``Cluster.tasks``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

import actorgrid as ag

from ._common import connect_error, fail, say
from .status import (
    _run_list,
    _secret_for,
    _short,
    _shown_ids,
    _table,
    _tasks,
    add_connection_flags,
    add_list,
    ask,
)

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_list_with_history", "add_logs"]

DEFAULT_TAIL = 1000


# --- actorgrid logs -------------------------------------------------------------------------


def add_logs(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="print the worker log files of a running cluster's nodes",
        description=(
            "Print what workers wrote (stdout, stderr, logging), read from each node's log "
            "files through the head: also the output of workers whose drivers have finished. "
            "Each line is TIME STREAM (SOURCE pid=PID node=HOST) TEXT, SOURCE being the "
            "task's function or the actor's name or class. Files rotate at 16 MiB (two older "
            "files kept)."
        ),
    )
    parser.add_argument("--follow", "-f", action="store_true", help="then print new lines")
    parser.add_argument("--node", default="", metavar="ID", help="only nodes whose id starts so")
    parser.add_argument("--worker", default="", metavar="ID", help="only this worker (id prefix)")
    parser.add_argument("--actor", default="", metavar="NAME", help="only calls of this actor")
    parser.add_argument(
        "--tail",
        type=int,
        default=DEFAULT_TAIL,
        metavar="N",
        help=f"the last N lines (default {DEFAULT_TAIL}; 0: all the files hold)",
    )
    add_connection_flags(parser)
    parser.set_defaults(handler=_run_logs)


def _run_logs(args: argparse.Namespace) -> int:
    if args.tail < 0:
        return fail("logs", f"--tail must be 0 or more, not {args.tail}")
    filters = {"node": args.node, "worker": args.worker, "actor": args.actor}
    try:
        answer = ask(args.address, lambda c: c.read_logs_async(tail=args.tail, **filters))
    except ag.ActorgridError as exc:
        return fail("logs", str(exc))
    if isinstance(answer, str):
        return fail("logs", answer)
    address, lines = answer
    if args.json:
        print(json.dumps(lines), flush=True)
    else:
        for line in lines:
            say(line)
    if not args.follow:
        return 0
    try:
        trio.run(_follow, address, filters)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        return fail("logs", connect_error(exc, address))
    return 0


async def _follow(address: str, filters: dict[str, str]) -> None:
    secret = _secret_for(address)
    async with ag.connect(address, secret=secret, log_to_driver=False) as cluster:

        def show(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        cluster.follow_logs(show, **filters)
        await trio.sleep_forever()


# --- actorgrid list tasks -------------------------------------------------------------------


def add_list_with_history(subparsers: _Subparsers) -> None:
    """``actorgrid list``, where ``tasks`` shows durations, and with ``--all`` the recent
    tasks that have ended too (from the cluster's task events)."""
    add_list(subparsers)
    parser = subparsers.choices["list"]
    parser.add_argument(
        "--all",
        action="store_true",
        help="tasks: also those that ended (finished, failed, cancelled) in the recent events",
    )
    parser.set_defaults(handler=_run_list_tasks)


async def _status_and_tasks(cluster: ag.Cluster) -> tuple[ag.ClusterStatus, list[ag.TaskRecord]]:
    return await cluster.status_async(), await cluster.tasks_async()


def _run_list_tasks(args: argparse.Namespace) -> int:
    if args.kind != "tasks":
        return _run_list(args)
    answer = ask(args.address, _status_and_tasks)
    if isinstance(answer, str):
        return fail("list", answer)
    _, (status, records) = answer
    items = task_items(_tasks(status), records, ended=args.all, now=time.time())
    if args.json:
        print(json.dumps(items), flush=True)
    elif not items:
        say(
            "no tasks are running or queued"
            + (", and none is in the recent events" if args.all else "")
        )
    else:
        for line in _task_table(items, errors=args.all):
            say(line)
    return 0


def task_items(
    running: list[dict[str, Any]], records: list[ag.TaskRecord], *, ended: bool, now: float
) -> list[dict[str, Any]]:
    """The calls on workers now (tasks, actor calls), with how long each has run where the
    events tell; with ``ended``, the tasks of the recent events that have ended too."""
    by_id = {r.task_id.hex(): r for r in records}
    items: list[dict[str, Any]] = []
    for t in running:
        r = by_id.pop(t["task_id"], None)
        duration = None
        if r is not None and r.started is not None and t["state"] == "running":
            duration = now - r.started
        items.append({**t, "duration_s": duration, "attempts": r.attempts if r else 0, "error": ""})
    if ended:
        for tid, r in by_id.items():
            if r.state in ("finished", "failed", "cancelled"):
                items.append(
                    {
                        "task_id": tid,
                        "short_id": r.short_id,
                        "function": r.name,
                        "kind": "task",
                        "state": r.state,
                        "worker_id": None if r.worker_id is None else r.worker_id.hex(),
                        "hostname": None,
                        "pid": None,
                        "duration_s": r.duration_s,
                        "attempts": r.attempts,
                        "error": r.error,
                    }
                )
    return items


def _task_table(items: list[dict[str, Any]], *, errors: bool) -> list[str]:
    """The columns of ``actorgrid list tasks`` as they were, then DURATION (and ERROR)."""
    headers = ("TASK", "FUNCTION", "KIND", "STATE", "WORKER", "HOST", "PID", "DURATION")
    rows = []
    for t, shown in zip(items, _shown_ids(items, "task_id"), strict=True):
        duration = t["duration_s"]
        row = [
            shown,
            t["function"],
            t["kind"],
            t["state"],
            _short(t["worker_id"]),
            t["hostname"],
            t["pid"],
            "-" if duration is None else f"{duration * 1000:.1f}ms",
        ]
        if errors:
            row.append(t["error"][:60] or "-")
        rows.append(row)
    return _table((*headers, "ERROR") if errors else headers, rows)
