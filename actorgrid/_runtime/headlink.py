"""A process's link to its cluster head: connect, lose it, reconnect; and the event feed.

The head is on the control path only (membership, names, events, operations): calls go worker
to worker, so losing the head stops none of them. A link that ends while this process is not
leaving (the head died, stalled past the zombie window, or was restarted on the same address)
is dialled again at the same address, with backoff, until it answers; the loss and the
reconnection are each logged once, saying what happened. Meanwhile:

- a request to the head (a lookup, ``cluster.nodes()``) waits for the link for a while, then
  fails with "lost the head at ADDRESS (why); reconnecting", never "no worker";
- a request in flight when the link closes: one that only reads the head's tables (a name
  lookup, a listing, a status: ``RESENT_ON_A_NEW_LINK``) is sent again on the new link, so a
  head restarted on its address, or a link reset, costs the caller a wait, not an error; it
  fails only if no link is back within ``wait_s`` of the loss. Any other request (a name
  claim, a creation, a kill, a job stopped) is not sent again: the old head may have done it
  before the link closed, and doing it twice is not the same as once (a second claim of a
  name it granted would be refused as taken, a second kill could hit a restarted actor). It
  fails with an error that says so, and the caller, who knows what it asked, checks and
  retries;
- events published meanwhile are dropped (they are reports, not state);
- names cached and handles held stay as they are.

On each (re)connection the owner's ``on_connected`` runs first (it subscribes to the
membership again), then, on a reconnection, each of ``on_reconnected`` (the process reports
what it holds, so that a restarted head rebuilds its tables: see ``_node/rejoin.py``), and
only then do requests go out on the new link.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import trio

from .._exceptions import ActorgridError
from .._protocol.envmessages import PackageQuery, QueryJobLogs, QueryJobs
from .._protocol.messages import ActorInfo, Event, LocateActor, LookupName, Message, OwnActor
from .._protocol.namebatch import LookupNames
from .._protocol.observe import ReadLogs
from .._protocol.operations import QueryCluster, SubscribeEvents
from .peer import Peer, PeerClosedError

if TYPE_CHECKING:
    from .._transport.base import FrameStream

__all__ = ["RESENT_ON_A_NEW_LINK", "EventFeed", "HeadLink", "merge_by_time", "reown"]

log = logging.getLogger("actorgrid.runtime")

EVENT_HISTORY = 1000
# Task events (task_id set) are kept apart, so a burst of tasks never pushes the cluster's
# node and worker events out of the history.
TASK_EVENT_HISTORY = 10_000
# Reconnection attempts back off from the first to the last delay (doubling).
RECONNECT_FIRST_DELAY_S = 0.1
RECONNECT_MAX_DELAY_S = 2.0
# The first connection: a head that is there but slow to shake hands (a loaded machine, a head
# fending off a flood of strangers) gets this many dial timeouts before the process gives up;
# a refused connection (no head at the address) fails at once.
FIRST_CONNECT_TRIES = 5
# Requests that change nothing at the head: sent again on the next link when theirs closes
# before the answer (see the module docstring). SubscribeEvents only adds this link to a set.
RESENT_ON_A_NEW_LINK: frozenset[type] = frozenset(
    {
        LookupName,
        LookupNames,
        LocateActor,
        QueryCluster,
        QueryJobs,
        QueryJobLogs,
        ReadLogs,
        PackageQuery,
        SubscribeEvents,
    }
)


class EventFeed:
    """This process's subscription to the head's events: made on first use, kept after (and
    made again on a new head link)."""

    def __init__(self) -> None:
        self.history: deque[Event] = deque(maxlen=EVENT_HISTORY)
        self.task_history: deque[Event] = deque(maxlen=TASK_EVENT_HISTORY)
        self.listeners: list[Callable[[Event], None]] = []
        self.subscribed = False

    def push(self, event: Event) -> None:
        if event.task_id is not None:
            self.task_history.append(event)
        elif event.kind != "node_status":
            self.history.append(event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed; it stays subscribed")

    def merge_history(self, events: tuple[Event, ...]) -> None:
        """The head's history, ahead of what this feed already holds (known events once)."""
        for history, tasks in ((self.history, False), (self.task_history, True)):
            known = {(e.kind, e.time, e.detail, e.task_id) for e in history}
            older = [
                e
                for e in events
                if (e.task_id is not None) == tasks
                and (e.kind, e.time, e.detail, e.task_id) not in known
            ]
            history.extendleft(reversed(older))

    def recent(self) -> list[Event]:
        """Every event held, task events merged in by time."""
        return merge_by_time(self.history, self.task_history)


