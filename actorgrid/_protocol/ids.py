"""Distinct id types. Ids are 16 bytes: an 8-byte random process prefix and a counter."""

from __future__ import annotations

import itertools
import os
from typing import NewType

ActorId = NewType("ActorId", bytes)
ObjectId = NewType("ObjectId", bytes)
WorkerId = NewType("WorkerId", bytes)
NodeId = NewType("NodeId", bytes)

_prefix = os.urandom(8)
_counter = itertools.count(1)


def _reseed() -> None:
    # A forked child must not reuse its parent's id space.
    global _prefix, _counter
    _prefix, _counter = os.urandom(8), itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def seed(prefix: bytes) -> tuple[bytes, itertools.count[int]]:
    """Make ids from ``prefix`` (8 bytes) and a fresh counter; returns what to ``restore``.

    For a deterministic simulation, whose many runtimes share this process's id space."""
    global _prefix, _counter
    saved = (_prefix, _counter)
    _prefix, _counter = prefix, itertools.count(1)
    return saved


def restore(saved: tuple[bytes, itertools.count[int]]) -> None:
    global _prefix, _counter
    _prefix, _counter = saved


def _next() -> bytes:
    return _prefix + next(_counter).to_bytes(8, "big")


def new_actor_id() -> ActorId:
    return ActorId(_next())


def new_object_id() -> ObjectId:
    return ObjectId(_next())


def new_worker_id() -> WorkerId:
    return WorkerId(os.urandom(16))


def new_node_id() -> NodeId:
    return NodeId(os.urandom(16))


def short(any_id: bytes) -> str:
    """A short printable form of an id for reprs and logs."""
    return any_id.hex()[:6] + any_id.hex()[-6:]
