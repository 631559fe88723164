"""The I/O shell of reference counting: feeds the RefTable (``_scheduler/refcount.py``) what
happens to ObjectRefs in this process and carries out what it decides.

Where the events come from:

- An ObjectEntry is *watched* once a ref to it is pickled (owner) or made by unpickling
  (borrower): a ``weakref.finalize`` reports ``LocalRefDropped`` when the entry is collected,
  that is when no ObjectRef (nor pending call, nor waiter) in this process uses it any more.
  Entries of objects never sent anywhere are not watched: the hot path of a call whose refs
  stay home costs nothing more than before.
- ``ObjectRef.__reduce__`` calls :meth:`RefCounts.sent`, which gives the pickled ref a token
  (``RefSent``); ``_rebuild_ref`` calls :meth:`RefCounts.rebuild` (``RefReceived``).
- RefsReceived and BorrowUpdate messages, and WorkerLeft (``BorrowerLost``). A borrower that
  is no worker (a driver) has no WorkerLeft: the owner keeps a link to it and ends its
  borrows when that link closes (it exited, was killed, or went silent for 5 pulses).

Threads: pickling, unpickling and finalizers run on any thread (user threads, the executor's
pool, the garbage collector). They only append events to one deque, in the order they happen,
and schedule a drain on the loop; the table is touched on the loop alone. Messages are
batched per link and over time: every BATCH_S at most, one RefsReceived per sender and one
BorrowUpdate per owner carry all the receipts and borrow changes since the last.

Memory comes back to the system: values are mostly allocated by malloc in pieces too small for
it to map them apart, and freed ones in the middle of the heap stay in the process. A
process that freed or released objects asks glibc to give the free pages back
(``malloc_trim``, as Dask's workers do), at most once per TRIM_DELAY_S.

An owner keeps the value of a watched object in ``kept`` until the table frees it, since its
ObjectEntry may be collected while borrowers still fetch it; a fetch or a ref that comes home
then gets a new entry with the same value (``revive``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import math
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._exceptions import ObjectLostError
from .._protocol.ids import ObjectId, short
from .._protocol.messages import ActorInfo, BorrowUpdate, Payload, RefReceipt, RefsReceived
from .._scheduler.refcount import (
    AddBorrower,
    BorrowerAdded,
    BorrowerLost,
    BorrowerReleased,
    Command,
    Event,
    Free,
    HoldAcked,
    LeaseExpired,
    LocalRefAdded,
    LocalRefDropped,
    Receipt,
    RefReceived,
    RefSent,
    RefTable,
    Release,
)
from .refs import PENDING, READY, EntryTable, ObjectEntry

if TYPE_CHECKING:
    from .peer import Peer

__all__ = ["RefCounts", "freed_error", "owner_lost_error"]

log = logging.getLogger("actorgrid.refs")

# Receipts and borrow updates wait this long, to go out together (a few calls' worth).
BATCH_S = 0.01
# Frees and releases are batched into one malloc_trim this long after the first of them.
TRIM_DELAY_S = 0.5
# A ref pickled into a message holds its object until the receiver's receipt, or for this
# long at most (the message may never be unpickled: a task cancelled before it ran, a result
# nobody reads). ACTORGRID_REF_LEASE_S overrides it, for every process that inherits it.
DEFAULT_REF_LEASE_S = 300.0


def ref_lease_s() -> float:
    value = os.environ.get("ACTORGRID_REF_LEASE_S", "")
    try:
        lease = float(value) if value else DEFAULT_REF_LEASE_S
    except ValueError:
        lease = math.nan
    if not lease > 0:
        raise ValueError(
            f"ACTORGRID_REF_LEASE_S={value!r} is not a positive number of seconds: it is how "
            "long a ref sent in a message holds its object before the receiver unpickles it. "
            f"Unset it for the default ({DEFAULT_REF_LEASE_S:g} s) or give e.g. 600."
        )
    return lease


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: the allocator decides alone
        return None
    return trim


_malloc_trim = _load_malloc_trim()


class _Portal(Protocol):
    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None: ...


class _Host(Protocol):
    """What the shell needs of the Runtime."""

    address: str
    objects: EntryTable

    def is_worker(self, address: str) -> bool: ...

    @property
    def portal(self) -> _Portal: ...

    @property
    def nursery(self) -> trio.Nursery: ...

    def peer_for(self, address: str) -> Peer: ...


class _Kept:
    """The outcome of an owned object, kept while others may still fetch it."""

    __slots__ = ("actor", "error", "payload", "state")

    def __init__(self, entry: ObjectEntry) -> None:
        self.state = entry.state
        self.payload = entry.payload
        self.error = entry.error
        self.actor = entry.actor


class _KeepWhenDone:
    """Waiter: copies an owned entry's outcome into ``kept`` once it resolves."""

    __slots__ = ("counts", "entry")

    def __init__(self, counts: RefCounts, entry: ObjectEntry) -> None:
        self.counts = counts
        self.entry = weakref.ref(entry)  # a waiter must not keep its entry alive

    def set(self) -> None:
        entry = self.entry()
        if entry is not None and entry.object_id in self.counts.watched_here:
            self.counts.kept[entry.object_id] = _Kept(entry)


