"""Messages of the node object stores (``_runtime/segments.py``, ``_runtime/objects.py``).

A large value stays in the store of the node that made it; its locator travels instead. A
reader on another node pulls it straight from a process of the holding node, in chunks, and
caches it in its own node's store; the owner frees it there when its last reference goes.
"""

from typing import Any

import msgpack

from .records import Payload
from .wireclass import message


@message
class PullObject:
    """Sent by a process that reads a value held in another node's store (``ag.get``, a
    task's ref argument) to the process there that wrote it: send ``length`` bytes of the
    object's file from ``offset``."""

    rid: int
    name: str
    offset: int
    length: int
    # Sent on a bulk connection of its own (``_transport/bulk.py``): the holder tells frees
    # of the value on its own link to the puller (``Hello.address``), not on this one.
    bulk: bool = False


@message
class ObjectChunk:
    """Reply to PullObject: ``data`` holds the bytes as one out-of-band buffer, and ``total``
    is the size of the whole file; ``ok`` False: ``data`` is the boxed error (object lost)."""

    rid: int
    ok: bool
    total: int
    data: Payload


@message
class FreeObjects:
    """Sent by the owner of values held in a store, when their last references went, to the
    process that wrote them; and by that process to each process of another node that pulled
    a copy of them, which frees its node's cached copy. No reply."""

    names: tuple[str, ...]


@message
class ChunkHead:
    """An ObjectChunk's envelope, read before its bytes (``_transport/bulk.py``): ``length``
    bytes of the object's file follow it in the frame."""

    rid: int
    ok: bool
    total: int
    length: int


def chunk_head(envelope: bytes | memoryview) -> ChunkHead | None:
    """The head of an ObjectChunk whose data is one out-of-band buffer, from its msgpack
    envelope (the codec's form: a map tagged ``"t"``, its Payload as ``[data, [lengths]]``);
    None for any other message."""
    try:
        obj: Any = msgpack.unpackb(envelope, raw=False, use_list=False)
        if not isinstance(obj, dict) or obj.get("t") != "ObjectChunk":
            return None
        data, lengths = obj["data"]
        rid, ok, total = obj["rid"], obj["ok"], obj["total"]
    except Exception:
        return None
    if data != b"" or len(lengths) != 1 or not all(type(v) is int for v in (rid, total)):
        return None
    if type(ok) is not bool or type(lengths[0]) is not int:
        return None
    return ChunkHead(rid, ok, total, lengths[0])
