"""An actor's inbox: a bounded FIFO queue, with trio's memory-channel semantics and a fraction
of its memory (a worker hosts 100,000 of them).

``open_inbox(capacity)`` returns ``(send, receive)`` ends used as a trio memory channel pair is
(``send_nowait``/``send``/``close``; ``receive_nowait``/``receive``/``close``/``async for``;
``statistics()``), with the same exceptions: WouldBlock when full or empty, EndOfChannel once
the send end is closed and the queue drained, ClosedResourceError on an end closed here,
BrokenResourceError to a sender once the receive end is closed. Blocked receivers and senders
are served first in, first out, and a blocked sender's message goes in, in its turn, as room
is made.

Why not ``trio.open_memory_channel``: a pair costs ~1.8 KB (two channel objects, a state
with a deque and two ordered dicts, statistics counters) and ~10 µs to make. Here the receive
end holds the state, the queue and the waiting lists exist only while they hold something,
and an idle inbox is two small objects (~200 bytes).

Its receiver may be a parked agent instead of a task (``park_run``, parking.py): a message then
goes in the queue and wakes it (``run.wake()``), which starts a task that resumes it. An
agent's own task waiting here (``park(stepped=True)``) that a link's reader wakes is stepped
in the reader's turn (stepping.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio
from outcome import Error, Value

from . import stepping

__all__ = ["InboxReceive", "InboxSend", "InboxStatistics", "open_inbox"]

_EMPTY: Any = object()  # InboxReceive.take found nothing
_STEPPED: Any = object()  # a waiting task's custom_sleep_data: stepped when a reader wakes it
_TrioTask = trio.lowlevel.Task


@attrs.frozen
class InboxStatistics:
    """The fields of trio's MemoryChannelStatistics that the runtime reads."""

    current_buffer_used: int
    max_buffer_size: float
    tasks_waiting_send: int
    tasks_waiting_receive: int


def open_inbox(capacity: int | float) -> tuple[InboxSend, InboxReceive]:
    if capacity < 0:
        raise ValueError(f"an inbox holds at least 0 messages, not {capacity}")
    receive = InboxReceive(capacity)
    return InboxSend(receive), receive