class RefCounts:
    """Reference counting for one Runtime. See the module docstring."""

    def __init__(self, host: _Host) -> None:
        self._host = host
        self._table: RefTable | None = None
        self._events: deque[Event] = deque()
        self._scheduled = False
        self._tokens = itertools.count(1)  # next() is atomic: tokens are unique per process
        self.kept: dict[ObjectId, _Kept] = {}
        self.watched_here: set[ObjectId] = set()  # owned objects the table counts
        self.freed = 0  # objects freed since start, for statistics and tests
        self._receipts: dict[str, list[RefReceipt]] = {}
        self._added: dict[str, list[tuple[ObjectId, str]]] = {}
        self._released: dict[str, list[ObjectId]] = {}
        self._trim_pending = False
        self._flush_pending = False
        self._collecting = threading.local()
        # Borrowers that are no workers (drivers): their link is watched, since no WorkerLeft
        # will tell of their end.
        self._watched: set[str] = set()
        self.lease_s = ref_lease_s()
        # (deadline, object, token) of holds awaiting their receipt, oldest first: leases
        # all last lease_s, so the deque stays in deadline order.
        self._leases: deque[tuple[float, ObjectId, int]] = deque()
        self._expiring = False

    def __repr__(self) -> str:
        return f"<RefCounts {self.table!r} kept={len(self.kept)} freed={self.freed}>"

    @property
    def table(self) -> RefTable:
        if self._table is None:
            self._table = RefTable(self._host.address)
        return self._table

    def handlers(self) -> dict[type, Callable[[Peer, Any], Any]]:
        return {RefsReceived: self._on_refs_received, BorrowUpdate: self._on_borrow_update}

    # --- any thread ----------------------------------------------------------------------

    def collect(self) -> list[ObjectEntry]:
        """Any thread: from now on, the entries of refs this thread pickles are appended to
        the list returned (a task's arguments, kept alive while it may be sent again), until
        ``collect_end``."""
        entries: list[ObjectEntry] = []
        self._collecting.entries = entries
        return entries

    def collect_end(self) -> None:
        self._collecting.entries = None

    def sent(self, entry: ObjectEntry) -> tuple[str, int, bool]:
        """A ref to ``entry`` is being pickled: the sender address and token it carries, and
        whether it is pickled into a task's arguments (``collect``)."""
        entries = getattr(self._collecting, "entries", None)
        if entries is not None:
            entries.append(entry)
        token = next(self._tokens)
        if not entry.tracked:
            self._push(LocalRefAdded(entry.object_id, entry.owner))
            self._watch(entry)
        self._push(RefSent(entry.object_id, entry.owner, token))
        return self._host.address, token, entries is not None

    def rebuild(
        self,
        object_id: ObjectId,
        owner: str,
        actor: ActorInfo | None,
        sender: str,
        token: int,
        inline: bytes | None = None,
    ) -> ObjectEntry:
        """The entry for a ref being unpickled here, pickled by ``sender`` with ``token``
        (``inline``: its value, small enough to travel with it)."""
        host = self._host
        entry = host.objects.get(object_id)
        new_local = False
        if entry is None:
            if owner == host.address:
                entry = self._revived(object_id)
                if entry is None:
                    entry = ObjectEntry(object_id, owner, actor)
                    entry.set_error(freed_error(object_id, owner))
                    self._push(RefReceived(object_id, owner, sender, token, False))
                    return entry  # lost: nothing to count but the sender's receipt
            else:
                entry = ObjectEntry(object_id, owner, actor)
                if inline is not None:  # before anyone else can see the entry
                    entry.set_value(Payload(inline))
                host.objects[object_id] = entry
            new_local = True
        elif not entry.tracked:
            new_local = True
        if sender:
            self._push(RefReceived(object_id, owner, sender, token, new_local))
        elif new_local:
            self._push(LocalRefAdded(object_id, owner))
        if new_local:
            self._watch(entry)
        return entry

    def revive(self, object_id: ObjectId) -> ObjectEntry | None:
        """A new entry for an owned object whose entry was collected while others still
        borrow it; None if it was freed (or never sent anywhere)."""
        entry = self._revived(object_id)
        if entry is not None:
            self._push(LocalRefAdded(object_id, entry.owner))
            self._watch(entry)
        return entry

    def _revived(self, object_id: ObjectId) -> ObjectEntry | None:
        kept = self.kept.get(object_id)
        if kept is None:
            return None
        entry = ObjectEntry(object_id, self._host.address, kept.actor)
        if kept.state == READY:
            assert kept.payload is not None
            entry.set_value(kept.payload)
        elif kept.error is not None:
            entry.set_error(kept.error)
        self._host.objects[object_id] = entry
        return entry

    def _watch(self, entry: ObjectEntry) -> None:
        """Report ``entry``'s collection; for an owned object, keep its outcome."""
        entry.tracked = True
        finalizer = weakref.finalize(entry, self._push, LocalRefDropped(entry.object_id))
        finalizer.atexit = False
        if entry.owner != self._host.address:
            return
        self.watched_here.add(entry.object_id)
        if entry.state != PENDING or not entry.add_waiter(_KeepWhenDone(self, entry)):
            self.kept[entry.object_id] = _Kept(entry)

    def _push(self, event: Event) -> None:
        # The deque keeps the order events happened in, across threads. Drains clear the flag
        # before taking events, so an event appended after a drain's last look finds it
        # cleared and schedules another.
        self._events.append(event)
        if not self._scheduled:
            self._scheduled = True
            try:
                self._host.portal.call_soon(self._drain)
            except Exception:  # the loop has ended: nothing is counted any more
                self._scheduled = False

    # --- loop ----------------------------------------------------------------------------

    def _drain(self) -> None:
        self._scheduled = False
        table, events = self.table, self._events
        leases = self._leases
        while events:
            event = events.popleft()
            if type(event) is RefSent:
                leases.append((trio.current_time() + self.lease_s, event.object_id, event.token))
            for command in table.handle(event):
                self._run(command)
        if leases and not self._expiring:
            self._expiring = True
            try:
                self._host.nursery.start_soon(self._expire_leases)
            except Exception:  # stopping: its counts no longer matter
                self._expiring = False
        if not self._flush_pending and (self._receipts or self._added or self._released):
            self._flush_pending = True
            try:
                self._host.nursery.start_soon(self._flush_later)
            except Exception:  # stopping: its counts no longer matter
                self._flush_pending = False

    def _run(self, command: Command) -> None:
        if isinstance(command, Free):
            self.kept.pop(command.object_id, None)
            self.watched_here.discard(command.object_id)
            self.freed += 1
            self._trim_soon()
        elif isinstance(command, Receipt):
            if command.sender == self._host.address:
                self._events.append(
                    HoldAcked(command.object_id, command.owner, command.token, None)
                )
            else:
                receipt = RefReceipt(
                    command.object_id, command.owner, command.token, command.borrows
                )
                self._receipts.setdefault(command.sender, []).append(receipt)
        elif isinstance(command, AddBorrower):
            self._added.setdefault(command.owner, []).append((command.object_id, command.borrower))
        elif isinstance(command, Release):
            self._released.setdefault(command.owner, []).append(command.object_id)
            self._trim_soon()

    def _trim_soon(self) -> None:
        if self._trim_pending or _malloc_trim is None:
            return
        self._trim_pending = True
        try:
            self._host.nursery.start_soon(self._trim_later)
        except Exception:  # stopping: the process gives all its memory back soon
            self._trim_pending = False

    async def _trim_later(self) -> None:
        await trio.sleep(TRIM_DELAY_S)
        self._trim_pending = False
        assert _malloc_trim is not None
        _malloc_trim(0)  # well under a millisecond for a few hundred MB of heap

    async def _expire_leases(self) -> None:
        leases = self._leases
        try:
            while leases:
                await trio.sleep_until(leases[0][0])
                now = trio.current_time()
                while leases and leases[0][0] <= now:
                    _, object_id, token = leases.popleft()
                    self._events.append(LeaseExpired(object_id, token))
                self._drain()
        finally:
            self._expiring = False

    async def _flush_later(self) -> None:
        await trio.sleep(BATCH_S)
        self._flush_pending = False
        self._flush()

    def _flush(self) -> None:
        me = self._host.address
        receipts, self._receipts = self._receipts, {}
        for sender, rows in receipts.items():
            self._send(sender, RefsReceived(me, tuple(rows)))
        added, self._added = self._added, {}
        released, self._released = self._released, {}
        for owner in added.keys() | released.keys():
            update = BorrowUpdate(me, tuple(added.get(owner, ())), tuple(released.get(owner, ())))
            self._send(owner, update)

    def _send(self, address: str, message: RefsReceived | BorrowUpdate) -> None:
        try:
            self._host.peer_for(address).send(message)
        except Exception as exc:  # this process is stopping: its counts no longer matter
            log.debug("reference counts for %s not sent: %s", address, exc)

    def _on_refs_received(self, peer: Peer, msg: RefsReceived) -> None:
        me = self._host.address
        for r in msg.receipts:
            borrower = msg.borrower if r.borrows else None
            self._events.append(HoldAcked(r.object_id, r.owner, r.token, borrower))
            if borrower is not None and r.owner == me:
                self._watch_borrower(borrower)
        self._drain()  # after the RefSent events still queued, which came first

    def _on_borrow_update(self, peer: Peer, msg: BorrowUpdate) -> None:
        for object_id, borrower in msg.added:  # adds first: they keep, releases free
            self._events.append(BorrowerAdded(object_id, borrower))
            self._watch_borrower(borrower)
        for object_id in msg.released:
            self._events.append(BorrowerReleased(object_id, msg.borrower))
        self._drain()

    def borrower_lost(self, address: str) -> None:
        """The process at ``address`` died: its borrows end."""
        self._events.append(BorrowerLost(address))
        self._drain()

    def _watch_borrower(self, address: str) -> None:
        """Loop: end the borrows of ``address``, a driver, when this process's link to it
        closes (it exited, was killed, or was silent for 5 pulse intervals). Workers are
        the head's to declare dead (WorkerLeft). One link per borrowing process."""
        if address in self._watched or address == self._host.address:
            return
        if self._host.is_worker(address):
            return
        try:
            peer = self._host.peer_for(address)
        except Exception as exc:  # this process is stopping: its counts no longer matter
            log.debug("borrower %s not watched: %s", address, exc)
            return
        self._watched.add(address)
        peer.on_closed.append(self._borrower_link_closed)

    def _borrower_link_closed(self, peer: Peer) -> None:
        self._watched.discard(peer.address)
        log.debug("the borrows of %s end: %s", peer.address, peer.close_reason)
        self.borrower_lost(peer.address)


def freed_error(object_id: ObjectId, owner: str) -> ObjectLostError:
    return ObjectLostError(
        f"object {short(object_id)} owned by {owner} was freed: its owner counted no reference "
        "to it any more. Likely causes: the ref was kept where actorgrid cannot see it (pickled "
        "to a file or a database) while every live ref was dropped; or it travelled inside a "
        "result or message that was unpickled only after its lease (ACTORGRID_REF_LEASE_S, "
        f"default {DEFAULT_REF_LEASE_S:g} s) while nothing else held it; or the process "
        "holding it was declared dead (silent for 5 pulse intervals) and its borrows "
        "released. Keep an ObjectRef alive, or pass it to tasks and actors, for as long as the "
        "value is needed.",
        object_id,
        owner,
    )


def owner_lost_error(object_id: ObjectId, owner: str, why: object) -> ObjectLostError:
    return ObjectLostError(
        f"object {short(object_id)} is lost: its owner {owner} is unreachable ({why}). Likely "
        "cause: the process that created it (with ag.put or by submitting the task that "
        "returned it) exited or was killed, and its objects went with it. Keep the owner "
        "alive while others use its objects, or return the value itself instead of a ref.",
        object_id,
        owner,
    )
