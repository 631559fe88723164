"""A coroutine agent's run on its worker, what ``AgentHost`` (agenthost.py) keeps of it
between its Trio tasks: its coroutine, its contextvars Context, its restarts, and the cancel
scope it is in (parking.py says how it parks and is resumed or stopped without a task)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._protocol.messages import ActorInfo
from .._scheduler.restart import Restart, RestartTracker
from .context import Context
from .lanes import _Slot, _Task, log
from .restarts import ACTOR_RESTART_POLICY, RestartLog

if TYPE_CHECKING:
    from .._protocol.ids import ObjectId
    from .peer import Peer

__all__ = ["BUSY_WAKES", "PARK_FROM", "PARK_FROM_DEFAULT", "PARK_IDLE_S", "AgentRun"]


class _Host(Protocol):
    """What a run needs of its host (agenthost.AgentHost)."""

    idle_checks: int  # its idle checks so far (AgentHost._park_idle)
    _sweeping: bool  # whether they run

    def _watch_idle(self) -> None: ...

    def _wake_own(self, run: AgentRun) -> bool: ...

    def _wake_soon(self, run: AgentRun) -> None: ...

    def _reap_soon(self, run: AgentRun) -> None: ...


# An idle agent parks (parking.py) at its waits on an empty mailbox, from its first on: it never
# has a Trio task of its own unless it gets busy (a Trio task freed later stays in the worker's
# RSS among the agents' own: 3,000 agents that parked after a second with a task each kept
# their worker at 43.7 MB, against 33.2 MB parked from the start). On a worker hosting fewer
# actors than this, one woken BUSY_WAKES times between two idle checks gets a Trio task of its
# own, and keeps it while it is busy (AgentHost._wake_own), as parking has costs: a message to
# a parked agent costs a resumer's step, and one that awaits while handling it keeps its
# resumer's task while the rest of its batch go on in other resumers (the rumour benchmark's
# round, a few messages an agent, costs about the same workers' CPU a message either way, but a
# ring's agents, hundreds of messages each, pay it at every hop). From this many on, memory per
# agent matters more than a busy agent's CPU: it is resumed by the resumers at each message.
# Parked or not, a Trio object bound to a task (a held ``trio.Lock``) must not be held across
# the mailbox wait. ``ACTORGRID_PARK_FROM`` in the environment of ``ag.init`` (or of
# ``actorgrid node``) sets it for the workers it starts.
PARK_FROM_DEFAULT = 10_000


def _park_from(value: str | None) -> int:
    if not value:
        return PARK_FROM_DEFAULT
    try:
        return max(1, int(value))
    except ValueError:
        log.warning(
            "ACTORGRID_PARK_FROM=%r is not a whole number of actors: idle agents park from "
            "%d actors a worker, the default",
            value,
            PARK_FROM_DEFAULT,
        )
        return PARK_FROM_DEFAULT


PARK_FROM = _park_from(os.environ.get("ACTORGRID_PARK_FROM"))
# A parked agent woken this many times between two idle checks (PARK_IDLE_S / 2 apart) is busy:
# on a worker below PARK_FROM actors, it gets a Trio task of its own (a ring that starts pays a
# Trio task once per agent, not a resumer's step per message), while one woken by a round of a
# few messages stays parked.
BUSY_WAKES = 8
# An agent with a Trio task of its own that has taken no message for this long while it waits
# on its mailbox parks again (checked by one task a worker every PARK_IDLE_S / 2, for the agents
# with a task of their own: nothing per message): between PARK_IDLE_S / 2 and PARK_IDLE_S after
# its last message.
PARK_IDLE_S = 1.0
# What a parked agent's run and slot hold instead of a cancel scope of their own: never
# entered, and never cancelled (a cancel or a KillActor reaches a coroutine agent through its
# run: AgentRun.cancel).
_PARKED_SCOPE = trio.CancelScope()


def _shared_parts(info: ActorInfo) -> ActorInfo:
    """``info`` with its strings interned: the agents of one kind on a worker share one copy of
    their label, kind, address and namespace (each decoded message has its own: ~200 bytes an
    agent). In place: the copy just decoded from a CreateActor or SubmitTask is this worker's
    own, seen by nothing else yet (a new one, ``attrs.evolve``, cost ~10 us an agent)."""
    namespace = info.namespace
    put = object.__setattr__
    put(info, "address", sys.intern(info.address))
    put(info, "kind", sys.intern(info.kind))
    put(info, "label", sys.intern(info.label))
    if namespace is not None:
        put(info, "namespace", sys.intern(namespace))
    return info


# The longest string argument an agent's start shares (``_shared_args``): longer ones are
# rarely the same for many agents, and interning hashes them all.
_SHARED_STR_MAX = 256


def _shared_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """An agent's start arguments with their short strings interned: the agents started with
    the same strings (a name prefix, the name of the agent they report to) share one copy,
    where each unpickled its own (~55 bytes a string, kept by its frame while it lives).
    Strings are immutable: only ``is`` can tell."""
    if any(type(a) is str for a in args):
        args = tuple(
            sys.intern(a) if type(a) is str and len(a) <= _SHARED_STR_MAX else a for a in args
        )
    if kwargs and any(type(v) is str for v in kwargs.values()):
        kwargs = {
            k: sys.intern(v) if type(v) is str and len(v) <= _SHARED_STR_MAX else v
            for k, v in kwargs.items()
        }
    return args, kwargs


class _Restarting:
    """A coroutine actor's restarts: its backoff and its quiet log (made at its first)."""

    __slots__ = ("quiet", "tracker")

    def __init__(self) -> None:
        self.tracker = RestartTracker(ACTOR_RESTART_POLICY)
        self.quiet = RestartLog()

    def next_delay(self, reason: str, restarts_left: int) -> float:
        decision = self.tracker.on_exit(trio.current_time())
        assert isinstance(decision, Restart)  # the policy never gives up
        line = self.quiet.line(trio.current_time(), reason, restarts_left, decision.delay_s)
        if line is not None:
            log.warning("%s", line)
        return decision.delay_s


