"""The stream state of remote generators (``_scheduler/streams.py``), with no network: a
producer and a consumer joined by two in-order queues (items one way, acks the other),
driven by hypothesis in any interleaving."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actorgrid._scheduler.streams import (
    DEFAULT_GENERATOR_BACKPRESSURE,
    ConsumerStream,
    ProducerWindow,
    StreamGapError,
    check_backpressure,
)


class StreamMachine(RuleBasedStateMachine):
    """Items travel producer -> consumer, acks consumer -> producer, each link in order."""

    @initialize(window=st.integers(min_value=1, max_value=20))
    def start(self, window: int) -> None:
        self.window = window
        self.producer = ProducerWindow(window)
        self.consumer = ConsumerStream(window)
        self.items: deque[int] = deque()  # item indexes on the wire
        self.acks: deque[int] = deque()  # ack counts on the wire
        self.taken: list[int] = []

    @precondition(lambda self: self.producer.may_produce())
    @rule()
    def produce(self) -> None:
        self.items.append(self.producer.produce())

    @precondition(lambda self: bool(self.items))
    @rule()
    def deliver_item(self) -> None:
        index = self.items.popleft()
        assert self.consumer.on_item(index)

    @precondition(lambda self: self.consumer.available > 0)
    @rule()
    def take(self) -> None:
        self.taken.append(len(self.taken))
        ack = self.consumer.take()
        if ack is not None:
            self.acks.append(ack)

    @precondition(lambda self: bool(self.acks))
    @rule()
    def deliver_ack(self) -> None:
        self.producer.on_ack(self.acks.popleft())

    @invariant()
    def never_more_than_the_window_ahead(self) -> None:
        assert self.producer.produced - self.consumer.consumed <= self.window
        assert self.producer.acked <= self.consumer.consumed

    @invariant()
    def never_stuck(self) -> None:
        # Something can always happen: produce, deliver, take or deliver an ack.
        assert self.producer.may_produce() or self.items or self.consumer.available or self.acks

    @invariant()
    def taken_in_order(self) -> None:
        assert self.consumer.consumed == len(self.taken) <= self.consumer.received


TestStreamMachine = StreamMachine.TestCase
TestStreamMachine.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)


@given(st.integers(min_value=1, max_value=50), st.lists(st.integers(min_value=-5, max_value=80)))
def test_acks_only_move_forward_and_never_past_what_was_produced(
    window: int, acks: list[int]
) -> None:
    producer = ProducerWindow(window)
    for _ in range(window):
        producer.produce()
    best = 0
    for ack in acks:
        producer.on_ack(ack)
        best = max(best, min(ack, window))
        assert producer.acked == best
        assert 0 <= producer.ahead <= window


def test_duplicates_are_dropped_and_a_gap_is_an_error() -> None:
    consumer = ConsumerStream(4)
    assert consumer.on_item(0) and consumer.on_item(1)
    assert not consumer.on_item(0)  # a duplicate (a rerun's first items)
    with pytest.raises(StreamGapError, match="item 3 arrived while item 2 was expected"):
        consumer.on_item(3)


def test_producing_past_the_window_is_refused() -> None:
    producer = ProducerWindow(2)
    producer.produce()
    producer.produce()
    assert not producer.may_produce()
    with pytest.raises(RuntimeError, match="past the window"):
        producer.produce()
    assert producer.on_ack(1)  # room again: True once
    assert not producer.on_ack(1)


def test_the_option_teaches() -> None:
    assert check_backpressure(0) == DEFAULT_GENERATOR_BACKPRESSURE
    assert check_backpressure(3) == 3
    for bad in (-1, True, 1.5, "8"):
        with pytest.raises(ValueError, match="generator_backpressure must be an int >= 1"):
            check_backpressure(bad)
