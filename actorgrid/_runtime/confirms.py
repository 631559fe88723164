"""Fire-and-forget calls and messages, counted until their worker confirms them finished.

A quiet call (``quiet.py``: ``h.method.remote()`` as a statement) and a fire-and-forget message
(``ag.send``/``ctx.send``: a Deliver with no rid, or a DeliverToKey to a keyed agent, counted
under its key's flow-control id, ``virtual.key_id``) get no answer. If the worker hosting their
actor dies while they wait in its mailbox, run, or travel on the link, nothing else would tell
their sender. So each link counts them, per target actor, at both ends, with no record kept per
call or message:

- the sender (``LinkSends`` of its outbound Peer): +1 per quiet call or message it sends; -n
  per ``FinishedSends`` from the worker; -1 per ``DeliveryFailed`` (a refusal is reported on
  its own, as ``message_undelivered``). An actor whose count reaches 0 leaves the table, so it
  holds only the actors with sends outstanding on that link, never one entry per message.
- the worker (``LinkSends`` of the inbound Peer they came on): +1 per quiet call that returned
  or raised (an error is reported as ``call_failed``), and per message its agent took from its
  mailbox. ``FinishedReports`` sends what a link's table holds back in one FinishedSends,
  every REPORT_S at most: never a frame per call.
- when the sender's link to the worker dies under it (the worker died or was cut off; not
  when the sender itself stops), what is left in its table was lost with the worker:
  ``report_lost`` counts it (``Cluster.lost_sends``) and reports one ``sends_lost`` event per
  actor, naming it and the count, and logs it. Those the worker finished in its last
  REPORT_S, whose confirmation had not left it yet, are counted with them: the figure is an
  upper bound, by at most what that actor got through in REPORT_S.

Cost on the hot path: at each end a dict update, about 0.1-0.3 µs (a message's on the loop,
with no lock; a quiet call's under the link's own lock, since it may be sent or finished on a
pool thread while the loop reads the table); nothing at the head, nothing O(actors) or
O(links) per call; one small frame per link per REPORT_S while calls finish.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from .._protocol.ids import ActorId
from .._protocol.messages import Event, FinishedSends
from .._scheduler.flow import ReceiveCredits

__all__ = ["REPORT_S", "FinishedReports", "LinkSends", "report_lost"]

log = logging.getLogger("actorgrid.runtime")

# How often a worker confirms what it finished, at most (one FinishedSends per link then).
REPORT_S = 0.05
# How long a worker that exits waits for its last confirmations to be written.
STOP_FLUSH_S = 1.0

# A sender's count per actor is kept as 2 * count + kind: the low bit says whether they are
# messages (1) or quiet calls (0), which the loss report names; an actor is either a coroutine
# actor (messages) or a class actor (calls), never both.
_CALL, _MESSAGE = 0, 1


class LinkSends:
    """One link's counts of fire-and-forget calls and messages (see the module docstring).
    Any thread."""

    __slots__ = ("_done", "_lock", "_out", "held_credits", "on_first_done")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._out: dict[ActorId, int] = {}  # sender: 2 * unconfirmed + kind, per actor
        self._done: dict[ActorId, int] = {}  # worker: finished and not yet confirmed
        # Worker: told when its table gets its first entry since the last report (None: this
        # process hosts no actors, and nothing is counted on this end).
        self.on_first_done: Callable[[], None] | None = None
        # Worker: the link's flow-control credits held back, granted with each report for
        # the actors in it (None: none; see take_finished).
        self.held_credits: ReceiveCredits[ActorId] | None = None

    def __repr__(self) -> str:
        return f"<LinkSends unconfirmed={len(self._out)} finished={len(self._done)}>"

    # --- the sender's end ---------------------------------------------------------------------

    def sent_call(self, actor_id: ActorId) -> None:
        with self._lock:
            out = self._out
            out[actor_id] = out.get(actor_id, _CALL) + 2

    def sent_message(self, actor_id: ActorId) -> None:
        """Loop only, so no lock: the loop is the only writer of a message's entry (a quiet
        call's, which a pool thread may write under the lock, is another actor's), each dict
        operation is atomic, and the table is swapped (``take_unconfirmed``) on the loop."""
        out = self._out
        out[actor_id] = out.get(actor_id, _MESSAGE) + 2

    def confirmed(self, actor_id: ActorId, n: int) -> None:
        """``n`` of those sent to ``actor_id`` were finished (or refused, and told)."""
        with self._lock:
            out = self._out
            left = out.get(actor_id, 0) - 2 * n
            if left >= 2:
                out[actor_id] = left
            else:
                out.pop(actor_id, None)
                if not out:
                    self._out = {}  # (a dict keeps its peak's table: 70,000 targets' worth)

    def on_finished(self, msg: FinishedSends) -> None:
        for actor_id, n in zip(msg.actor_ids, msg.counts, strict=False):
            self.confirmed(actor_id, n)

    def unconfirmed(self) -> int:
        """How many are sent and not yet confirmed, to all actors."""
        with self._lock:
            return sum(v >> 1 for v in self._out.values())

    def take_unconfirmed(self) -> dict[ActorId, tuple[int, bool]]:
        """The link is gone: per actor, how many were never confirmed, and whether they are
        messages (else quiet calls); the table is empty after."""
        with self._lock:
            out, self._out = self._out, {}
        return {a: (v >> 1, bool(v & _MESSAGE)) for a, v in out.items()}

    # --- the worker's end ---------------------------------------------------------------------

    def finished(self, actor_id: ActorId) -> None:
        """A quiet call to ``actor_id`` that came on this link returned or raised, or its agent
        took a message that came on it."""
        tell = self.on_first_done
        if tell is None:
            return
        with self._lock:
            done = self._done
            first = not done
            done[actor_id] = done.get(actor_id, 0) + 1
        if first:
            tell()

    def taken(self, actor_id: ActorId) -> None:
        """Loop only: ``finished`` for a message its agent took from its mailbox, with no
        lock (as ``sent_message``: a pool thread writes only quiet calls' entries)."""
        tell = self.on_first_done
        if tell is None:
            return
        done = self._done
        first = not done
        done[actor_id] = done.get(actor_id, 0) + 1
        if first:
            tell()  # (a pool thread's finished() may tell too: a link noted twice sends once)

    def take_finished(self) -> FinishedSends | None:
        with self._lock:
            done, self._done = self._done, {}
        if not done:
            return None
        held = self.held_credits
        if held is not None:
            # The credits held back for these actors go with it (flow.py): an agent sent a
            # message or two by each of thousands of others leaves no entry at either end.
            credits = tuple(held.take(actor_id) for actor_id in done)
            if any(credits):
                return FinishedSends(tuple(done), tuple(done.values()), credits)
        return FinishedSends(tuple(done), tuple(done.values()))


class FinishedReports:
    """A worker's links with finished calls or messages to confirm: each gets one
    FinishedSends per REPORT_S at most (``serve``). ``note`` from any thread.

    It sleeps while there is nothing to confirm: the first note after a flush wakes it
    (through ``on_loop``, a hop onto the loop from a pool thread: once per REPORT_S at most),
    so an idle worker, or one on a simulation's virtual clock, is not woken every REPORT_S.
    No note is missed: ``note`` appends before it reads ``_armed``, and a flush clears
    ``_armed`` before it drains."""

    def __init__(self) -> None:
        self._links: deque[Any] = deque()  # Peers; appended by any thread, drained by the loop
        self._armed = False  # a flush is coming
        self._wake: trio.Event | None = None  # the loop's; set by the first note after a flush
        self._on_loop: Callable[..., None] | None = None

    def note(self, peer: Any) -> None:
        self._links.append(peer)
        if not self._armed and self._on_loop is not None:
            self._armed = True
            self._on_loop(self._set_wake)

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def flush(self) -> list[Any]:
        """Loop: send each noted link what it finished; the links sent to."""
        self._armed = False
        links = self._links
        sent = []
        while links:
            peer = links.popleft()
            msg = peer.sends.take_finished()
            if msg is not None:
                peer.send(msg)  # (dropped if the link closed: its sender counts them lost)
                sent.append(peer)
        return sent

    async def flush_before_exit(self, timeout_s: float = STOP_FLUSH_S) -> None:
        """Loop: a worker about to exit (drained, or stopped with its grace period) confirms
        now what it finished, and waits for it to be written: else calls it finished in its
        last REPORT_S, and it finishes all it drains just before it goes, would be counted
        lost by their senders when its links close."""
        with trio.move_on_after(timeout_s):
            for peer in self.flush():
                await peer.wait_sent(timeout_s)

    async def serve(self, on_loop: Callable[..., None], interval_s: float = REPORT_S) -> None:
        """Run until cancelled; ``on_loop(fn)`` runs ``fn`` on this loop, from any thread."""
        self._on_loop = on_loop
        while True:
            self._wake = trio.Event()
            if not self._links:
                await self._wake.wait()
            await trio.sleep(interval_s)
            self.flush()


def report_lost(runtime: Any, peer: Any, why: str, label: Callable[[ActorId], str]) -> int:
    """Loop: ``peer``'s link died under this process: its calls and messages that were never
    confirmed are counted (``runtime.lost_sends``), and each actor's are reported as a
    ``sends_lost`` event and a log line. Returns how many."""
    lost = peer.sends.take_unconfirmed()
    total = 0
    for actor_id, (n, messages) in lost.items():
        total += n
        if messages:
            what = "fire-and-forget message" if n == 1 else "fire-and-forget messages"
        else:
            what = (
                "call made without keeping its ref"
                if n == 1
                else "calls made without keeping their ref"
            )
        name = label(actor_id)
        detail = (
            f"{n} {what} to actor {name} {'was' if n == 1 else 'were'} lost: {why}. Sent, "
            f"and not confirmed finished by that worker (those it finished in its last "
            f"{REPORT_S:g} s are counted too). Keep the ref and ag.get it, or ag.ask, where "
            "each one must be accounted for"
        )
        log.warning("%s", detail)
        runtime.publish(
            Event(
                "sends_lost",
                time.time(),
                pid=os.getpid(),
                actor_id=actor_id,
                name=name,
                detail=detail,
                count=n,
            )
        )
    runtime.lost_sends += total
    return total
