"""Sync actor methods declared cheap, ``@ag.method(inline=True)``, run on the worker's loop.

A sync actor method runs on a pool thread, so that blocking user code never stops the worker
from answering pulses and messages. That costs two thread hand-offs a call (loop to pool thread,
and the answer's bookkeeping back), the larger part of a round trip on a small machine. A
method its author declares cheap and non-blocking runs right on the worker's Trio loop instead,
in the turn that received the call: its answer and the calls it makes leave in one write.

Invariants:

- An inline call runs only while nothing of its actor is queued or running (the actor's feeder
  is parked in receive and its lane is idle), so an actor's calls still run one at a time, in
  the order sent; otherwise the call takes the lane like any other. A call whose arguments hold
  ObjectRefs takes the lane too (waiting for them would block the loop).
- Blocking is never silent. While an inline call runs, the worker does nothing else (no
  pulses, no messages, no other actor), so: a watchdog thread, started with the worker's first
  inline call, logs a warning naming the method once it has held the loop for
  ``INLINE_STALL_S``; and a call that took over ``INLINE_BUDGET_S`` is logged when it returns
  and its method runs on pool threads from then on, in this worker.

Costs: one set lookup per call of a sync actor whose feeder is parked; the watchdog looks at
two attributes every ``WATCH_PERIOD_S`` and costs nothing per call.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .output import output_source
from .refs import ObjectRef
from .serialization import box_error, loads

if TYPE_CHECKING:
    from .._protocol.messages import Payload
    from .lanes import _Call, _Lane

__all__ = ["INLINE_ATTRIBUTE", "INLINE_BUDGET_S", "INLINE_STALL_S", "method", "run_inline"]

log = logging.getLogger("actorgrid.inline")

F = TypeVar("F", bound=Callable[..., Any])

INLINE_ATTRIBUTE = "__actorgrid_inline__"
# A call that held the loop longer than this demotes its method to pool threads (a pulse
# interval is 1 s by default: this is well inside one).
INLINE_BUDGET_S = 0.1
# The watchdog's warning about a call still running on the loop comes after this long.
INLINE_STALL_S = 1.0
WATCH_PERIOD_S = 0.25


def method(*, inline: bool = False) -> Callable[[F], F]:
    """Options of one actor method: ``@ag.method(inline=True)`` above a ``def`` in an actor
    class.

    ``inline=True`` declares a sync method cheap and non-blocking: the worker runs it on its
    own event loop rather than on a pool thread, which saves two thread hand-offs a call (a
    round trip or a fire-and-forget ring by handle gets markedly faster). Keep such a method
    to a few milliseconds of pure Python: no ``time.sleep``, I/O, locks or ``ag.get`` (which
    raises there). A call that runs longer than 0.1 s is logged by name, and its method runs on
    pool threads from then on; one that holds the loop for a second is logged while it runs.
    """

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"@ag.method(inline=True) is for sync methods; {fn.__qualname__} is async, and "
                "an async actor's methods already run on the worker's loop"
            )
        if inspect.isgeneratorfunction(fn):
            raise TypeError(
                f"@ag.method(inline=True) cannot be used on the generator method "
                f"{fn.__qualname__}: its items are produced on a pool thread"
            )
        if inline:
            setattr(fn, INLINE_ATTRIBUTE, True)
        return fn

    return decorate


# The inline methods of each actor class hosted here, found on first use; a demoted method
# leaves its class's set.
_by_class: dict[type, set[str]] = {}


def _inline_names(cls: type) -> set[str]:
    names = _by_class.get(cls)
    if names is None:
        # The class dicts themselves, most derived first: no descriptor runs, and a method
        # overridden without the decorator is not inline.
        found: dict[str, bool] = {}
        for klass in cls.__mro__:
            for name, value in vars(klass).items():
                found.setdefault(name, getattr(value, INLINE_ATTRIBUTE, False) is True)
        names = _by_class[cls] = {name for name, inline in found.items() if inline}
    return names


class InlineHost(Protocol):
    """What an inline call needs of the executor (ExecutorTasks is one)."""

    def result_of(self, value: Any, label: str) -> tuple[bool, Payload]: ...

    def call_done(self, call: _Call, ok: bool, payload: Payload) -> None: ...


def run_inline(host: InlineHost, lane: _Lane, call: _Call, address: str) -> bool:
    """Loop: run ``call`` here and now if its method is inline and nothing of its actor is
    queued or running; answer it as the lane would. False: nothing was done, use the lane."""
    if lane.running or lane.items or call.cancelled:
        return False
    cls = type(lane.instance)
    if call.method not in _inline_names(cls):
        return False
    try:
        args, kwargs = loads(call.payload)
    except Exception:
        return False  # the lane reports it, as for any call
    if any(isinstance(a, ObjectRef) for a in args) or any(
        isinstance(v, ObjectRef) for v in kwargs.values()
    ):
        return False
    label = f"{lane.info.label}.{call.method}"
    fn = getattr(lane.instance, call.method)
    watch.started(label)
    try:
        with output_source(lane.info.name or lane.info.label, call.peer, call.root):
            try:
                value = fn(*args, **kwargs)
            except (Exception, SystemExit) as exc:
                ok, payload = False, box_error(exc, _where(label, address))
            else:
                ok, payload = host.result_of(value, label)
    finally:
        elapsed = watch.ended()
    if elapsed > INLINE_BUDGET_S:
        _by_class[cls].discard(call.method)
        log.warning(
            "%s is declared @ag.method(inline=True) but held worker %s's event loop for %.3f s "
            "(over %.1f s): pulses, messages and every other actor there waited. Its calls run "
            "on pool threads from now on, in this worker process; remove inline=True from it, or keep "
            "it to non-blocking work of a few milliseconds",
            label,
            address,
            elapsed,
            INLINE_BUDGET_S,
        )
    host.call_done(call, ok, payload)
    return True


def _where(label: str, address: str) -> str:
    return f"{label} on worker {address} (pid {os.getpid()}, inline)"


class _Watch:
    """The inline call running on this process's loop, if any, and a thread that reports one
    that holds the loop too long. Written by the loop only; read by the watchdog thread."""

    def __init__(self) -> None:
        self.label = ""
        self.since = 0.0  # time.monotonic() when the running call started; 0.0: none runs
        self._thread: threading.Thread | None = None

    def started(self, label: str) -> None:
        self.label = label
        self.since = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="actorgrid-inline-watchdog", daemon=True
            )
            self._thread.start()

    def ended(self) -> float:
        elapsed = time.monotonic() - self.since
        self.since = 0.0
        return elapsed

    def stalled(self, now: float) -> tuple[str, float] | None:
        """The running call's label and how long it has run, if over INLINE_STALL_S."""
        label, since = self.label, self.since
        if since and now - since > INLINE_STALL_S and since == self.since:
            return label, now - since
        return None

    def _watch(self) -> None:
        reported = 0.0
        while True:
            time.sleep(WATCH_PERIOD_S)
            stall = self.stalled(time.monotonic())
            if stall is not None and self.since != reported:
                reported = self.since  # once per stalled call
                log.warning(
                    "%s (declared @ag.method(inline=True)) has been running on this worker's "
                    "event loop for %.1f s and blocks it: no pulse, message or other actor "
                    "gets through until it returns (a blocking call in it?); remove "
                    "inline=True from it",
                    *stall,
                )


watch = _Watch()
