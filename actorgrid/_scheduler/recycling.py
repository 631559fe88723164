"""A node store's free pool: segments of freed objects kept for the next writer of a like size.

Creating a shared-memory file costs more than copying into it: the kernel allocates and zeroes
every page on the first write, and frees them all again at the unlink. Writing into a file
whose pages already exist costs the copy alone. So a freed object's file in shared memory is
not removed but *recycled*: renamed into the store's pool folder under its size class, where a
writer of an object of that class claims it (``_runtime/segments.py``).

Readers are never overwritten: a reader holds a shared ``flock`` on the file for as long as it
has it mapped, and a writer takes the exclusive lock without waiting before it writes into a
claimed file; if it cannot, the file goes back to the pool (its pages are shared with the
reader, so it costs no memory meanwhile). This object only keeps the pool's accounts.

Invariants:

- The pool holds at most ``per_class`` files of a size class and ``limit`` bytes in all;
  an object smaller than ``min_bytes`` is never recycled (its page faults cost little).
- Each file offered is either pooled (``Recycle``) or removed (``Remove``); a claimed file
  leaves the accounts (``Claimed``); ``Shrink`` (the store's memory is short) removes them all.

Costs: O(1) per event, plus O(files removed) for ``Shrink``. Never reads a clock.
"""

from __future__ import annotations

from .._protocol.wireclass import message

__all__ = [
    "POOL_MIN_BYTES",
    "Claimed",
    "Offered",
    "Recycle",
    "Remove",
    "SegmentPool",
    "Shrink",
    "pool_name",
    "size_class",
]

POOL_MIN_BYTES = 4 << 20  # smaller objects are created afresh each time


def size_class(size: int) -> int:
    """The class of a file of ``size`` bytes: sizes up to the same power of two share one."""
    return max(size - 1, 1).bit_length()


def pool_name(size: int, name: str) -> str:
    """The name a recycled file has in the pool folder (writers list it by class prefix)."""
    return f"{size_class(size)}-{name}"


@message
class Offered:
    """The store removed object ``name`` (``size`` bytes) from shared memory: recycle it?"""

    name: str
    size: int


@message
class Claimed:
    """A writer took file ``pooled`` out of the pool."""

    pooled: str


@message
class Shrink:
    """The store's memory is short: give back every pooled file."""


Event = Offered | Claimed | Shrink


@message
class Recycle:
    """Move object ``name``'s file into the pool folder as ``pooled``."""

    name: str
    pooled: str


@message
class Remove:
    """Remove the file: object ``name``'s (``pooled`` empty), or pool file ``pooled``."""

    name: str
    pooled: str = ""


Command = Recycle | Remove


class SegmentPool:
    def __init__(self, limit: int, *, per_class: int = 2, min_bytes: int = POOL_MIN_BYTES) -> None:
        self.limit, self.per_class, self.min_bytes = limit, per_class, min_bytes
        self.bytes = 0
        self._pooled: dict[str, int] = {}  # pool file -> size
        self._per_class: dict[int, int] = {}
        self.recycled = 0  # files pooled since the start
        self.claimed = 0  # files claimed by writers since the start

    def __len__(self) -> int:
        """Files in the pool now."""
        return len(self._pooled)

    def __repr__(self) -> str:
        return f"<SegmentPool {len(self._pooled)} files, {self.bytes}/{self.limit} bytes>"

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, Offered):
            return self._offered(event)
        if isinstance(event, Claimed):
            self._drop(event.pooled)
            self.claimed += 1
            return []
        removed: list[Command] = [Remove("", pooled) for pooled in self._pooled]
        for pooled in list(self._pooled):
            self._drop(pooled)
        return removed

    def _offered(self, event: Offered) -> list[Command]:
        cls = size_class(event.size)
        if (
            event.size < self.min_bytes
            or self._per_class.get(cls, 0) >= self.per_class
            or self.bytes + event.size > self.limit
        ):
            return [Remove(event.name)]
        pooled = pool_name(event.size, event.name)
        self._pooled[pooled] = event.size
        self._per_class[cls] = self._per_class.get(cls, 0) + 1
        self.bytes += event.size
        self.recycled += 1
        return [Recycle(event.name, pooled)]

    def _drop(self, pooled: str) -> None:
        size = self._pooled.pop(pooled, None)
        if size is None:
            return  # removed meanwhile (a Shrink raced the writer's claim)
        cls = size_class(size)
        self._per_class[cls] -= 1
        if not self._per_class[cls]:
            del self._per_class[cls]
        self.bytes -= size
