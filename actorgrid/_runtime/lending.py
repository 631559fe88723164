"""A link's reads lent to the thread that waits for its answers on it.

A sync ``ag.get`` of one call's ref waits, by default, for the loop: the loop's reader task
wakes on the link's socket, decodes the answer, resolves the entry and wakes the waiting thread.
That is two thread wake-ups in the caller where a TCP ping-pong has one, and the second (a
futex, then the GIL while the loop finishes its turn) is a large part of a round trip.

So while a thread keeps waiting on one link (a script's ``ag.get(actor.f.remote())`` in a
loop), the link's reader lends it the socket: once a thread has asked (``wanted``) and the
reader has read all that had arrived, the reader task steps back (``Peer._lend``), and the
thread's next waits poll the socket themselves and read what arrives (``read``). Its own
answer (a value) resolves its entry in that thread; every message read, its own answer
included (for the loop's bookkeeping of the call), is handed to the loop in order
(``handed``): at once, unless it is the thread's own answer to an actor method call, whose
bookkeeping waits for the reader's check every ``LEND_S`` (then the reader takes the link back
unless a thread read it meanwhile). So a run of method calls wakes only the waiting thread.

Invariants:

- One reader at a time: the reader task reads only while the link is not lent; a thread reads
  only while it is lent and the thread holds ``lock``, which the loop takes to take the link
  back. A thread holds it while it reads what has arrived, never while it waits.
- Order: the loop dispatches every message of the link in the order it arrived: those a thread
  read wait in ``handed``, which the loop empties before its reader reads again.
- A lent link is read within ``2 * LEND_S`` even when no thread waits on it any more: the loop
  takes it back after ``LEND_S`` in which no thread read it, and at once when a wait that the
  lent reads do not serve begins on one of its calls, or once such a call is sent
  (``give_back``: ``ag.get`` of a list, or of a call still on its way to the loop,
  ``ag.wait``, an ``await`` on the loop). What else the loop awaits on a lent link (the reply
  to one of its own requests) waits ``2 * LEND_S`` at most.
- A read broken off (a KeyboardInterrupt, which may land between two bytecodes, or a frame that
  does not decode) leaves the stream in doubt: the loop closes the link, so its calls fail
  with it rather than wait for an answer that was lost.

Costs: nothing on a link no thread asks for; a lent link wakes the loop once per ``LEND_S`` and
for each message other than the reading thread's own answers to method calls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import trio

from .._protocol.codec import decode
from .._protocol.messages import Pulse, TaskResult, TaskResults

if TYPE_CHECKING:
    from .._protocol.ids import ObjectId
    from .._protocol.messages import Message
    from .._transport.tcp import TcpFrameStream

__all__ = ["LEND_S", "Lending"]

# How long a lent link may go unread by any thread before the loop's reader takes it back.
LEND_S = 0.005
# A thread holds a lent link's lock for microseconds (one read of what has arrived): the loop
# polls for it this often, and gives up after TAKE_BACK_S (see Lending.take_back).
TAKE_BACK_POLL_S = 0.0001
TAKE_BACK_S = 1.0


class Lending:
    """One link's lending state: loop methods ``lend``/``wait``/``take_back``; a thread's
    ``read`` (holding ``lock``) and ``give_back``."""

    __slots__ = (
        "arrived",
        "broken",
        "ended",
        "event",
        "fd",
        "handed",
        "lent",
        "lock",
        "reads",
        "stream",
        "token",
        "wanted",
    )

    def __init__(self) -> None:
        self.wanted = False  # a thread would read this link itself: lend it when idle
        self.lent = False  # written under ``lock``
        self.lock = threading.Lock()
        self.handed: deque[Message] = deque()  # read by a thread, for the loop, in order
        # When each answer a thread resolved itself came (time.time()), for the loop's record
        # of the call, which comes later.
        self.arrived: dict[ObjectId, float] = {}
        self.reads = 0  # threads' reads so far: a link unread for LEND_S is taken back
        self.ended = False  # a thread's read found the connection ended
        self.broken: str | None = None  # why a thread's read was broken off
        self.token: trio.lowlevel.TrioToken | None = None
        self.stream: TcpFrameStream | None = None  # the stream lent, once it has been
        self.fd = -1  # its socket's file descriptor, for a thread's poll
        self.event = trio.Event()

    def __repr__(self) -> str:
        state = "lent" if self.lent else ("wanted" if self.wanted else "idle")
        return f"<Lending {state} reads={self.reads} handed={len(self.handed)}>"

    # --- the loop ---------------------------------------------------------------------------

    def lend(self, token: trio.lowlevel.TrioToken, stream: TcpFrameStream) -> None:
        self.token = token
        self.stream = stream
        self.fd = stream.sock.fileno()
        self.ended = False
        with self.lock:
            self.lent = True

    async def wait(self) -> bool:
        """Loop: park until a thread hands over a message that cannot wait, or ``LEND_S``;
        False when the link is to be taken back."""
        reads = self.reads
        self.event = trio.Event()
        with trio.move_on_after(LEND_S):
            await self.event.wait()
        return self.wanted and self.reads != reads and not self.ended and self.broken is None

    async def take_back(self) -> None:
        """Loop: the reader reads again, once a thread's read in progress is over (it never
        blocks). A lock still held after TAKE_BACK_S was lost by its thread (an interrupt
        between its acquire and the ``try`` that releases it): the link is closed instead."""
        with trio.CancelScope(shield=True), trio.move_on_after(TAKE_BACK_S):
            while not self.lock.acquire(blocking=False):
                await trio.sleep(TAKE_BACK_POLL_S)
            self.lent = False
            self.wanted = False
            self.lock.release()
            return
        self.lent = False
        self.wanted = False
        self.broken = f"a thread kept its lock on this connection's reads over {TAKE_BACK_S} s"

    # --- a thread ---------------------------------------------------------------------------

    def give_back(self) -> None:
        """Any thread: a wait that a thread's reads of this link do not serve (for several
        refs, or from the loop) has begun: the reader takes the link back now."""
        if self.wanted:
            self.wanted = False
            if self.lent:  # (else the reader checks ``wanted`` before it lends)
                self._wake_loop()

    def read(self, task_id: ObjectId, deferred: bool) -> TaskResult | None:
        """A thread holding ``lock`` while lent: take in what has arrived; the answer to
        ``task_id`` if it came and is a value (also handed to the loop, for its bookkeeping,
        which waits for the reader's next turn if ``deferred``, else wakes it now). An error
        is the loop's to resolve (a task may be retried on it)."""
        stream = self.stream
        assert stream is not None
        mine = None
        urgent = False
        try:
            frames, ended = stream.receive_nowait()
            for frame in frames:
                message = decode(frame)
                if type(message) is TaskResult and message.task_id == task_id and message.ok:
                    mine = message
                    self.arrived[task_id] = time.time()
                    urgent = urgent or not deferred
                elif type(message) is Pulse:
                    continue  # (the caller marks the link heard)
                else:
                    if type(message) is TaskResults and mine is None:
                        # A run of answers in one frame (coalesce.py): this thread's value
                        # too, if it is one; the loop resolves the others, so it is woken.
                        mine = _value_in(message, task_id)
                    urgent = True
                self.handed.append(message)
            self.reads += 1
        except Exception as exc:  # a frame that does not decode: as the reader would, close
            self.broken = str(exc)
            self._wake_loop()
            return None
        except BaseException as exc:  # KeyboardInterrupt: the stream is in doubt
            self.broken = f"a thread's read of this connection was broken off: {exc!r}"
            self._wake_loop()
            raise
        if ended:
            self.ended = True
        if urgent or ended:
            self._wake_loop()
        return mine

    def _wake_loop(self) -> None:
        token = self.token
        if token is not None:
            try:
                token.run_sync_soon(self._set_event)
            except trio.RunFinishedError:
                pass

    def _set_event(self) -> None:
        self.event.set()


def _value_in(batch: TaskResults, task_id: ObjectId) -> TaskResult | None:
    """The answer to ``task_id`` in ``batch`` if it is a value (an error is the loop's)."""
    for result in batch.results:
        if result.task_id == task_id:
            return result if result.ok else None
    return None
