"""The pure decisions of virtual agents: rendezvous hashing and one worker's activations."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from actorgrid._scheduler.activation import (
    MAX_HOPS,
    Activate,
    ActivationTable,
    Arrived,
    Deactivate,
    Deliver,
    Ended,
    Forward,
    Idle,
    Members,
    owner_of,
)

workers_st = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=8, unique=True)
keys_st = st.text(max_size=12)


@given(workers_st, keys_st, st.randoms())
def test_every_process_picks_the_same_owner_whatever_the_order_of_its_view(workers, key, rnd):
    shuffled = list(workers)
    rnd.shuffle(shuffled)
    assert owner_of(("kind", key), workers) == owner_of(("kind", key), shuffled)
    assert owner_of(("kind", key), workers) in workers


@given(workers_st, st.lists(keys_st, max_size=40), st.data())
def test_a_worker_leaving_moves_only_the_keys_it_held(workers, keys, data):
    gone = data.draw(st.sampled_from(workers))
    left = [w for w in workers if w != gone]
    for key in keys:
        before = owner_of(("k", key), workers)
        after = owner_of(("k", key), left)
        if before != gone:
            assert after == before
        else:
            assert after in left or not left


def test_keys_spread_over_the_workers():
    workers = [f"10.0.0.1:{port}" for port in range(4000, 4004)]
    counts = Counter(owner_of(("player", str(i)), workers) for i in range(4000))
    assert set(counts) == set(workers)
    assert min(counts.values()) > 800  # 1,000 each on average


def test_no_worker_owns_nothing():
    assert owner_of(("k", "1"), []) is None


def _owned_key(me: str, workers: list[str], mine: bool) -> tuple[str, str]:
    for i in range(1000):
        ident = ("k", str(i))
        if (owner_of(ident, workers) == me) == mine:
            return ident
    raise AssertionError("no such key")


def test_the_owner_activates_once_and_then_delivers():
    workers = ["a", "b", "c"]
    table = ActivationTable("a", workers)
    ident = _owned_key("a", workers, True)
    assert table.handle(Arrived(ident, 1)) == [Activate(ident), Deliver(ident, 1)]
    assert table.handle(Arrived(ident, 2)) == [Deliver(ident, 2)]
    assert table.handle(Arrived(ident, 3, hops=1)) == [Deliver(ident, 3)]


def test_a_worker_that_does_not_own_the_key_forwards_until_the_hop_limit():
    workers = ["a", "b", "c"]
    table = ActivationTable("a", workers)
    ident = _owned_key("a", workers, False)
    owner = owner_of(ident, workers)
    assert table.handle(Arrived(ident, 1)) == [Forward(owner, 1, 1)]
    assert table.handle(Arrived(ident, 2, hops=MAX_HOPS)) == [Activate(ident), Deliver(ident, 2)]


def test_messages_during_deactivation_are_held_in_order_and_reactivate():
    table = ActivationTable("a", ["a"])
    ident = ("k", "x")
    table.handle(Arrived(ident, 0))
    assert table.handle(Idle(ident)) == [Deactivate(ident)]
    assert table.handle(Idle(ident)) == []  # already going
    assert table.handle(Arrived(ident, 1)) == []
    assert table.handle(Arrived(ident, 2)) == []
    assert table.handle(Ended(ident)) == [Activate(ident), Deliver(ident, 1), Deliver(ident, 2)]
    assert table.is_active(ident)


def test_an_agent_that_returned_by_itself_comes_back_on_its_next_message():
    table = ActivationTable("a", ["a"])
    ident = ("k", "x")
    table.handle(Arrived(ident, 0))
    assert table.handle(Ended(ident)) == []
    assert not table.is_active(ident)
    assert table.handle(Arrived(ident, 1)) == [Activate(ident), Deliver(ident, 1)]


def test_a_new_owner_takes_over_and_held_messages_follow_the_agent():
    table = ActivationTable("a", ["a"])
    ident = _owned_key("b", ["a", "b"], True)
    table.handle(Arrived(ident, 0))
    assert table.handle(Members(("a", "b"))) == [Deactivate(ident)]
    assert table.handle(Arrived(ident, 1)) == []
    assert table.handle(Ended(ident)) == [Forward("b", 1, 1)]


events_st = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "idle", "ended", "members"]),
        st.sampled_from(["1", "2", "3"]),
        st.sampled_from([("a",), ("a", "b"), ("b",), ("a", "b", "c")]),
    ),
    max_size=60,
)


@given(events_st)
def test_a_worker_never_holds_two_activations_of_a_key_and_loses_no_message(events):
    """Stateful check against a model: a key is activated again only after its activation
    ended; every message is delivered, held or forwarded, exactly once, in arrival order."""
    table = ActivationTable("a", ["a"])
    running: set[tuple[str, str]] = set()  # activations whose task has not ended
    handled: dict[int, bool] = {}
    out: list[int] = []

    def apply(commands):
        for c in commands:
            if isinstance(c, Activate):
                assert c.ident not in running, "a second activation while one runs"
                running.add(c.ident)
            elif isinstance(c, Deliver | Forward):
                assert not handled[c.item], "a message handled twice"
                handled[c.item] = True
                out.append(c.item)

    for what, key, workers in events:
        ident = ("k", key)
        if what == "arrive":
            handled[len(handled)] = False
            apply(table.handle(Arrived(ident, len(handled) - 1)))
        elif what == "idle":
            apply(table.handle(Idle(ident)))
        elif what == "ended" and ident in running:
            running.discard(ident)
            apply(table.handle(Ended(ident)))
        elif what == "members":
            apply(table.handle(Members(workers)))
    # Once every activation has ended (idle, then returned), no message is left behind.
    for _ in range(3):
        for ident in list(running):
            apply(table.handle(Idle(ident)))
            running.discard(ident)
            apply(table.handle(Ended(ident)))
    assert all(handled.values())
    assert _per_key_sorted(events, out)  # messages for one key leave in the order they came


def _per_key_sorted(events, out):
    key_of = {}
    n = 0
    for what, key, _ in events:
        if what == "arrive":
            key_of[n] = key
            n += 1
    for key in "123":
        mine = [m for m in out if key_of[m] == key]
        if mine != sorted(mine):
            return False
    return True


def test_messages_an_activation_never_took_in_go_to_the_next_one_first():
    ident = ("kind", "k")
    table = ActivationTable("w1", ["w1"])
    table.handle(Arrived(ident, 1))
    assert table.handle(Idle(ident)) == [Deactivate(ident)]
    assert table.handle(Arrived(ident, 3)) == []  # held while it deactivates
    assert table.handle(Ended(ident, unconsumed=(2,))) == [
        Activate(ident),
        Deliver(ident, 2),
        Deliver(ident, 3),
    ]
