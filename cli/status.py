"""``actorgrid status`` and ``actorgrid list``: what a running cluster holds, asked of its
head (and, through it, of every worker) by a short-lived driver connection.

Both print a table, or with ``--json`` the same data as JSON, ids in hex.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import actorgrid as ag

from ._common import connect_error, fail, query, say

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_connection_flags", "add_list", "add_status", "ask", "status_report"]

T = TypeVar("T")

LIST_KINDS = ("nodes", "workers", "actors", "tasks")


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
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
    return ask(address, lambda cluster: cluster.status_async())


def ask(address: str | None, what: Callable[[ag.Cluster], Awaitable[T]]) -> tuple[str, T] | str:
    """(the head's address, ``what(cluster)`` of a driver connected to it), or the one-line
    error to print. ``address`` None: $ACTORGRID_ADDRESS, else the cluster file's head.
    An ActorgridError that ``what`` raises goes to the caller."""
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
        return address, query(address, what, secret=secret)
    except ag.ActorgridError as exc:
        if isinstance(exc, ag.AuthenticationError | ag.NotInitializedError):
            return connect_error(exc, address)
        raise
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
        "used": dict(node.used),
        "free": dict(node.free),
        "labels": dict(node.labels),
        "cpu_percent": None if a is None else a.cpu_percent,
        "num_cpus": None if a is None else a.num_cpus,
        "memory_available": None if a is None else a.memory_available,
        "memory_percent": None if a is None else a.memory_percent,
        "disk_available": None if a is None else a.disk_available,
        "disk_percent": None if a is None else a.disk_percent,
        "swap_percent": None if a is None else a.swap_percent,
        "object_store": {
            **dict(zip(("used", "capacity", "spilled"), node.object_store, strict=True)),
            **dict(zip(("pooled", "pooled_bytes"), node.object_store_pool, strict=True)),
        },
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
        "cpus_reserved": worker.cpus_reserved,
        "resources": dict(worker.resources),
        "held": dict(worker.held),
        "gpu_ids": list(worker.gpu_ids),
    }


def _actor(actor: ag.ActorStatistics) -> dict[str, Any]:
    return {
        "actor_id": actor.actor_id.hex(),
        "short_id": actor.short_id,
        "label": actor.label,
        "kind": actor.kind,
        "name": actor.name,
        "namespace": actor.namespace,
        "worker_id": None if actor.worker_id is None else actor.worker_id.hex(),
    }


def _task(task: ag.TaskStatistics, workers: Mapping[bytes, ag.WorkerStatistics]) -> dict[str, Any]:
    worker = workers.get(task.worker_id) if task.worker_id is not None else None
    return {
        "task_id": task.task_id.hex(),
        "short_id": task.short_id,
        "function": task.label,
        "kind": task.kind,
        "state": task.state,
        "worker_id": None if task.worker_id is None else task.worker_id.hex(),
        "hostname": None if worker is None else worker.hostname,
        "pid": None if worker is None else worker.pid,
    }


def _tasks(status: ag.ClusterStatus) -> list[dict[str, Any]]:
    workers: dict[bytes, ag.WorkerStatistics] = {w.worker_id: w for w in status.workers}
    return [_task(t, workers) for t in status.tasks]


def status_report(address: str, status: ag.ClusterStatus) -> dict[str, Any]:
    """Everything `actorgrid status --json` prints."""
    return {
        "address": address,
        "nodes": [_node(n) for n in status.nodes],
        "num_workers": len(status.workers),
        "num_suspended": sum(w.state == "suspended" for w in status.workers),
        "num_cpus": status.num_cpus,
        "cpus_reserved": status.cpus_reserved,
        "resources": {
            name: {"total": total, "used": status.used.get(name, 0.0), "free": free}
            for name, total in sorted(status.total.items())
            for free in [status.free.get(name, 0.0)]
        },
        "num_actors": len(status.actors),
        "running": status.running,
        "queued": status.queued,
        "workers": [_worker(w) for w in status.workers],
        "actors": [_actor(a) for a in status.actors],
        "tasks": _tasks(status),
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
    """Worker and node ids are random: a prefix tells them apart."""
    return None if hex_id is None else hex_id[:8]


def _shown_ids(items: list[dict[str, Any]], key: str) -> list[str]:
    """Each item's short id (which `actorgrid kill`/`cancel` accept), or its full id where
    two items would show the same short one."""
    seen: dict[str, int] = {}
    for item in items:
        seen[item["short_id"]] = seen.get(item["short_id"], 0) + 1
    return [item["short_id"] if seen[item["short_id"]] == 1 else item[key] for item in items]


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
            "OBJECT STORE",
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
                _store(n.get("object_store")),
                _usage(n["resources"], n.get("used", {})) or None,
            )
            for n in nodes
        ],
    )


def _store(store: Mapping[str, int] | None) -> str | None:
    """ "12 MB/4 GB, 1 GB spilled, pool 2 (16 MB)": the object store's shared memory used of
    its capacity, what it spilled, and the recycled segments its free pool keeps."""
    if not store or not store["capacity"]:
        return None
    text = f"{_bytes(store['used']) or '0 B'}/{_bytes(store['capacity'])}"
    text += f", {_bytes(store['spilled'])} spilled" if store["spilled"] else ""
    pooled = store.get("pooled", 0)
    return text + (f", pool {pooled} ({_bytes(store.get('pooled_bytes', 0))})" if pooled else "")


def _amount(name: str, value: float) -> str:
    return (_bytes(int(value)) or "0 B") if name == "memory" else _number(value)


def _usage(total: Mapping[str, float], used: Mapping[str, float]) -> str:
    """ "CPU 1/4, GPU 2/2, camera 0/1": used of total, by resource."""
    return ", ".join(
        f"{k} {_amount(k, used.get(k, 0.0))}/{_amount(k, v)}" for k, v in sorted(total.items())
    )


def _worker_rows(workers: list[dict[str, Any]]) -> list[str]:
    return _table(
        (
            "WORKER",
            "NODE",
            "HOST",
            "PID",
            "ADDRESS",
            "CPUS",
            "RESERVED",
            "STATE",
            "RUNNING",
            "QUEUED",
        ),
        [
            (
                _short(w["worker_id"]),
                _short(w["node_id"]),
                w["hostname"],
                w["pid"],
                w["address"],
                _number(w["num_cpus"]),
                _number(w["cpus_reserved"]),
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
                shown,
                a["label"],
                a["kind"],
                a["name"],
                a["namespace"],
                _short(a["worker_id"]),
            )
            for a, shown in zip(actors, _shown_ids(actors, "actor_id"), strict=True)
        ],
    )


def _task_rows(tasks: list[dict[str, Any]]) -> list[str]:
    return _table(
        ("TASK", "FUNCTION", "KIND", "STATE", "WORKER", "HOST", "PID"),
        [
            (
                shown,
                t["function"],
                t["kind"],
                t["state"],
                _short(t["worker_id"]),
                t["hostname"],
                t["pid"],
            )
            for t, shown in zip(tasks, _shown_ids(tasks, "task_id"), strict=True)
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
    add_connection_flags(parser)
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
        f"CPUs: {_number(report['num_cpus'])} total, {_number(report['cpus_reserved'])} "
        "reserved by running tasks"
    )
    for name, usage in report["resources"].items():
        say(
            f"{name}: {_amount(name, usage['total'])} total, {_amount(name, usage['used'])} "
            f"used, {_amount(name, usage['free'])} free"
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
            "List a running cluster's nodes, workers, live actors, or tasks (each call running "
            "or queued on a worker: tasks, actor method calls and running coroutine actors). "
            "The ACTOR and TASK columns show the ids that `actorgrid kill` and "
            "`actorgrid cancel` take."
        ),
    )
    parser.add_argument("kind", choices=LIST_KINDS, help="what to list")
    add_connection_flags(parser)
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
        items, rows = _tasks(status), _task_rows
    if args.json:
        print(json.dumps(items), flush=True)
    elif not items:
        say(f"no {kind} {'are running or queued' if kind == 'tasks' else 'are alive'}")
    else:
        for line in rows(items):
            say(line)
    return 0