def merge_by_time(events: Iterable[Event], task_events: Iterable[Event]) -> list[Event]:
    """``events`` with ``task_events`` put in order by time and merged in. Task events of one
    task come from its owner and its worker in batches of their own, so they arrive out of
    order: they are kept in arrival order (O(1) each, on the path of every batch) and sorted
    here, when someone reads them (O(n log n), nearly sorted already)."""
    ordered = sorted(task_events, key=lambda e: e.time)
    return list(heapq.merge(events, ordered, key=lambda e: e.time))


class HeadLink:
    """The link to the head at ``address``, kept up until ``close()``.

    ``dial()`` opens a stream to the head (with its own timeout); ``make_peer()`` wraps one;
    ``on_connected(peer)`` runs on every new link before it is used. ``wait_s`` bounds how
    long a request waits for a lost link to come back.
    """

    def __init__(
        self,
        address: str,
        *,
        dial: Callable[[], Awaitable[FrameStream]],
        make_peer: Callable[[], Peer],
        on_connected: Callable[[Peer], Awaitable[None]],
        wait_s: float,
    ) -> None:
        self.address = address
        self._dial = dial
        self._make_peer = make_peer
        self._on_connected = on_connected
        self.wait_s = wait_s
        self.peer: Peer | None = None  # the link in use; None before the first connection
        self.lost: str | None = None  # what happened, while reconnecting
        self._up = trio.Event()
        self._linked = trio.Event()  # set (and replaced) each time a new link is up
        self._closing = False
        self.reconnections = 0
        # Run on every new link after the first, after on_connected: reports to the head.
        self.on_reconnected: list[Callable[[Peer], Awaitable[None]]] = []

    def __repr__(self) -> str:
        state = f"lost: {self.lost}" if self.lost else ("up" if self._up.is_set() else "down")
        return f"<HeadLink {self.address} {state}>"

    def close(self) -> None:
        """This process is leaving: a link lost from now on is not dialled again."""
        self._closing = True

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect (a failure here raises: the head was never there), then keep the link up
        until cancelled."""
        async with trio.open_nursery() as nursery:
            peer = await self._first_connect(nursery)
            task_status.started()
            while True:
                await _wait_closed(peer)
                self._up = trio.Event()
                if self._closing or trio.current_effective_deadline() == -float("inf"):
                    return  # leaving, or stopping with the link (a worker exits with its head)
                self.lost = f"lost the head at {self.address} ({peer.close_reason})"
                log.warning("%s; reconnecting", self.lost)
                peer = await self._reconnect(nursery)

    async def _first_connect(self, nursery: trio.Nursery) -> Peer:
        for attempt in range(1, FIRST_CONNECT_TRIES + 1):
            try:
                return await self._connect(nursery, again=False)
            except TimeoutError as exc:
                if attempt == FIRST_CONNECT_TRIES:
                    raise TimeoutError(f"{exc} ({attempt} tries)") from None
                log.warning("%s; trying again (%d of %d)", exc, attempt + 1, FIRST_CONNECT_TRIES)
        raise AssertionError("unreachable")

    async def _connect(self, nursery: trio.Nursery, *, again: bool) -> Peer:
        stream = await self._dial()
        peer = self._make_peer()
        nursery.start_soon(peer.run, stream)
        try:
            await self._on_connected(peer)
            if again:
                for report in self.on_reconnected:
                    await report(peer)
        except BaseException:
            peer.abort("the new link to the head failed while it was being set up")
            raise
        self.peer = peer
        self._up.set()
        linked, self._linked = self._linked, trio.Event()
        linked.set()
        return peer

    async def _reconnect(self, nursery: trio.Nursery) -> Peer:
        started = trio.current_time()
        delay = RECONNECT_FIRST_DELAY_S
        while True:
            try:
                peer = await self._connect(nursery, again=True)
            except (OSError, ActorgridError, PeerClosedError) as exc:
                log.debug("the head at %s is still unreachable: %s", self.address, exc)
            else:
                self.reconnections += 1
                self.lost = None
                log.warning(
                    "reconnected to the head at %s after %.1f s",
                    self.address,
                    trio.current_time() - started,
                )
                return peer
            await trio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_S)

    def up(self) -> Peer:
        """The link, if it is up now; else an error saying what happened."""
        peer = self.peer
        if peer is None or peer.closed or not self._up.is_set():
            raise ActorgridError(self._down_message())
        return peer

    async def wait_up(self) -> Peer:
        """The link, waiting up to ``wait_s`` for a lost one to come back."""
        with trio.move_on_after(self.wait_s):
            await self._up.wait()
        return self.up()

    async def request(self, make: Callable[[int], Message]) -> Message:
        """Ask the head; a request that only reads is sent again if its link closes first
        (within ``wait_s`` of the loss), any other fails then (see the module docstring)."""
        peer = await self.wait_up()
        deadline: float | None = None
        sent: list[Message] = []  # what the last try sent, if it got that far

        def made(rid: int) -> Message:
            message = make(rid)
            sent.append(message)
            return message

        while True:
            sent.clear()
            try:
                return await peer.request(made)
            except PeerClosedError as exc:
                if sent and type(sent[0]) not in RESENT_ON_A_NEW_LINK:
                    raise ActorgridError(_unanswered(self.address, sent[0], exc)) from None
                if deadline is None:
                    deadline = trio.current_time() + self.wait_s
                peer = await self._wait_new_link(peer, deadline, exc)

    async def _wait_new_link(self, old: Peer, deadline: float, exc: PeerClosedError) -> Peer:
        """The first link up after ``old``, waited for until ``deadline``."""
        with trio.move_on_at(deadline):
            while not self._closing:
                peer = self.peer
                if peer is not None and peer is not old and not peer.closed and self._up.is_set():
                    return peer
                await self._linked.wait()
        raise ActorgridError(
            f"the cluster head is unreachable: the link closed before it answered ({exc}), "
            f"and no new one came up within {self.wait_s:g} s: {self._down_message()}"
        )

    def send(self, message: Message) -> None:
        """Send if the link is up; dropped while it is down (reports, not state)."""
        if self.peer is not None:
            self.peer.send(message)

    def _down_message(self) -> str:
        if self.lost is not None:
            return (
                f"{self.lost}; reconnecting. Calls to workers go on meanwhile; names, "
                "listings and operations need the head: check that it runs (actorgrid status "
                "on its machine) or restart it on the same address"
            )
        if self._closing:
            return "this process has left the cluster (ag.shutdown()), so the head is unavailable"
        return (
            f"this process is not connected to the cluster head at {self.address}: it is "
            "still connecting"
        )


def _unanswered(address: str, message: Message, exc: PeerClosedError) -> str:
    return (
        f"the link to the cluster head at {address} closed before it answered "
        f"{type(message).__name__} ({exc}); it is not sent again, as the head may have done it "
        "already and doing it twice is not the same as once: check whether it took effect "
        "(ag.get_actor, actorgrid status) once the head is back, then retry if it did not"
    )


async def _wait_closed(peer: Peer) -> None:
    closed = trio.Event()
    peer.on_closed.append(lambda _: closed.set())
    if not peer.closed:
        await closed.wait()


async def reown(head: Peer, owned: list[ActorInfo]) -> None:
    """Tell a (perhaps restarted) head again which actors this process owns, so that they
    still end when it does (detached ones are the head's). No reply: it takes them in order."""
    for info in owned:
        if not info.detached:
            head.send(OwnActor(info.actor_id, info.address))
