"""A node's object store: what its shared memory holds, and what to spill or evict when full.

The node agent owns the store's segments (``_node/objectstore.py``); processes of the node
write objects themselves and tell it (``Created``), owners tell it when the last reference
goes (``Freed``). This object decides; the shell moves files.

Two kinds of objects live here:

- *primary* copies: made on this node (a large result, ``ag.put``, a large argument). They
  are needed until freed, so they are never evicted: when memory is short they are spilled
  to local disk, oldest first, and read from there afterwards.
- *cached* copies: pulled from another node's store. The holder keeps the primary, so a
  cached copy may be evicted (least recently used first) at any time; the next reader pulls
  it again.

Invariants:

- ``used`` is the sum of the sizes of the objects in memory, including those being spilled
  (their memory comes back when the spill is done).
- After every event, memory not on its way out (``used`` minus what is being spilled) is at
  most ``capacity``, unless every object in memory is already being spilled.
  A single object larger than the capacity is spilled at once.
- Cached copies go before any primary is spilled; within a kind, the least recently
  created or read goes first.
- Every object ends in exactly one ``Delete`` once freed, and never gets a ``Spill`` after
  it was freed. Freeing an object while it is being spilled defers its ``Delete`` to the end
  of the spill, so the shell never races its own copy.

Costs: every event is O(1) amortized, plus O(objects moved out) for the commands it returns.
Never reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from .._protocol.wireclass import message

__all__ = [
    "Command",
    "Created",
    "Delete",
    "Event",
    "Evict",
    "Freed",
    "OwnerGone",
    "Read",
    "Spill",
    "SpillDone",
    "StoreState",
    "StoreStatistics",
]


# --- events ------------------------------------------------------------------------------


@message
class Created:
    """A process of the node wrote object ``name`` (``size`` bytes) into shared memory."""

    name: str
    size: int
    primary: bool = True
    owner: int = 0  # the pid of the process of this node that owns it (0: another process)


@message
class Freed:
    """The object's owner dropped its last reference (or the object's copy is no longer
    needed here)."""

    name: str


@message
class OwnerGone:
    """The process of this node with pid ``owner`` exited: what it owned is freed (its
    references died with it)."""

    owner: int


@message
class Read:
    """A reader mapped the object: it becomes the most recently used."""

    name: str


@message
class SpillDone:
    """The shell finished a ``Spill``: the object now lives on disk (``ok``), or the copy
    failed and it stays in memory."""

    name: str
    ok: bool = True


Event = Created | Freed | OwnerGone | Read | SpillDone


# --- commands ----------------------------------------------------------------------------


@message
class Spill:
    """Copy the object from shared memory to the spill folder, then remove it from shared
    memory; report ``SpillDone``."""

    name: str


@message
class Evict:
    """Remove a cached copy from shared memory (readers that mapped it keep their view)."""

    name: str


@message
class Delete:
    """Remove the object wherever it is (shared memory, disk)."""

    name: str


Command = Spill | Evict | Delete


@message
class StoreStatistics:
    """A node store at one moment: ``Cluster.status()`` and ``actorgrid status`` show it."""

    capacity: int  # bytes of shared memory it may use
    used: int  # bytes of shared memory its objects use now
    objects: int  # objects in shared memory
    spilled: int  # objects on disk
    spilled_bytes: int
    evicted: int  # cached copies evicted since the start
    spills: int  # objects spilled since the start
    # The free pool of recycled segments (``recycling.py``): files, and bytes of shared
    # memory they keep (not counted in ``used``).
    pooled: int = 0
    pooled_bytes: int = 0

    def availability_fields(self) -> dict[str, int]:
        """The fields a node's pulse (``Availability``) carries of it."""
        return {
            "store_capacity": self.capacity,
            "store_used": self.used,
            "store_spilled": self.spilled_bytes,
            "store_pooled": self.pooled,
            "store_pooled_bytes": self.pooled_bytes,
        }


@attrs.define
class _Object:
    size: int
    primary: bool
    freed: bool = False  # freed while spilling: delete once the spill ends


