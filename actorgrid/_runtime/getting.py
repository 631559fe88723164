"""Waiting for values: ``ag.get`` and ``ag.wait``, sync (any thread but a Trio one) and async
(on the runtime's loop, or from another Trio loop through a thread).

A blocking wait lends its task's CPUs back meanwhile and turns a driver's Ctrl-C into a cancel
of its remote work (the runtime's ``_wait_blocking``); a borrowed ref starts fetching its value
from its owner (``_ensure_fetch``). A driver thread's wait for one call's answer reads that
answer off its link itself while the link is lent to it (``_wait_reading``, lending.py): one
thread wake-up per answer instead of two. Costs: one waiter per pending ref, no polling.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import trio

from .._exceptions import GetTimeoutError
from .._protocol.messages import TaskResult
from .blocking import new_burst
from .peer import Peer
from .portal import Portal
from .records import CALL
from .refs import FAILED, PENDING, READY, ObjectEntry, ObjectRef, Waiter

__all__ = ["get_async", "get_sync", "wait_async", "wait_sync"]


class _Owner(Protocol):
    """What waiting needs of the runtime."""

    address: str
    kind: str
    portal: Portal

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def _ensure_fetch(self, entry: ObjectEntry) -> None: ...

    def _wait_blocking(self, event: threading.Event, timeout: float | None) -> bool: ...

    def localize(self, payloads: Iterable[Any]) -> Awaitable[None] | None: ...


def _in_trio() -> bool:
    return trio.lowlevel.in_trio_run()


class _CountDown:
    __slots__ = ("event", "left")

    def __init__(self, n: int, event: threading.Event | trio.Event) -> None:
        self.left = n
        self.event = event

    def set(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()


class _Wake(threading.Event):
    """A thread's reusable wake-up for its blocking waits, made once per thread.

    A lock that is held while nothing is set: ``set`` (the loop, when a countdown ends)
    releases it and ``wait`` takes it back, one C call on each side where a
    ``threading.Event`` runs its Condition's Python code and allocates a lock per wait. A
    wake may be stale (a countdown that ended after its wait gave up, or one the loop set
    while ``add_waiter`` said it was too late), so a waiter re-checks its condition after each
    (``_wait_for``). Only ``set`` and ``wait`` are used.
    """

    def __init__(self) -> None:  # no Event.__init__: its Condition is what this replaces
        self._held = threading.Lock()
        self._held.acquire()

    def set(self) -> None:
        try:
            self._held.release()
        except RuntimeError:
            pass  # set already, not yet waited for

    def is_set(self) -> bool:
        return not self._held.locked()

    def clear(self) -> None:
        self._held.acquire(blocking=False)

    def wait(self, timeout: float | None = None) -> bool:
        return self._held.acquire(True, -1 if timeout is None else max(timeout, 0.0))


_local = threading.local()


def _thread_wake() -> _Wake:
    wake: _Wake | None = getattr(_local, "wake", None)
    if wake is None:
        wake = _local.wake = _Wake()
    return wake


def _wait_for(rt: _Owner, wake: _Wake, done: Callable[[], bool], timeout: float | None) -> bool:
    """Block this thread until ``done()`` (checked after every wake), at most ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        rt._wait_blocking(wake, left)
    return True


class _Poller(threading.Event):
    """A thread's reusable wake-up that also watches a lent link's socket (``fd``), made
    once per thread: ``set`` (any thread) writes an eventfd that ``wait`` polls beside it."""

    def __init__(self) -> None:  # no Event.__init__, as _Wake
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._efd, select.POLLIN)
        self._watched = -1
        self.fd = -1  # the socket to watch in the next wait, if any

    def __del__(self) -> None:  # its thread ended (thread-local): the eventfd goes with it
        try:
            os.close(self._efd)
        except (AttributeError, OSError):
            pass

    def set(self) -> None:
        os.eventfd_write(self._efd, 1)

    def wait(self, timeout: float | None = None) -> bool:
        """Until set, or ``fd`` is readable, or ``timeout``; True when set. Raises the
        KeyboardInterrupt held back during a read (``_Sigint``)."""
        if _sigint.held:
            _sigint.held = False
            raise KeyboardInterrupt
        if self.fd != self._watched:
            if self._watched >= 0:
                self._poll.unregister(self._watched)
            if self.fd >= 0:
                self._poll.register(self.fd, select.POLLIN)
            self._watched = self.fd
        ready = self._poll.poll(None if timeout is None else max(timeout, 0.0) * 1000)
        efd = self._efd
        for fd, _ in ready:
            if fd == efd:
                try:
                    os.eventfd_read(efd)
                except BlockingIOError:
                    pass
                return True
        return False


