"""Messages of the node object stores (``_runtime/segments.py``, ``_runtime/objects.py``).

A large value stays in the store of the node that made it; its locator travels instead. A
reader on another node pulls it straight from a process of the holding node, in chunks, and
caches it in its own node's store; the owner frees it there when its last reference goes.
"""

import attrs

from .records import Payload


@attrs.frozen
class PullObject:
    """Sent by a process that reads a value held in another node's store (``ag.get``, a
    task's ref argument) to the process there that wrote it: send ``length`` bytes of the
    object's file from ``offset``."""

    rid: int
    name: str
    offset: int
    length: int


@attrs.frozen
class ObjectChunk:
    """Reply to PullObject: ``data`` holds the bytes as one out-of-band buffer, and ``total``
    is the size of the whole file; ``ok`` False: ``data`` is the boxed error (object lost)."""

    rid: int
    ok: bool
    total: int
    data: Payload


@attrs.frozen
class FreeObjects:
    """Sent by the owner of values held in a store, when their last references went, to the
    process that wrote them; and by that process to each process of another node that pulled
    a copy of them, which frees its node's cached copy. No reply."""

    names: tuple[str, ...]
