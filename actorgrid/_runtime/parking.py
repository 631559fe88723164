"""Parked agents: an idle coroutine agent kept as its suspended coroutine and its inbox, with no
Trio task (a worker hosts 100,000 of them).

An agent's code runs under ``drive``, a trampoline between its Trio task and its coroutine
that passes every Trio trap through. When the agent waits in ``async for msg in ctx.mailbox``
on an empty inbox and ``may_park`` says that nothing of Trio is held across that wait, the
mailbox yields ``PARK`` instead of parking in Trio; ``drive`` returns ``PARKED`` and the Trio
task ends, while the coroutine stays suspended, owned by its inbox (as its receiver). The next
message starts a Trio task that resumes it (agenthost.py), in the contextvars Context it had;
stopping it throws Cancelled into it in the task that stops it (its ``finally`` blocks run),
with no Trio task to cancel and unwind.

What may not cross a park, and is checked (``may_park``): a cancel scope the agent's code
entered (its task's cancel status must be the one its driver started with: one private Trio
attribute, read only on the Trio versions listed in ``_TRIO_TESTED``, else no agent parks), an
open nursery, a deadline, a cancel already called, or a wait from any task but the agent's
own (a child task reading the mailbox). What cannot be checked is a Trio object that keeps
its task's identity (a held ``trio.Lock``, a ``CapacityLimiter`` borrowed by its task, a
``current_task()`` kept): an agent that holds one across its mailbox wait sees another task
after a park.
"""

from __future__ import annotations

import math
import types
from collections.abc import Coroutine, Generator
from functools import partial
from typing import Any, Protocol, cast

import trio

from .stepping import trio_version

__all__ = [
    "PARK",
    "PARKED",
    "REPARK",
    "ParkThen",
    "Parkable",
    "cancelled_error",
    "carry_on",
    "drive",
    "may_park",
    "park",
]

# What a mailbox yields to ``drive`` to park (never seen by Trio).
PARK: Any = object()
# What ``drive`` returns when the agent parked.
PARKED: Any = object()
_PARK_ONCE = (PARK,)


class _Repark:
    """``REPARK``: what an agent waiting for a message in a Trio task of its own (kept while
    it was busy) is woken with once it idles (``AgentHost._park_idle``): its mailbox takes it
    as it takes a method call sent to a coroutine actor, refused (``Mailbox._opened`` calls
    ``reject``, here a no-op) and not a message, and waits again: parked now, if ``may_park``
    lets it."""

    __slots__ = ()

    def reject(self) -> None:
        return None


REPARK: Any = _Repark()


# The Trio releases whose Task keeps its cancel status in ``_cancel_status`` (a cancel scope
# entered changes it): on any other, no agent parks.
_TRIO_TESTED = (0, 22) <= trio_version() < (0, 40)
_STATUS = "_cancel_status" if _TRIO_TESTED else ""


class Parkable(Protocol):
    """What the mailbox and ``drive`` need of an agent's run (agenthost.py)."""

    coro: Coroutine[Any, Any, Any] | None
    context: Any  # the contextvars Context it runs in once it has parked; None before
    driver: trio.lowlevel.Task | None  # the Trio task stepping it, None while parked
    status: object  # that task's cancel status when it started stepping it
    scope: trio.CancelScope

    def parks(self) -> bool:
        """Whether it parks at its waits now (not while it keeps a Trio task of its own)."""
        ...

    def wake(self) -> None:
        """A message came for it while parked: resume it in a Trio task."""
        ...


class _Park:
    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        # A tuple iterator (~50 bytes) is what an idle agent holds here, not a generator: it
        # yields PARK once, and the await returns when it is resumed with None.
        return cast("Generator[Any, None, None]", iter(_PARK_ONCE))


park = _Park()
"""``await park``: hand the agent to its driver to park; returns when it is resumed."""


class _Then(Protocol):
    def _after_park(self) -> Coroutine[Any, Any, Any]: ...