class _Sigint:
    """The main thread's SIGINT handler while it waits on a lent link, in place of Python's
    default (``signal.default_int_handler``): a KeyboardInterrupt raised in the middle of a
    read of the link (between any two bytecodes) would leave the stream half read, so one that
    comes then is held until the read is over and raised by the wait (``_Poller.wait``)."""

    __slots__ = ("held", "reading")

    def __init__(self) -> None:
        self.reading = False
        self.held = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.reading:
            self.held = True
            return
        raise KeyboardInterrupt


_sigint = _Sigint()
# SIGINT's handler is set twice per lent wait: through ``signal``'s C half, since
# ``signal.signal`` and ``signal.getsignal`` turn their arguments and result into enums, with
# an exception raised and caught for each handler that is a function (3.11: 8-20 µs a round
# trip on a 2-core machine; 0.4 µs a call here, measured in the round trips of actor_rtt).
try:
    _c_signal: Any = importlib.import_module("_signal")
except ImportError:  # (not CPython)
    _c_signal = signal
_set_handler: Callable[[int, Any], Any] = _c_signal.signal
_get_handler: Callable[[int], Any] = _c_signal.getsignal
_SIGINT = int(signal.SIGINT)
# The handlers _sigint stands in for (itself: one left behind by an interrupt between its
# setting and the ``try`` that restores the default).
_GUARDABLE = (signal.default_int_handler, _sigint)
_MAIN_THREAD = threading.main_thread().ident


def _thread_poller() -> _Poller:
    poller: _Poller | None = getattr(_local, "poller", None)
    if poller is None:
        poller = _local.poller = _Poller()
    return poller


def _wait_reading(rt: _Owner, entry: ObjectEntry, peer: Peer, timeout: float | None) -> bool:
    """Block this thread until ``entry`` (a call's answer, sent on ``peer``) resolves, reading
    its answer off the link itself while the link is lent to it (lending.py), else waking
    as ``_wait_for`` does; False at ``timeout``."""
    lending = peer.lending
    main = threading.get_ident() == _MAIN_THREAD
    if not lending.lent:
        if not main or _get_handler(_SIGINT) in _GUARDABLE:
            lending.wanted = True  # the reader lends the link once it has read this answer
        return _wait_for_one(rt, entry, timeout)
    if main:
        previous = _set_handler(_SIGINT, _sigint)
        if previous not in _GUARDABLE:  # the user's own handler: left alone, and so is the link
            _set_handler(_SIGINT, previous)
            lending.give_back()
            return _wait_for_one(rt, entry, timeout)
    try:
        done = _wait_lent(rt, entry, peer, timeout, main)
    finally:
        if main:
            _set_handler(_SIGINT, signal.default_int_handler)
    if _sigint.held and main:
        # A Ctrl-C held through a read after which the wait ended (its answer read, or
        # resolved by the loop meanwhile): raised now, as the wait would have, not left for
        # the next lent wait, which may never come.
        rt._wait_blocking(_thread_poller(), 0)
    return done


def _wait_for_one(rt: _Owner, entry: ObjectEntry, timeout: float | None) -> bool:
    wake = _thread_wake()
    countdown = _CountDown(1, wake)
    if not entry.add_waiter(countdown):
        return True
    return _wait_for(rt, wake, lambda: countdown.left <= 0, timeout)


