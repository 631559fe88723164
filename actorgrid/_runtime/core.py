"""The per-process runtime: one in every driver and worker.

It listens for peers, keeps one outbound connection per peer address (requests go out on it,
answers come back on it, so one caller's calls to one worker stay in order), owns the objects
this process created, places this process's calls on workers, and caches names. The head is
consulted only for membership and names, never for a call; its link is kept up by HeadLink
(``headlink.py``), which reconnects after a loss.

Failing over: a call whose link dies is retried, restarted or failed by its policy; one that
was never written (its dial failed or timed out, after DIAL_TIMEOUT_INTERVALS pulses) is
placed again without spending a retry; a worker the head declares dead has its link dropped,
so its calls fail over at once. A call no worker fits waits (``waiting.py``) until one does.

The name cache holds only live actors: the head sends NamesEnded to every process it gave a
named actor to, and waits for its Ack, before the actor's end is confirmed to its worker. So a
send by name after a named actor's end is known (its ref resolved, its kill returned) never
goes to it: it reaches the name's new holder or raises NameNotFoundError.

Thread model: everything here runs on the runtime's Trio loop, except the methods marked
"any thread", which serialize in the calling thread and hop onto the loop through the Portal.

Runtime is built in layers, one module per responsibility, each class extending the one below:
``links.py`` (state, lifecycle, peer and head links, events), ``objects.py`` (put, fetch, get,
wait), ``tasks.py`` (submission, retries, results, cancels), ``actors.py`` (owned actors and
their restarts), ``claims.py`` (name claims), ``names.py`` (names, lookup, kill, send, ask),
then ``Runtime`` here. The
records they share (TaskSpec, Sent, OwnedActor) are in ``records.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from . import current
from .names import RuntimeNames

if TYPE_CHECKING:
    from .handles import CallerRuntime
    from .refs import RefOwner

__all__ = ["Runtime", "current_runtime", "runtime_or_none", "set_current_runtime"]


def current_runtime() -> Runtime:
    """This process's runtime; raises NotInitializedError when there is none."""
    return cast(Runtime, current.get())


def runtime_or_none() -> Runtime | None:
    return cast("Runtime | None", current.get_or_none())


def set_current_runtime(rt: Runtime | None) -> None:
    current.set_current(rt)


class Runtime(RuntimeNames):
    """The per-process runtime, one in every driver and worker (see the module docstring)."""


if TYPE_CHECKING:
    # refs and handles reach the runtime through current.py, each by a Protocol of what it
    # needs; the runtime must be all of them.
    def _is_what_refs_and_handles_need(rt: Runtime) -> tuple[RefOwner, CallerRuntime]:
        return rt, rt