class StoreState:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(
                f"object_store_memory must be a positive number of bytes, not {capacity}"
            )
        self.capacity = capacity
        self.used = 0
        self._leaving = 0  # bytes of objects being spilled
        # In memory, least recently used first; one queue per kind.
        self._cached: OrderedDict[str, _Object] = OrderedDict()
        self._primary: OrderedDict[str, _Object] = OrderedDict()
        self._spilling: dict[str, _Object] = {}  # primaries on their way to disk
        self._disk: dict[str, int] = {}
        self._disk_bytes = 0
        self.evicted = 0
        self.spills = 0
        self._owned: dict[int, set[str]] = {}  # owner pid -> its objects still here
        self._owner_of: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"<StoreState used={self.used}/{self.capacity} cached={len(self._cached)} "
            f"primary={len(self._primary)} spilled={len(self._disk)}>"
        )

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            self.capacity,
            self.used,
            len(self._cached) + len(self._primary) + len(self._spilling),
            len(self._disk),
            self._disk_bytes,
            self.evicted,
            self.spills,
        )

    def where(self, name: str) -> str | None:
        """ "memory", "disk" or None (not here)."""
        if name in self._primary or name in self._cached or name in self._spilling:
            return "memory"
        return "disk" if name in self._disk else None

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, Created):
            return self._created(event)
        if isinstance(event, Freed):
            return self._freed(event.name)
        if isinstance(event, OwnerGone):
            commands: list[Command] = []
            for name in sorted(self._owned.pop(event.owner, ())):
                commands += self._freed(name)
            return commands
        if isinstance(event, Read):
            for queue in (self._primary, self._cached):
                if event.name in queue:
                    queue.move_to_end(event.name)
            return []
        return self._spill_done(event)

    def _created(self, event: Created) -> list[Command]:
        if self.where(event.name) is not None:
            return []  # told twice (a copy pulled again): the first one counts
        queue = self._primary if event.primary else self._cached
        queue[event.name] = _Object(event.size, event.primary)
        self.used += event.size
        if event.owner:
            self._owned.setdefault(event.owner, set()).add(event.name)
            self._owner_of[event.name] = event.owner
        return self._make_room()

    def _forget_owner(self, name: str) -> None:
        owner = self._owner_of.pop(name, 0)
        names = self._owned.get(owner)
        if names is not None:
            names.discard(name)
            if not names:
                del self._owned[owner]

    def _freed(self, name: str) -> list[Command]:
        self._forget_owner(name)
        if name in self._disk:
            self._disk_bytes -= self._disk.pop(name)
            return [Delete(name)]
        spilling = self._spilling.get(name)
        if spilling is not None:
            spilling.freed = True
            return []
        obj = self._primary.pop(name, None) or self._cached.pop(name, None)
        if obj is None:
            return []  # never told, or freed twice
        self.used -= obj.size
        return [Delete(name)]

    def _spill_done(self, event: SpillDone) -> list[Command]:
        obj = self._spilling.pop(event.name, None)
        if obj is None:
            return []
        self._leaving -= obj.size
        if not event.ok and not obj.freed:
            # It stays in memory, and a later creation retries it; meanwhile cached copies
            # make what room they can.
            self._primary[event.name] = obj
            return self._evict_cached()
        self.used -= obj.size
        if obj.freed:
            return [Delete(event.name)]
        self._disk[event.name] = obj.size
        self._disk_bytes += obj.size
        return []

    def _evict_cached(self) -> list[Command]:
        commands: list[Command] = []
        while self._cached and self.used - self._leaving > self.capacity:
            name, obj = self._cached.popitem(last=False)
            self._forget_owner(name)
            self.used -= obj.size
            self.evicted += 1
            commands.append(Evict(name))
        return commands

    def _make_room(self) -> list[Command]:
        commands = self._evict_cached()
        while self._primary and self.used - self._leaving > self.capacity:
            name, obj = self._primary.popitem(last=False)
            self._spilling[name] = obj
            self._leaving += obj.size
            self.spills += 1
            commands.append(Spill(name))
        return commands
