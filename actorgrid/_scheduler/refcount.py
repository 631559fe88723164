"""Reference counting: when an object may be freed, and who must be told (sans-I/O).

One ``RefTable`` per process, fed events by the I/O shell (``_runtime/refcounting.py``) and
answering commands; it never touches a socket, a clock or a thread.

The protocol, after Ray's ownership model (NSDI 2021), with hand-off receipts:

- The *owner* of an object (the process that created it) counts its *interest* in it: local
  entries (``LocalRefAdded``/``LocalRefDropped``: live ObjectRefs in this process), *holds*
  (one per ref pickled into an outgoing message, ``RefSent``, keyed by a token the ref carries)
  and *borrowers* (other processes holding it, a signed count per borrower address).
- A *borrower* counts its own local entries and holds the same way; its borrow is one episode,
  from its first interest to its last.
- The receiver of a pickled ref (``RefReceived``) always answers the process that pickled it
  with a ``Receipt`` for the token, saying whether the receiver starts a borrow episode with it
  (it had no interest and is not the owner). The pickling process releases its hold only on
  that receipt (``HoldAcked``), *after* recording the new borrower: the owner adds it at once;
  a borrower forwards it to the owner (``AddBorrower``) on its link to the owner, on which its
  own ``Release`` can only come later. So between the ref leaving one process and the receiver
  being counted, a hold or a borrow always covers it.
- A borrower whose interest ends sends ``Release`` to the owner (the shell batches these per
  owner link, never one message per ref). Receipts and releases may cross on different links,
  so borrower counts are signed: a release that overtakes the add it pairs with makes the
  count -1 for a while, during which the forwarder's own hold or borrow still keeps the object.
- The owner frees the object (``Free``) when it has no local entry, no positive hold and no
  borrower with a positive count; a borrower that died (``BorrowerLost``) loses its count.

Invariants (checked by the Hypothesis machine in ``tests/_scheduler/test_refcount.py``): an
object is freed exactly once, never while any process holds it or a message carries it, and
always once no process holds it and every message about it has been delivered.

Costs: every event is O(1), except ``settle`` (O(holds and borrowers of that object)) and
``BorrowerLost`` (O(objects that borrower held)). Nothing is O(objects) or O(processes).

Leases: a ref pickled into a message that is never unpickled (a task cancelled before it ran,
a result nobody reads, a message to an actor that ended) would keep its hold for ever. So a
hold is a lease: the shell reports ``LeaseExpired`` for a token whose receipt has not come
within its lease time, and the hold goes. A receipt that comes later finds its hold gone (a
count of -1, which holds nothing), or the object settled: then it changes nothing here (no row
is made again, nothing is freed twice); the receiver still counts as a borrower if the object
is alive at its owner. What keeps an object meanwhile is then only what keeps it anyway: the submitter's
local entries (a task keeps the refs of its arguments until it is resolved), borrowers.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

from .._protocol.ids import ObjectId
from .._protocol.wireclass import message

__all__ = [
    "AddBorrower",
    "BorrowerAdded",
    "BorrowerLost",
    "BorrowerReleased",
    "Command",
    "Event",
    "Free",
    "HoldAcked",
    "LeaseExpired",
    "LocalRefAdded",
    "LocalRefDropped",
    "Receipt",
    "RefReceived",
    "RefSent",
    "RefTable",
    "Release",
]


# --- events ----------------------------------------------------------------------------------


@message
class LocalRefAdded:
    """A local entry for the object appeared in this process (refs to it may be made)."""

    object_id: ObjectId
    owner: str


@message
class LocalRefDropped:
    """A local entry for the object was garbage collected: no ref in this process uses it."""

    object_id: ObjectId


@message
class RefSent:
    """This process pickled a ref to the object, carrying ``token``, into an outgoing task,
    call, message or result. Holds the object until the receipt for ``token``."""

    object_id: ObjectId
    owner: str
    token: int


@message
class RefReceived:
    """This process unpickled a ref that ``sender`` pickled with ``token``. ``new_local``: a
    new local entry was made for it (counted like LocalRefAdded)."""

    object_id: ObjectId
    owner: str
    sender: str
    token: int
    new_local: bool


@message
class HoldAcked:
    """The receipt for ``token``: the receiver has the ref; ``borrower`` is its address when
    it starts a borrow episode with it (None: it already had one, or it is the owner)."""

    object_id: ObjectId
    owner: str
    token: int
    borrower: str | None


@message
class LeaseExpired:
    """No receipt came for ``token`` within its lease: its hold goes."""

    object_id: ObjectId
    token: int


@message
class BorrowerAdded:
    """Owner: a borrower of one of its objects learned of by a forwarding process."""

    object_id: ObjectId
    borrower: str


@message
class BorrowerReleased:
    """Owner: ``borrower`` ended a borrow episode of the object."""

    object_id: ObjectId
    borrower: str


@message
class BorrowerLost:
    """Owner: the process at ``borrower`` died (its worker left, its link was lost)."""

    borrower: str


Event = (
    LocalRefAdded
    | LocalRefDropped
    | RefSent
    | RefReceived
    | HoldAcked
    | LeaseExpired
    | BorrowerAdded
    | BorrowerReleased
    | BorrowerLost
)


# --- commands --------------------------------------------------------------------------------


@message
class Free:
    """Owner: drop the object's value; no process can reach it any more."""

    object_id: ObjectId