# What a parked agent that a message woke holds as its scope until _resume_inline resumes it:
# never entered, never cancelled (its cancel makes it _STOPPING_SCOPE).
_WAKING_SCOPE = trio.CancelScope()
# What a parked agent being stopped holds as its scope (AgentRun.cancel): cancelled, never
# entered.
_STOPPING_SCOPE = trio.CancelScope()
_STOPPING_SCOPE.cancel()


class _Stopped:
    """What a parked agent that is stopped ends in instead of its own cancelled scope
    (``AgentHost._reap``), or one started in a task that carries it in a scope entered
    already (``_start_inline``): it ends the Cancelled thrown into it, and any Cancelled its
    code meets while it ends, as that scope would."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: object, tb: object) -> bool:
        if isinstance(error, trio.Cancelled):
            return True
        if isinstance(error, BaseExceptionGroup):  # a nursery's: Cancelled ends here too
            rest = error.split(trio.Cancelled)[1]
            if rest is None:
                return True
            raise rest
        return False


class AgentRun(_Task):
    """A coroutine agent's run, what ``tasks`` lists for it: a _Task's fields, and what its
    Trio tasks share (each ends when it parks, parking.py): its coroutine, the contextvars
    Context it runs in once parked, its restarts. ``scope`` is its Trio task's cancel scope
    while it runs, _PARKED_SCOPE while it is parked."""

    __slots__ = (
        "again",
        "context",
        "coro",
        "ctx",
        "driver",
        "host",
        "own",
        "restarting",
        "restarts",
        "seen",
        "slot",
        "status",
        "task_id",
        "wakes",
        "window",
    )

    def __init__(
        self, host: _Host, peer: Peer, slot: _Slot, task_id: ObjectId, restarts: int
    ) -> None:
        # No _Task.__init__: its cancel scope is made when its first task runs.
        self.peer = peer
        self.label = slot.info.label if slot.info is not None else ""  # the shared copy
        self.kind = "coroutine actor"
        self.scope = slot.scope  # a cancel before it runs: killed early
        self.host = host
        self.slot = slot
        self.task_id = task_id
        self.restarts = restarts
        self.restarting: _Restarting | None = None  # made at its first restart
        # Its code and arguments while it may run again; its coroutine while it runs.
        self.again: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.ctx: Context | None = None
        self.context: Any = None
        self.driver: trio.lowlevel.Task | None = None
        self.status: object = None
        # Whether it has a Trio task of its own, kept at its waits (AgentHost._wake_own) until
        # it idles; its wakes parked since its host's idle check ``window`` (the host's int,
        # shared: no int made per agent); with a task of its own, its mailbox's count of
        # messages taken at the last idle check (AgentHost._park_idle), -1 before one.
        self.own = False
        self.wakes = 0
        self.window = 0
        self.seen = -1

    def parks(self) -> bool:
        return not self.own

    def wake(self) -> None:
        if self.scope is not _PARKED_SCOPE:
            return  # it runs, or is being stopped
        host = self.host
        if not host._sweeping:
            host._watch_idle()
        if self.window != host.idle_checks:
            self.window = host.idle_checks
            self.wakes = 0
        self.wakes += 1
        if self.wakes >= BUSY_WAKES and host._wake_own(self):
            return
        self.scope = _WAKING_SCOPE
        self.host._wake_soon(self)

    def cancel(self) -> None:
        scope = self.scope
        if scope is _WAKING_SCOPE:  # _resume_inline stops it instead of resuming it
            self.scope = _STOPPING_SCOPE
            return
        if scope is not _PARKED_SCOPE:
            scope.cancel()
            return
        # Parked: stopped in its cancelled scope with no Trio task of its own (_reap).
        self.slot.receive.unpark_run(self)
        self.scope = _STOPPING_SCOPE
        self.host._reap_soon(self)
