"""``actorgrid kill`` and ``actorgrid cancel``: end an actor or a call of a running cluster,
whoever started it, through a short-lived driver connection (``Cluster.kill_actor`` and
``Cluster.cancel_task``).

Both take an id as ``actorgrid list actors``/``list tasks`` show it (the short form), the
full id, or a hex prefix only one item has; ``kill`` also takes an actor's name.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import actorgrid as ag

from ._common import fail, say
from .status import add_connection_flags, ask

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_cancel", "add_kill"]


def _where(worker_id: bytes | None) -> str:
    return "" if worker_id is None else f" on worker {worker_id.hex()[:8]}"


# --- actorgrid kill -------------------------------------------------------------------------


def add_kill(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "kill",
        help="kill an actor of a running cluster, by id or name",
        description=(
            "Kill a live actor, whoever created it, as ag.kill() does: its running and queued "
            "calls fail with ActorDiedError and its name is freed. ACTOR is the id that "
            "`actorgrid list actors` shows (or the full id, or a prefix only it has), or the "
            "actor's name (in --namespace); a name is tried first."
        ),
    )
    parser.add_argument("actor", metavar="ACTOR", help="actor id, short id, or name")
    parser.add_argument(
        "--namespace",
        default=None,
        help='the namespace of a named actor (default: "default")',
    )
    add_connection_flags(parser)
    parser.set_defaults(handler=_run_kill)


def _run_kill(args: argparse.Namespace) -> int:
    text: str = args.actor
    namespace: str | None = args.namespace
    try:
        answer = ask(args.address, lambda c: c.kill_actor_async(text, namespace=namespace))
    except ag.ActorgridError as exc:
        return fail("kill", str(exc))
    if isinstance(answer, str):
        return fail("kill", answer)
    _, actor = answer
    named = f" {actor.name!r} (namespace {actor.namespace!r})" if actor.name else ""
    say(
        f"killed actor {actor.short_id}{named}: {actor.label}, a {actor.kind} actor"
        f"{_where(actor.worker_id)}"
    )
    return 0


# --- actorgrid cancel -----------------------------------------------------------------------


def add_cancel(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "cancel",
        help="cancel a running or queued task of a running cluster",
        description=(
            "Cancel a call running or queued on a worker, whoever submitted it, as "
            "ag.cancel() does: a queued call never runs, async code is cancelled, sync code "
            "gets KeyboardInterrupt, and its worker is restarted if the code still runs after "
            "the grace period; the caller's ag.get() raises TaskCancelledError. TASK is the id "
            "that `actorgrid list tasks` shows (or the full id, or a prefix only it has)."
        ),
    )
    parser.add_argument("task", metavar="TASK", help="task id or short id")
    parser.add_argument(
        "--force",
        action="store_true",
        help="kill the worker running it at once, as ag.cancel(force=True) does (the other "
        "calls on that worker fail or are retried as if it had crashed)",
    )
    add_connection_flags(parser)
    parser.set_defaults(handler=_run_cancel)


def _run_cancel(args: argparse.Namespace) -> int:
    text: str = args.task
    force: bool = args.force
    try:
        answer = ask(args.address, lambda c: c.cancel_task_async(text, force=force))
    except ag.ActorgridError as exc:
        return fail("cancel", str(exc))
    if isinstance(answer, str):
        return fail("cancel", answer)
    _, task = answer
    what = f"{task.kind} {task.short_id} ({task.label}, {task.state}{_where(task.worker_id)})"
    if force:
        say(f"cancelled {what} and killed its worker; its node starts a fresh one")
    else:
        say(f"cancelled {what}; its caller gets TaskCancelledError")
    return 0