@message
class Receipt:
    """Tell ``sender`` that its ref with ``token`` arrived (``borrows``: as a new borrow)."""

    sender: str
    object_id: ObjectId
    owner: str
    token: int
    borrows: bool


@message
class AddBorrower:
    """Tell ``owner`` that ``borrower`` borrows the object (a receipt forwarded to it)."""

    owner: str
    object_id: ObjectId
    borrower: str


@message
class Release:
    """Tell ``owner`` that this process's borrow of the object ended."""

    owner: str
    object_id: ObjectId


Command = Free | Receipt | AddBorrower | Release

K = TypeVar("K", bound=Hashable)


class _Object:
    """One object this process has an interest in (or had, until it settles)."""

    __slots__ = ("borrowers", "holds", "local", "owner")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.local = 0  # live local entries
        # Token -> count. A receipt may be handled before its RefSent (a count of -1 for a
        # while), or twice (a result unpickled twice): only positive counts hold.
        self.holds: dict[int, int] = {}
        # Owner only: borrower address -> episodes added minus episodes released. Signed:
        # a release may overtake the forwarded add it pairs with.
        self.borrowers: dict[str, int] = {}

    def interested(self) -> bool:
        return (
            self.local > 0
            or any(n > 0 for n in self.holds.values())
            or any(n > 0 for n in self.borrowers.values())
        )


