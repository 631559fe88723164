"""``actorgrid status`` and ``actorgrid list``: what a running cluster holds, asked of its
head (and, through it, of every worker) by a short-lived driver connection.

Both print a table, or with ``--json`` the same data as JSON, ids in hex.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import actorgrid as ag

from ._common import connect_error, fail, query, say

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_list", "add_status", "status_report"]

LIST_KINDS = ("nodes", "workers", "actors", "tasks")


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=None,
        help='the head to ask (default: $ACTORGRID_ADDRESS, else "auto": the cluster '
        "`actorgrid up` started; its secret comes from $ACTORGRID_SECRET or the cluster file)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _ask_status(address: str | None) -> tuple[str, ag.ClusterStatus] | str:
    """(the head's address, its status), or the one-line error to print."""
    address = address or os.environ.get("ACTORGRID_ADDRESS") or "auto"
    secret: bytes | None = None
    if address == "auto":
        try:
            recorded = ag.ClusterFile.load()
        except ag.NotInitializedError as exc:
            return f"{exc}; or pass --address HOST:PORT with ACTORGRID_SECRET set"
        address, secret = recorded.address, recorded.secret
    else:
        secret = _secret_for(address)
        if secret is None:
            return (
                f"asking the head at {address} needs the cluster secret: set "
                "ACTORGRID_SECRET to it (hex), or leave out --address on the machine that ran "
                "`actorgrid up`"
            )
    try:
        return address, query(address, lambda cluster: cluster.status_async(), secret=secret)
    except Exception as exc:
        return connect_error(exc, address)


def _secret_for(address: str) -> bytes | None:
    """$ACTORGRID_SECRET, else the cluster file's secret if it records this head."""
    env = os.environ.get("ACTORGRID_SECRET")
    if env:
        try:
            return bytes.fromhex(env)
        except ValueError:
            return None
    try:
        recorded = ag.ClusterFile.load()
    except ag.NotInitializedError:
        return None
    return recorded.secret if recorded.address == address else None


# --- records as JSON-ready dicts ------------------------------------------------------------


def _node(node: ag.NodeStatistics) -> dict[str, Any]:
    a = node.availability
    return {
        "node_id": node.node_id.hex(),
        "hostname": node.hostname,
        "pid": node.pid,
        "num_workers": node.num_workers,
        "state": node.state,
        "last_pulse_s": round(node.last_pulse_s, 3),
        "resources": dict(node.resources),
        "cpu_percent": None if a is None else a.cpu_percent,
        "num_cpus": None if a is None else a.num_cpus,
        "memory_available": None if a is None else a.memory_available,
        "memory_percent": None if a is None else a.memory_percent,
        "disk_available": None if a is None else a.disk_available,
        "disk_percent": None if a is None else a.disk_percent,
        "swap_percent": None if a is None else a.swap_percent,
    }


def _worker(worker: ag.WorkerStatistics) -> dict[str, Any]:
    return {
        "worker_id": worker.worker_id.hex(),
        "node_id": worker.node_id.hex(),
        "address": worker.address,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "num_cpus": worker.num_cpus,
        "state": worker.state,
        "running": worker.running,
        "queued": worker.queued,
    }


def _actor(actor: ag.ActorStatistics) -> dict[str, Any]:
    return {
        "actor_id": actor.actor_id.hex(),
        "label": actor.label,
        "kind": actor.kind,
        "name": actor.name,
        "namespace": actor.namespace,
        "worker_id": None if actor.worker_id is None else actor.worker_id.hex(),
    }


def _task(worker: ag.WorkerStatistics) -> dict[str, Any]:
    return {
        "worker_id": worker.worker_id.hex(),
        "node_id": worker.node_id.hex(),
        "hostname": worker.hostname,
        "pid": worker.pid,
        "running": max(worker.running, 0),
        "queued": max(worker.queued, 0),
    }


def _cpus_in_use(status: ag.ClusterStatus) -> float:
    """CPUs taken by running calls: a worker's calls use at most its CPUs."""
    return sum(min(float(max(w.running, 0)), w.num_cpus) for w in status.workers)


def status_report(address: str, status: ag.ClusterStatus) -> dict[str, Any]:
    """Everything `actorgrid status --json` prints."""
    return {
        "address": address,
        "nodes": [_node(n) for n in status.nodes],
        "num_workers": len(status.workers),
        "num_suspended": sum(w.state == "suspended" for w in status.workers),
        "num_cpus": status.num_cpus,
        "cpus_in_use": _cpus_in_use(status),
        "num_actors": len(status.actors),
        "running": status.running,
        "queued": status.queued,
        "workers": [_worker(w) for w in status.workers],
        "actors": [_actor(a) for a in status.actors],
    }


# --- text -----------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [list(headers), *([("-" if c is None else str(c)) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def _bytes(n: int | None) -> str | None:
    if n is None:
        return None
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    raise AssertionError("unreachable")


def _short(hex_id: str | None) -> str | None:
    return None if hex_id is None else hex_id[:8]


def _number(x: float) -> str:
    return f"{x:g}"


def _node_rows(nodes: list[dict[str, Any]]) -> list[str]:
    return _table(
        (
            "NODE",
            "HOST",
            "PID",
            "WORKERS",
            "STATE",
            "CPU %",
            "FREE MEMORY",
            "LAST PULSE",
            "RESOURCES",
        ),
        [
            (
                _short(n["node_id"]),
                n["hostname"],
                n["pid"],
                n["num_workers"],
                n["state"],
                None if n["cpu_percent"] is None else f"{n['cpu_percent']:.1f}",
                _bytes(n["memory_available"]),
                f"{n['last_pulse_s']:.1f} s ago",
                ", ".join(f"{k}={_number(v)}" for k, v in n["resources"].items()) or None,
            )
            for n in nodes
        ],
    )


def _worker_rows(workers: list[dict[str, Any]]) -> list[str]:
    return _table(
        ("WORKER", "NODE", "HOST", "PID", "ADDRESS", "CPUS", "STATE", "RUNNING", "QUEUED"),
        [
            (
                _short(w["worker_id"]),
                _short(w["node_id"]),
                w["hostname"],
                w["pid"],
                w["address"],
                _number(w["num_cpus"]),
                w["state"],
                max(w["running"], 0),
                max(w["queued"], 0),
            )
            for w in workers
        ],
    )


def _actor_rows(actors: list[dict[str, Any]]) -> list[str]:
    return _table(
        ("ACTOR", "CLASS", "KIND", "NAME", "NAMESPACE", "WORKER"),
        [
            (
                _short(a["actor_id"]),
                a["label"],
                a["kind"],
                a["name"],
                a["namespace"],
                _short(a["worker_id"]),
            )
            for a in actors
        ],
    )


def _task_rows(tasks: list[dict[str, Any]]) -> list[str]:
    return _table(
        ("WORKER", "NODE", "HOST", "PID", "RUNNING", "QUEUED"),
        [
            (
                _short(t["worker_id"]),
                _short(t["node_id"]),
                t["hostname"],
                t["pid"],
                t["running"],
                t["queued"],
            )
            for t in tasks
        ],
    )


def _indent(lines: list[str]) -> None:
    for line in lines:
        say(f"  {line}")


# --- actorgrid status -----------------------------------------------------------------------


def add_status(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show a running cluster's nodes, workers, CPUs, actors and tasks",
        description="Ask a running cluster's head for its nodes, workers, actors and tasks.",
    )
    _add_connection_flags(parser)
    parser.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    answer = _ask_status(args.address)
    if isinstance(answer, str):
        return fail("status", answer)
    address, status = answer
    report = status_report(address, status)
    if args.json:
        print(json.dumps(report), flush=True)
        return 0
    say(f"cluster at {address}")
    say(f"nodes: {len(report['nodes'])}")
    _indent(_node_rows(report["nodes"]))
    say(f"workers: {report['num_workers']} ({report['num_suspended']} suspended)")
    say(
        f"CPUs: {_number(report['num_cpus'])} total, {_number(report['cpus_in_use'])} in use "
        "by running calls"
    )
    say(f"actors: {report['num_actors']}")
    say(f"tasks: {report['running']} running, {report['queued']} queued")
    return 0


# --- actorgrid list -------------------------------------------------------------------------


def add_list(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list a running cluster's nodes, workers, actors or tasks",
        description=(
            "List a running cluster's nodes, workers, live actors, or tasks (per worker: "
            "calls running and queued, which is what the runtime reports)."
        ),
    )
    parser.add_argument("kind", choices=LIST_KINDS, help="what to list")
    _add_connection_flags(parser)
    parser.set_defaults(handler=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    answer = _ask_status(args.address)
    if isinstance(answer, str):
        return fail("list", answer)
    _, status = answer
    kind: str = args.kind
    items: list[dict[str, Any]]
    rows: Callable[[list[dict[str, Any]]], list[str]]
    if kind == "nodes":
        items, rows = [_node(n) for n in status.nodes], _node_rows
    elif kind == "workers":
        items, rows = [_worker(w) for w in status.workers], _worker_rows
    elif kind == "actors":
        items, rows = [_actor(a) for a in status.actors], _actor_rows
    else:
        items, rows = [_task(w) for w in status.workers], _task_rows
    if args.json:
        print(json.dumps(items), flush=True)
    else:
        for line in rows(items):
            say(line)
    return 0
