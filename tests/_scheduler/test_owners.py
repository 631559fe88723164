"""The owner table: which process's departure takes which actors with it."""

from __future__ import annotations

from actorgrid._protocol.ids import ActorId
from actorgrid._scheduler.owners import OwnedActor, OwnerTable

A, B, C = ActorId(b"a" * 16), ActorId(b"b" * 16), ActorId(b"c" * 16)


def test_an_owner_that_goes_hands_back_its_actors_and_only_its() -> None:
    table = OwnerTable()
    table.own("driver", A, "w1")
    table.own("driver", B, "w2")
    table.own("worker", C, "w1")
    gone = table.owner_gone("driver")
    assert sorted(gone, key=lambda e: e.actor_id) == [
        OwnedActor(A, "w1", "driver"),
        OwnedActor(B, "w2", "driver"),
    ]
    assert table.owner_gone("driver") == []
    assert table.get(C) == OwnedActor(C, "w1", "worker")
    assert len(table) == 1


def test_ended_actors_are_not_killed_again() -> None:
    table = OwnerTable()
    table.own("driver", A, "w1")
    table.own("driver", B, "w1")
    table.ended(A)
    table.address_gone("w1")
    assert table.owner_gone("driver") == []
    assert len(table) == 0


def test_a_restarted_actor_keeps_its_entry_when_news_of_its_old_incarnation_comes() -> None:
    table = OwnerTable()
    table.own("driver", A, "w1")
    table.own("driver", A, "w2")  # restarted on w2 before w1's departure was handled
    table.address_gone("w1")
    table.ended(A, "w1")
    assert table.owner_gone("driver") == [OwnedActor(A, "w2", "driver")]


def test_restarted_by_a_new_owner_moves_to_it() -> None:
    table = OwnerTable()
    table.own("old", A, "w1")
    table.own("new", A, "w2")
    assert table.owner_gone("old") == []
    assert table.owner_gone("new") == [OwnedActor(A, "w2", "new")]
    assert repr(table) == "<OwnerTable actors=0 owners=0>"
