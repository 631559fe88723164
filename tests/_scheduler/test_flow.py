"""Credit-based mailbox flow control (actorgrid._scheduler.flow): the pure decisions, and a
model of links, mailboxes and their overflows driven by Hypothesis."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorgrid._scheduler.flow import DEFAULT_WINDOW, ReceiveCredits, SendCredits


def test_a_sender_takes_at_most_its_window_then_waits_for_a_grant() -> None:
    credits: SendCredits[str] = SendCredits(window=3)
    assert [credits.try_take("a") for _ in range(4)] == [True, True, True, False]
    assert credits.try_take("b")  # another actor's stream has its own window
    credits.grant("a", 1)
    assert credits.try_take("a")
    assert not credits.try_take("a")


def test_credits_held_back_are_taken_once() -> None:
    receive: ReceiveCredits[str] = ReceiveCredits(window=16)  # a batch of 4
    assert [receive.taken("a") for _ in range(3)] == [0, 0, 0]
    assert receive.take("a") == 3 and receive.take("a") == 0 and receive.take("b") == 0
    assert len(receive) == 0
    assert [receive.taken("a") for _ in range(4)] == [0, 0, 0, 4]  # a batch again from zero


def test_an_idle_link_holds_no_state() -> None:
    send: SendCredits[str] = SendCredits(window=8)
    receive: ReceiveCredits[str] = ReceiveCredits(window=8)
    for _ in range(8):
        assert send.try_take("a")
    granted = sum(receive.taken("a") for _ in range(8))
    assert granted == 8
    send.grant("a", granted)
    assert len(send) == 0
    assert len(receive) == 0


def test_credits_go_back_in_quarter_window_batches() -> None:
    receive: ReceiveCredits[str] = ReceiveCredits(window=DEFAULT_WINDOW)
    batch = DEFAULT_WINDOW // 4
    grants = [receive.taken("a") for _ in range(batch)]
    assert grants == [0] * (batch - 1) + [batch]
    assert receive.held("a") == 0


def test_a_window_below_one_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SendCredits(window=0)


class _Model:
    """Senders, each on its own link to one receiving worker, sending to its actors.

    Links are FIFO both ways. The receiver never refuses to read: a message for a full mailbox
    goes to that actor's overflow, which moves into the mailbox as the actor consumes.
    """

    def __init__(self, senders: int, actors: int, window: int, capacity: int) -> None:
        self.window = window
        self.capacity = capacity
        self.send = [SendCredits[int](window) for _ in range(senders)]
        self.receive = [ReceiveCredits[int](window) for _ in range(senders)]
        self.data: list[deque[tuple[int, int, int]]] = [deque() for _ in range(senders)]
        self.grants: list[deque[tuple[int, int]]] = [deque() for _ in range(senders)]
        self.mailbox: list[deque[tuple[int, int]]] = [deque() for _ in range(actors)]
        self.overflow: list[deque[tuple[int, int]]] = [deque() for _ in range(actors)]
        self.next_seq = [[0] * actors for _ in range(senders)]
        self.consumed: list[list[tuple[int, int]]] = [[] for _ in range(actors)]

    def try_send(self, s: int, a: int) -> bool:
        if not self.send[s].try_take(a):
            return False
        self.data[s].append((a, s, self.next_seq[s][a]))
        self.next_seq[s][a] += 1
        assert self.send[s].outstanding(a) <= self.window
        return True

    def _taken(self, s: int, a: int) -> None:
        n = self.receive[s].taken(a)
        if n:
            self.grants[s].append((a, n))

    def deliver_data(self, s: int) -> None:
        if not self.data[s]:
            return
        a, sender, seq = self.data[s].popleft()
        if self.overflow[a] or len(self.mailbox[a]) >= self.capacity:
            self.overflow[a].append((sender, seq))
        else:
            self.mailbox[a].append((sender, seq))
            self._taken(sender, a)

    def report(self, s: int, a: int) -> None:
        # The worker's report of what its agents took (confirms.py) grants what it held back,
        # on the same link as the grants.
        n = self.receive[s].take(a)
        if n:
            self.grants[s].append((a, n))

    def deliver_grant(self, s: int) -> None:
        if self.grants[s]:
            a, n = self.grants[s].popleft()
            self.send[s].grant(a, n)

    def consume(self, a: int) -> None:
        if self.mailbox[a]:
            self.consumed[a].append(self.mailbox[a].popleft())
        while self.overflow[a] and len(self.mailbox[a]) < self.capacity:
            sender, seq = self.overflow[a].popleft()
            self.mailbox[a].append((sender, seq))
            self._taken(sender, a)

    def check_bounds(self) -> None:
        for a, overflow in enumerate(self.overflow):
            assert len(overflow) <= self.window * len(self.send), a

    def drain(self) -> None:
        """Everything in flight arrives and every actor consumes all it has."""
        while any(self.data) or any(self.grants) or any(self.mailbox):
            for s in range(len(self.send)):
                while self.data[s]:
                    self.deliver_data(s)
            for a in range(len(self.mailbox)):
                while self.mailbox[a]:
                    self.consume(a)
            for s in range(len(self.send)):
                while self.grants[s]:
                    self.deliver_grant(s)


_steps = st.lists(
    st.tuples(st.sampled_from(["send", "data", "grant", "consume", "report"]), st.integers(0, 5)),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(
    steps=_steps,
    senders=st.integers(1, 3),
    actors=st.integers(1, 3),
    window=st.integers(1, 9),
    capacity=st.integers(1, 4),
)
def test_no_message_is_lost_duplicated_or_reordered_and_drained_senders_are_unblocked(
    steps: list[tuple[str, int]], senders: int, actors: int, window: int, capacity: int
) -> None:
    model = _Model(senders, actors, window, capacity)
    for kind, i in steps:
        if kind == "send":
            model.try_send(i % senders, (i // senders) % actors)
        elif kind == "data":
            model.deliver_data(i % senders)
        elif kind == "grant":
            model.deliver_grant(i % senders)
        elif kind == "report":
            model.report(i % senders, (i // senders) % actors)
        else:
            model.consume(i % actors)
        model.check_bounds()
    model.drain()
    for a in range(actors):
        for s in range(senders):
            got = [seq for sender, seq in model.consumed[a] if sender == s]
            # every message sent arrived once, in the order sent
            assert got == list(range(model.next_seq[s][a]))
    for s in range(senders):
        for a in range(actors):
            # a consumer that drained leaves every sender able to send again
            assert model.send[s].outstanding(a) < max(1, window // 4)
            assert model.try_send(s, a)
    # Once the worker reported on every stream, no entry is left at either end of a link.
    model.drain()
    for s in range(senders):
        for a in range(actors):
            model.report(s, a)
    model.drain()
    assert not any(len(send) for send in model.send)
    assert not any(len(receive) for receive in model.receive)