class RefTable:
    """The reference counts of one process, at ``address``. See the module docstring."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._objects: dict[ObjectId, _Object] = {}
        self._borrowed_by: dict[str, set[ObjectId]] = {}  # owner: borrower -> its objects

    def __repr__(self) -> str:
        return f"<RefTable {self.address} objects={len(self._objects)}>"

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, object_id: ObjectId) -> bool:
        return object_id in self._objects

    def borrowers(self, object_id: ObjectId) -> dict[str, int]:
        """Owner: the borrower counts of one object (a copy), for statistics and tests."""
        obj = self._objects.get(object_id)
        return dict(obj.borrowers) if obj is not None else {}

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, LocalRefAdded):
            self._get(event.object_id, event.owner).local += 1
            return []
        if isinstance(event, LocalRefDropped):
            obj = self._objects.get(event.object_id)
            if obj is None:
                return []
            obj.local -= 1
            return self._settle(event.object_id, obj)
        if isinstance(event, RefSent):
            obj = self._get(event.object_id, event.owner)
            _bump(obj.holds, event.token, 1)
            return self._settle(event.object_id, obj)
        if isinstance(event, RefReceived):
            return self._received(event)
        if isinstance(event, HoldAcked):
            return self._acked(event)
        if isinstance(event, LeaseExpired):
            obj = self._objects.get(event.object_id)
            if obj is None or obj.holds.get(event.token, 0) <= 0:
                return []  # acknowledged in time, or the object settled already
            del obj.holds[event.token]
            return self._settle(event.object_id, obj)
        if isinstance(event, BorrowerAdded):
            obj = self._objects.get(event.object_id)
            if obj is None or obj.owner != self.address:
                return []  # freed already: the borrower will find it lost
            self._add_borrower(event.object_id, obj, event.borrower, 1)
            return self._settle(event.object_id, obj)
        if isinstance(event, BorrowerReleased):
            obj = self._objects.get(event.object_id)
            if obj is None or obj.owner != self.address:
                return []
            self._add_borrower(event.object_id, obj, event.borrower, -1)
            return self._settle(event.object_id, obj)
        if isinstance(event, BorrowerLost):
            commands: list[Command] = []
            for object_id in self._borrowed_by.pop(event.borrower, ()):
                obj = self._objects.get(object_id)
                if obj is not None:
                    obj.borrowers.pop(event.borrower, None)
                    commands += self._settle(object_id, obj)
            return commands
        raise TypeError(f"RefTable cannot handle {event!r}: not a reference-count event")

    def _get(self, object_id: ObjectId, owner: str) -> _Object:
        obj = self._objects.get(object_id)
        if obj is None:
            obj = self._objects[object_id] = _Object(owner)
        return obj

    def _received(self, event: RefReceived) -> list[Command]:
        object_id = event.object_id
        obj = self._objects.get(object_id)
        mine = event.owner == self.address
        if mine and obj is None:
            # Back home after it was freed (it cannot be, while the ref was in flight): the
            # shell reports the object lost; nothing to count.
            return [Receipt(event.sender, object_id, event.owner, event.token, False)]
        borrows = not mine and (obj is None or not obj.interested())
        obj = self._get(object_id, event.owner)
        if event.new_local:
            obj.local += 1
        if event.sender == self.address:  # pickled and unpickled here: our own receipt
            _bump(obj.holds, event.token, -1)
            return self._settle(object_id, obj)
        receipt = Receipt(event.sender, object_id, event.owner, event.token, borrows)
        return [receipt, *self._settle(object_id, obj)]

    def _acked(self, event: HoldAcked) -> list[Command]:
        object_id = event.object_id
        obj = self._objects.get(object_id)
        if obj is None:
            # A stale receipt: its hold went with its lease, and the object settled since. It
            # must not make the row again (an owner would count a borrower of a freed object
            # and free it twice). A borrower still tells the owner of the receiver, who counts
            # it only if the object is alive there.
            borrower = event.borrower
            if event.owner == self.address or borrower is None or borrower == self.address:
                return []
            return [AddBorrower(event.owner, object_id, borrower)]
        commands: list[Command] = []
        if event.borrower is not None and event.borrower != self.address:
            if obj.owner == self.address:
                self._add_borrower(object_id, obj, event.borrower, 1)
            else:  # before our own Release can follow, on the same link
                commands.append(AddBorrower(obj.owner, object_id, event.borrower))
        _bump(obj.holds, event.token, -1)
        return commands + self._settle(object_id, obj)

    def _add_borrower(self, object_id: ObjectId, obj: _Object, borrower: str, n: int) -> None:
        if _bump(obj.borrowers, borrower, n):
            self._borrowed_by.setdefault(borrower, set()).add(object_id)
        else:
            self._forget_borrower(object_id, borrower)

    def _forget_borrower(self, object_id: ObjectId, borrower: str) -> None:
        objects = self._borrowed_by.get(borrower)
        if objects is not None:
            objects.discard(object_id)
            if not objects:
                del self._borrowed_by[borrower]

    def _settle(self, object_id: ObjectId, obj: _Object) -> list[Command]:
        if obj.interested():
            return []
        del self._objects[object_id]
        for borrower in obj.borrowers:
            self._forget_borrower(object_id, borrower)
        if obj.owner == self.address:
            return [Free(object_id)]
        return [Release(obj.owner, object_id)]


def _bump(counts: dict[K, int], key: K, n: int) -> bool:
    """Add ``n`` to ``counts[key]``, dropping it at zero; True if the key remains."""
    value = counts.get(key, 0) + n
    if value:
        counts[key] = value
        return True
    counts.pop(key, None)
    return False