def _wait_lent(
    rt: _Owner, entry: ObjectEntry, peer: Peer, timeout: float | None, main: bool
) -> bool:
    lending = peer.lending
    poller = _thread_poller()
    if not entry.add_waiter(poller):
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    # The loop's bookkeeping of an actor method call's answer may wait for its next turn; a
    # task's frees a CPU in placement that the next task may need now.
    sent = peer.inflight.get(entry.object_id)
    deferred = sent is not None and sent.kind == CALL
    try:
        # Wait first: the reader lent the link with nothing left to read, and every read here
        # takes all that has arrived, so only new bytes make the socket readable.
        while entry.state == PENDING:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            readable = lending.lent and not lending.ended and lending.broken is None
            poller.fd = lending.fd if readable else -1
            if rt._wait_blocking(poller, left):
                continue  # set: resolved by the loop (or a stale wake)
            _sigint.reading = main
            if lending.lent and lending.lock.acquire(blocking=False):
                try:
                    mine = lending.read(entry.object_id, deferred) if lending.lent else None
                finally:
                    lending.lock.release()
                    _sigint.reading = False
                peer.heard = True
                if mine is not None:
                    _resolve(rt, entry, mine, poller)
                    return True
            _sigint.reading = False
    finally:
        if entry.state == PENDING and entry.waiters is not None:
            try:
                entry.waiters.remove(poller)
            except ValueError:
                pass  # the loop took it and set it: a stale wake, drained by a later wait
    return True


def _unlend(rt: _Owner, entry: ObjectEntry) -> None:
    """A wait for ``entry`` that does not read links itself: the link its call went on, if
    lent to a thread (or about to be), goes back to the loop's reader now (lending.py). A call
    of this process not sent yet (on its way to the loop) is seen to once the loop sent it:
    else its answer could wait up to ``2 * LEND_S`` on a link lent to a thread that does not
    read it any more."""
    where = entry.where
    if type(where) is Peer:
        where.lending.give_back()
    elif where is None and entry.owner == rt.address and not rt.portal.in_loop_thread():
        rt.on_loop(_unlend_sent, entry)  # (after the send: one thread's calls run in order)


def _unlend_sent(entry: ObjectEntry) -> None:
    where = entry.where
    if type(where) is Peer:
        where.lending.give_back()


def _resolve(rt: _Owner, entry: ObjectEntry, answer: TaskResult, poller: _Poller) -> None:
    """A thread that read ``entry``'s answer itself: resolve it now (the loop does its
    bookkeeping of the call later, and finds it resolved). Like the loop's set_value, the
    state is written before the waiters are read (refs.py)."""
    if entry.state != PENDING:
        return
    if answer.ok:
        entry.payload = answer.value
        entry.state = READY
    else:
        entry.error = answer.value
        entry.state = FAILED
    waiters, entry.waiters = entry.waiters, None
    if not waiters or (len(waiters) == 1 and waiters[0] is poller):
        return  # (the usual case: this thread's wait alone)
    others = [w for w in waiters if w is not poller]
    if others:  # other threads' or tasks' waits: set on the loop, as always
        rt.on_loop(_set_all, others)


def _set_all(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        waiter.set()


def get_sync(rt: _Owner, refs: Any, timeout: float | None) -> Any:
    """Any thread but a Trio one: block until the refs resolve."""
    if _in_trio():
        raise RuntimeError(
            "ag.get() blocks, and it was called from a thread running a Trio loop; "
            "use `await ref` or `await ag.get_async(refs)` there instead"
        )
    if type(refs) is ObjectRef:  # one ref: first, without the lists that several need
        entry = refs._entry
        where = entry.where
        # One call's answer, on a link: this thread may read it itself (lending.py).
        if (
            entry.state == PENDING
            and type(where) is Peer
            and where.lendable
            and rt.kind == "driver"
            and entry.owner == rt.address
            and not _wait_reading(rt, entry, where, timeout)
        ):
            raise GetTimeoutError(
                f"ag.get() timed out after {timeout} s with 1 of 1 refs still pending"
            )
        if entry.state != PENDING:
            new_burst()
            return entry.value()
    single = isinstance(refs, ObjectRef)
    items: list[ObjectRef[Any]] = [refs] if single else list(refs)
    for ref in items:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"ag.get() takes ObjectRefs, got {type(ref).__name__}")
    pending = [r._entry for r in items if r._entry.state == PENDING]
    if pending:
        wake = _thread_wake()
        countdown = _CountDown(0, wake)
        for entry in pending:
            if entry.owner != rt.address and not entry.fetching:
                rt.on_loop(rt._ensure_fetch, entry)
            _unlend(rt, entry)
            countdown.left += 1
            if not entry.add_waiter(countdown):
                countdown.left -= 1
        if not _wait_for(rt, wake, lambda: countdown.left <= 0, timeout):
            left = sum(1 for r in items if r._entry.state == PENDING)
            raise GetTimeoutError(
                f"ag.get() timed out after {timeout} s with {left} of {len(items)} "
                "refs still pending"
            )
    new_burst()
    values = [r._entry.value() for r in items]
    return values[0] if single else values


