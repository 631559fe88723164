"""The detached-actor table: which actors the head creates again when their worker goes."""

from __future__ import annotations

import attrs

from actorgrid._protocol.ids import ActorId, ObjectId
from actorgrid._protocol.messages import ActorInfo, CreateActor, Payload
from actorgrid._scheduler.detached import DetachedTable


def _create(n: int, address: str, max_restarts: int) -> CreateActor:
    info = ActorInfo(
        ActorId(bytes([n]) * 16), address, "class", "Keeper", f"k{n}", None, (), max_restarts
    )
    return CreateActor(ObjectId(b"t" * 16), info, b"c", b"code", Payload(b""), 0)


def test_a_gone_worker_hands_back_the_actors_with_restarts_left() -> None:
    table = DetachedTable()
    restartable, spent, elsewhere = _create(1, "w1", 1), _create(2, "w1", 0), _create(3, "w2", -1)
    for create in (restartable, spent, elsewhere):
        table.adopt(create)
    assert table.address_gone("w1") == [restartable]
    assert table.address_gone("w1") == []
    assert len(table) == 1


def test_news_of_an_old_incarnation_leaves_the_restarted_one() -> None:
    table = DetachedTable()
    first = _create(1, "w1", 2)
    table.adopt(first)
    moved = attrs.evolve(first, actor=attrs.evolve(first.actor, address="w2"))
    table.adopt(moved)
    table.ended(first.actor.actor_id, "w1")
    assert table.address_gone("w2") == [moved]
    table.adopt(moved)
    table.ended(moved.actor.actor_id)  # killed: gone for good
    assert table.address_gone("w2") == []
    assert repr(table) == "<DetachedTable actors=0>"