class ParkThen:
    """``await ParkThen(owner)``: park, as ``await park``, then go on with
    ``owner._after_park()``'s coroutine and return its value. What an idle agent holds
    under its own frame is this (~50 bytes), not the frame of a coroutine that awaits
    ``park`` (~290 bytes with its iterator): the mailbox returns one from ``__anext__``
    when it parks at once (context.py)."""

    __slots__ = ("_inner", "_owner")

    def __init__(self, owner: _Then) -> None:
        self._owner = owner
        # None: PARK not yielded yet; False: parked; then the coroutine it goes on with.
        self._inner: Coroutine[Any, Any, Any] | bool | None = None

    def __await__(self) -> Generator[Any, Any, Any]:
        return cast("Generator[Any, Any, Any]", self)

    def __iter__(self) -> ParkThen:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        inner = self._inner
        if inner is None:
            self._inner = False
            return PARK
        if inner is False:  # resumed
            inner = self._inner = self._owner._after_park()
        assert not isinstance(inner, bool)
        return inner.send(value)

    def throw(self, error: BaseException, *_: Any) -> Any:
        inner = self._inner
        if isinstance(inner, bool) or inner is None:  # thrown where it parked
            raise error
        return inner.throw(error)

    def close(self) -> None:
        inner = self._inner
        if not isinstance(inner, bool) and inner is not None:
            inner.close()


def may_park(run: Parkable) -> bool:
    """Whether the agent may park now: called by its mailbox, in the task that waits."""
    if not _STATUS or run.status is None or not run.parks():
        return False
    task = trio.lowlevel.current_task()
    scope = run.scope
    status = run.status
    return (
        run.driver is task
        and getattr(task, _STATUS, None) is status
        # A cancel from above (the worker's end): it waits in Trio, where it sees it.
        and not getattr(status, "effectively_cancelled", True)
        and not scope.cancel_called
        and not task.child_nurseries
        # Its cancel status is the one its driver began under (checked above): its deadline
        # is that of its own scope and those above it, the worker's, which have none (not
        # current_effective_deadline(), ~1 us a park).
        and scope.deadline == math.inf
    )


@types.coroutine
def drive(run: Parkable, throw: BaseException | None = None) -> Generator[Any, Any, Any]:
    """Step the agent's coroutine in this Trio task, passing Trio's traps through; its value
    (or its exception), or PARKED when it parked (then this task may end)."""
    coro = run.coro
    assert coro is not None
    context = run.context
    task = trio.lowlevel.current_task()
    run.driver = task
    run.status = getattr(task, _STATUS, None) if _STATUS else None
    value: Any = None
    try:
        while True:
            try:
                if throw is not None:
                    error, throw = throw, None
                    throw_in = coro.throw if context is None else partial(context.run, coro.throw)
                    trap = throw_in(error)
                elif context is None:  # its first run: in this task's own Context
                    trap = coro.send(value)
                else:
                    trap = context.run(coro.send, value)
            except StopIteration as stop:
                return stop.value
            if trap is PARK:
                if context is None:
                    run.context = task.context
                return PARKED
            try:
                value = yield trap
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                throw, value = exc, None
    finally:
        run.driver = None
        run.status = None


@types.coroutine
def carry_on(coro: Coroutine[Any, Any, Any], trap: Any) -> Generator[Any, Any, Any]:
    """Go on stepping a coroutine that this task stepped by hand until it yielded ``trap``:
    pass that trap and the ones after it through, until it returns."""
    while True:
        try:
            value = yield trap
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                trap = coro.send(value)
            except StopIteration as stop:
                return stop.value


def cancelled_error() -> BaseException | None:
    """A trio.Cancelled to throw into a parked agent, made as Trio makes them (its private
    constructor, on the Trio versions in ``_TRIO_TESTED``); None: resume it in a cancelled task
    instead, where its mailbox wait raises Cancelled."""
    make = getattr(trio.Cancelled, "_create", None) if _TRIO_TESTED else None
    if make is None:
        return None
    error: BaseException = make()
    return error