class InboxReceive:
    """The receive end; it holds the queue. Created by ``open_inbox``."""

    __slots__ = ("_closed", "_getter", "_getters", "_items", "_max", "_putters", "_send_closed")

    def __init__(self, capacity: int | float) -> None:
        self._max = capacity
        self._items: deque[Any] | None = None  # None while empty
        # The receiver parked (an agent's own task: one place, no deque; or a parked agent,
        # see park_run), then any others.
        self._getter: Any = None
        self._getters: deque[trio.lowlevel.Task] | None = None
        self._putters: deque[tuple[trio.lowlevel.Task, Any]] | None = None  # senders parked
        self._send_closed = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<Inbox queued={len(self._items or ())} capacity={self._max:g}>"

    def statistics(self) -> InboxStatistics:
        return InboxStatistics(
            len(self._items or ()),
            self._max,
            len(self._putters or ()),
            (self._getter is not None) + len(self._getters or ()),
        )

    def _next_getter(self) -> Any:
        """Take the first receiver parked, if any."""
        task = self._getter
        if task is not None:
            more = self._getters
            self._getter = more.popleft() if more else None
        return task

    def _wake_getters(self, error: type[BaseException]) -> None:
        # The error's class: none made for an inbox nobody waits on (100,000 end at a stop).
        while (task := self._next_getter()) is not None:
            if type(task) is _TrioTask:
                trio.lowlevel.reschedule(task, Error(error()))
            else:  # a parked agent: resumed, it finds the inbox ended
                task.wake()

    def queued(self) -> bool:
        """Whether messages wait in the queue (stepping.Queue)."""
        return bool(self._items)

    def park_run(self, run: Any) -> bool:
        """Queue a parked agent (parking.py) as this inbox's receiver: the next message goes
        in the queue and wakes it (``run.wake()``); False: another receiver waits already."""
        if self._getter is not None:
            return False
        self._getter = run
        return True

    def unpark_run(self, run: Any) -> bool:
        """Take a parked agent out of line (it is being stopped); False: it was not there."""
        if self._getter is not run:
            return False
        self._next_getter()
        return True

    def wake_first(self, task: trio.lowlevel.Task, value: Any) -> bool:
        """Wake ``task`` with ``value`` if it is the first receiver waiting here, out of line
        as its abort would take it (the mailbox's REPARK, parking.py); False: it is not."""
        if self._getter is not task:
            return False
        self._next_getter()
        trio.lowlevel.reschedule(task, Value(value))
        return True

    def receive_nowait(self) -> Any:
        item = self.take(_EMPTY)
        if item is _EMPTY:
            raise trio.WouldBlock
        return item

    def take(self, default: Any) -> Any:
        """``receive_nowait``, returning ``default`` where that raises WouldBlock (no
        exception made per empty look: the mailbox's fast path)."""
        if self._closed:
            raise trio.ClosedResourceError("this inbox's receive end is closed")
        items = self._items
        if items:
            item = items.popleft()
            putters = self._putters
            if putters:  # the first blocked sender's message takes the place made
                task, value = putters.popleft()
                items.append(value)
                trio.lowlevel.reschedule(task, Value(None))
            elif not items:
                self._items = None
            return item
        putters = self._putters
        if putters:  # capacity 0: straight from a blocked sender
            task, value = putters.popleft()
            trio.lowlevel.reschedule(task, Value(None))
            return value
        if self._send_closed:
            raise trio.EndOfChannel
        return default

    async def receive(self) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        return await trio.lowlevel.wait_task_rescheduled(self.park())

    def park(self, stepped: bool = False) -> Callable[[Any], trio.lowlevel.Abort]:
        """Queue the current task as a receiver; its abort function, for
        ``trio.lowlevel.wait_task_rescheduled``. Callers (``receive``, ``Mailbox``) wait in
        their own frame: one coroutine less per idle agent. ``stepped``: a message put here
        by a link's reader wakes it in the reader's turn (stepping.py: an agent's own task)."""
        task = trio.lowlevel.current_task()
        if stepped:
            # Trio's slot for what put a task to sleep (reschedule clears it): no field here.
            task.custom_sleep_data = _STEPPED
        if self._getter is None:
            # The first in line leaves that place only when woken, so a cancel finds it
            # there: a bound method, not a closure (an idle agent keeps it).
            self._getter = task
            return self._abort_first
        if self._getters is None:
            self._getters = deque()
        self._getters.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            if self._getter is task:
                self._next_getter()
            else:
                assert self._getters is not None
                self._getters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        return abort

    def _abort_first(self, _: Any) -> trio.lowlevel.Abort:
        self._next_getter()
        return trio.lowlevel.Abort.SUCCEEDED

    def drain(self) -> list[Any]:
        """Take every queued message (blocked senders' too), with no exception raised: what
        an ending actor refuses (no WouldBlock made and caught per actor when 100,000 end)."""
        if self._closed:
            return []
        items = list(self._items or ())
        self._items = None
        putters, self._putters = self._putters, None
        for task, value in putters or ():
            items.append(value)
            trio.lowlevel.reschedule(task, Value(None))
        return items

    def close(self) -> None:
        """No more receiving: queued messages are dropped, blocked senders get
        BrokenResourceError (and so do later ones)."""
        if self._closed:
            return
        self._closed = True
        self._items = None
        putters, self._putters = self._putters, None
        for task, _ in putters or ():
            trio.lowlevel.reschedule(task, Error(trio.BrokenResourceError()))
        self._wake_getters(trio.ClosedResourceError)

    def __aiter__(self) -> InboxReceive:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class InboxSend:
    """The send end. Created by ``open_inbox``."""

    __slots__ = ("_box",)

    def __init__(self, box: InboxReceive) -> None:
        self._box = box

    def __repr__(self) -> str:
        return f"<InboxSend to {self._box!r}>"

    def statistics(self) -> InboxStatistics:
        return self._box.statistics()

    def send_nowait(self, value: Any) -> None:
        box = self._box
        if box._send_closed:
            raise trio.ClosedResourceError("this inbox's send end is closed")
        if box._closed:
            raise trio.BrokenResourceError("this inbox's receive end is closed")
        getter = box._next_getter()
        if getter is not None:
            if type(getter) is _TrioTask:
                stepped = getter.custom_sleep_data is _STEPPED  # cleared by reschedule
                trio.lowlevel.reschedule(getter, Value(value))
                if stepped:  # stepped in the turn of a link's reader that puts it
                    stepping.woke(getter, box)
                return
            # A parked agent (park_run): the message waits for it in the queue, empty so far.
            box._items = deque((value,))
            getter.wake()
            return
        items = box._items
        if items is None:
            if box._max < 1:
                raise trio.WouldBlock
            box._items = deque((value,))
        elif len(items) < box._max:
            items.append(value)
        else:
            raise trio.WouldBlock

    async def send(self, value: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(value)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        box = self._box
        task = trio.lowlevel.current_task()
        if box._putters is None:
            box._putters = deque()
        putters = box._putters
        entry = (task, value)
        putters.append(entry)

        def abort(_: Any) -> trio.lowlevel.Abort:
            putters.remove(entry)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def close(self) -> None:
        """No more sending: the receiver gets what is queued, then EndOfChannel; senders
        blocked here get ClosedResourceError."""
        box = self._box
        if box._send_closed:
            return
        box._send_closed = True
        putters, box._putters = box._putters, None
        for task, _ in putters or ():
            trio.lowlevel.reschedule(task, Error(trio.ClosedResourceError()))
        if not box._items:
            box._wake_getters(trio.EndOfChannel)
