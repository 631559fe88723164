"""``actorgrid down``: stop the cluster ``actorgrid up`` started.

It SIGTERMs the head (which stops every node, then itself), then whatever launchers and
processes they started are still alive, and removes the files beside the cluster file.
``up`` uses the same stop for a stale cluster file and for a start-up that failed.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

import actorgrid as ag

from ._common import (
    CLUSTER_FILE_ENV,
    ClusterPaths,
    alive,
    descendants,
    fail,
    read_sidecar,
    say,
    stop_processes,
    wait_gone,
)

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_down", "is_head", "stop_everything"]

HEAD_STOP_TIMEOUT_S = 30.0
# Launchers exit once the head has closed their nodes; after this they are signalled.
LAUNCHER_EXIT_TIMEOUT_S = 5.0


def is_head(pid: int, sidecar: dict[str, Any]) -> bool:
    """Whether ``pid`` is still the head the files record, not a process that reused it."""
    head = sidecar.get("head") or {}
    if head.get("pid") == pid:
        return alive(pid, head.get("create_time"))
    if not alive(pid):
        return False
    try:  # a head started by hand with `actorgrid start --head --write-cluster-file`
        return "--write-cluster-file" in psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


# --- actorgrid down -------------------------------------------------------------------------


def add_down(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "down",
        help="stop the cluster `actorgrid up` started",
        description=(
            "Stop the cluster the cluster file records: its head stops every node (their "
            "workers get the grace period), then itself; then any node launcher still running "
            "is stopped, and the cluster file is removed."
        ),
    )
    parser.set_defaults(handler=_run_down)


def _run_down(args: argparse.Namespace) -> int:
    paths = ClusterPaths.default()
    if not paths.cluster_file.exists() and not paths.sidecar.exists():
        return fail(
            "down",
            f"no cluster is running: there is no cluster file at {paths.cluster_file} "
            f"(`actorgrid up` writes it; set {CLUSTER_FILE_ENV} if it was started with another)",
        )
    stop_everything(paths, quiet=False)
    return 0


def stop_everything(paths: ClusterPaths, *, quiet: bool) -> None:
    """Stop the head and the launchers the files record, and whatever they started; remove
    the files."""

    def report(line: str) -> None:
        if not quiet:
            say(line)

    sidecar = read_sidecar(paths.sidecar)
    try:
        recorded: ag.ClusterFile | None = ag.ClusterFile.load(paths.cluster_file)
    except ag.NotInitializedError:
        recorded = None
    head_info = sidecar.get("head") or {}
    head_pid = recorded.head_pid if recorded is not None else head_info.get("pid", 0)
    launchers = {
        int(entry["pid"]): entry.get("create_time")
        for entry in sidecar.get("launchers", [])
        if isinstance(entry, dict) and isinstance(entry.get("pid"), int)
    }
    head_alive = bool(head_pid) and is_head(head_pid, sidecar)
    # Collected before anything stops: once a parent exits, its children are orphans.
    started = descendants(([head_pid] if head_alive else []) + list(launchers))
    where = f" at {recorded.address}" if recorded is not None else ""
    if head_alive:
        head_time = head_info.get("create_time") if head_info.get("pid") == head_pid else None
        _signal(head_pid, signal.SIGTERM)
        if wait_gone({head_pid: head_time}, HEAD_STOP_TIMEOUT_S):
            _signal(head_pid, signal.SIGKILL)
            wait_gone({head_pid: head_time}, 5.0)
            report(f"the head (pid {head_pid}) did not stop within {HEAD_STOP_TIMEOUT_S:.0f} s; "
                   "killed it")  # fmt: skip
        nodes = (
            f", and its nodes on {', '.join(recorded.nodes)}" if recorded and recorded.nodes else ""
        )
        report(f"stopped the cluster head{where} (pid {head_pid}){nodes}")
    elif head_pid:
        report(f"the cluster head{where} (pid {head_pid}) was not running")
    left = wait_gone(dict(launchers), LAUNCHER_EXIT_TIMEOUT_S if head_alive else 0.0)
    if left:
        _, killed = stop_processes(left, grace_s=LAUNCHER_EXIT_TIMEOUT_S, group=True)
        report(
            f"stopped {len(left)} node launcher{'s' if len(left) != 1 else ''} still running "
            f"(pids {', '.join(map(str, left))}{'; killed ' + str(killed) if killed else ''})"
        )
    stragglers = wait_gone(dict(started), LAUNCHER_EXIT_TIMEOUT_S)
    if stragglers:
        stop_processes(stragglers, grace_s=1.0)
        report(f"killed {len(stragglers)} leftover processes (pids {sorted(stragglers)})")
    secret_file = sidecar.get("secret_file")
    if secret_file and sidecar.get("generated_secret"):
        Path(secret_file).unlink(missing_ok=True)
    paths.cluster_file.unlink(missing_ok=True)
    paths.sidecar.unlink(missing_ok=True)
    report(f"removed the cluster file {paths.cluster_file}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