async def get_async(rt: _Owner, refs: Any, timeout: float | None = None) -> Any:
    if not rt.portal.in_loop_thread():
        # Awaited from another Trio loop than the runtime's (e.g. trio.run after
        # ag.init()): wait in a thread instead of touching the runtime's loop state.
        return await trio.to_thread.run_sync(get_sync, rt, refs, timeout)
    single = isinstance(refs, ObjectRef)
    items: list[ObjectRef[Any]] = [refs] if single else list(refs)
    with trio.move_on_after(float("inf") if timeout is None else timeout) as scope:
        for ref in items:
            entry = ref._entry
            if entry.state == PENDING:
                rt._ensure_fetch(entry)
                _unlend(rt, entry)
                event = trio.Event()
                if entry.add_waiter(event):
                    await event.wait()
    if scope.cancelled_caught:
        raise GetTimeoutError(f"timed out after {timeout} s waiting for {len(items)} refs")
    pulls = rt.localize([r._entry.payload for r in items])  # values held on other nodes
    if pulls is not None:
        await pulls
    values = [r._entry.value() for r in items]
    return values[0] if single else values


def wait_sync(
    rt: _Owner, refs: Sequence[ObjectRef[Any]], num_returns: int, timeout: float | None
) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
    if _in_trio():
        raise RuntimeError("ag.wait() blocks; in Trio code use `await ag.wait_async(...)` instead")
    _check_wait_args(refs, num_returns)
    ready = sum(1 for r in refs if r._entry.state != PENDING)
    if ready < num_returns:
        wake = _thread_wake()
        countdown = _arm_countdown(rt, refs, num_returns - ready, wake)
        _wait_for(rt, wake, lambda: countdown.left <= 0, timeout)
    new_burst()
    return _split_ready(refs, num_returns)


async def wait_async(
    rt: _Owner, refs: Sequence[ObjectRef[Any]], num_returns: int, timeout: float | None
) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
    if not rt.portal.in_loop_thread():
        return await trio.to_thread.run_sync(wait_sync, rt, refs, num_returns, timeout)
    _check_wait_args(refs, num_returns)
    ready = sum(1 for r in refs if r._entry.state != PENDING)
    if ready < num_returns:
        event = trio.Event()
        _arm_countdown(rt, refs, num_returns - ready, event)
        with trio.move_on_after(float("inf") if timeout is None else timeout):
            await event.wait()
    return _split_ready(refs, num_returns)


def _check_wait_args(refs: Sequence[ObjectRef[Any]], num_returns: int) -> None:
    if not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError("ag.wait() takes a list of ObjectRefs")
    if len(set(refs)) != len(refs):
        raise ValueError("ag.wait() got the same ObjectRef twice")
    if not 0 <= num_returns <= len(refs):
        raise ValueError(f"num_returns must be between 0 and {len(refs)}, not {num_returns}")


def _arm_countdown(
    rt: _Owner, refs: Iterable[ObjectRef[Any]], n: int, event: threading.Event | trio.Event
) -> _CountDown:
    countdown = _CountDown(n, event)
    for ref in refs:
        entry = ref._entry
        if entry.state == PENDING:
            if entry.owner != rt.address:
                rt.on_loop(rt._ensure_fetch, entry)
            _unlend(rt, entry)
            if not entry.add_waiter(countdown):  # resolved since it was counted as pending
                countdown.set()
    return countdown


def _split_ready(
    refs: Sequence[ObjectRef[Any]], num_returns: int
) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
    ready: list[ObjectRef[Any]] = []
    not_ready: list[ObjectRef[Any]] = []
    for ref in refs:
        if len(ready) < num_returns and ref._entry.state != PENDING:
            ready.append(ref)
        else:
            not_ready.append(ref)
    return ready, not_ready
