"""Credits and order of one remote generator's stream: pure state, no I/O, no clock.

A remote generator's worker sends each value as it is produced (StreamItem ``index``); its
consumer takes them in order and reports how many it took (StreamAck ``consumed``), every
``ack_every`` items. Two objects, one per side:

- ``ProducerWindow`` (worker): the generator is resumed only while fewer than ``window``
  items are produced and not yet acknowledged.
- ``ConsumerStream`` (caller): which arriving items are new, how many were taken, and when
  to acknowledge.

Invariants:

- the producer is never more than ``window`` items ahead of what the consumer took:
  ``produced - consumed <= produced - acked <= window`` (``acked <= consumed`` always, since
  an ack only ever reports items already taken);
- no deadlock: once the consumer has taken everything it received, at least
  ``min(window, received - acked)`` items are unacknowledged, and ``ack_every <= window``, so
  an ack is due and the producer gets room again;
- items are kept in index order, each once: an index below ``received`` is a duplicate
  (dropped), one above it is a gap, which an ordered link never makes (``StreamGapError``).

Costs: O(1) per item and per ack.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_GENERATOR_BACKPRESSURE",
    "ConsumerStream",
    "ProducerWindow",
    "StreamGapError",
    "check_backpressure",
]

# How many items a remote generator may run ahead of its consumer by default. Ray's
# ``_generator_backpressure_num_objects`` is off (-1) by default; a bound is the safer default
# for a producer that can outrun its consumer, and 64 keeps a fast stream flowing (an ack
# per 32 items) while holding at most 64 values in the consumer's process.
DEFAULT_GENERATOR_BACKPRESSURE = 64


def check_backpressure(value: object) -> int:
    """The option's value as a window; 0 means the default. Raises ValueError, teaching."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(
            "generator_backpressure must be an int >= 1: how many items a remote generator "
            f"may run ahead of its consumer (0: the default, {DEFAULT_GENERATOR_BACKPRESSURE}), "
            f"not {value!r}"
        )
    return value or DEFAULT_GENERATOR_BACKPRESSURE


class StreamGapError(ValueError):
    """An item arrived ahead of one not yet received: the link lost or reordered one."""


class ProducerWindow:
    """The producer's side: may the generator be resumed for one more item?"""

    __slots__ = ("acked", "produced", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"a stream window must be at least 1, not {window}")
        self.window = window
        self.produced = 0  # items sent so far
        self.acked = 0  # items the consumer reported taken

    def __repr__(self) -> str:
        return f"<ProducerWindow produced={self.produced} acked={self.acked} of {self.window}>"

    @property
    def ahead(self) -> int:
        """Items produced and not yet acknowledged."""
        return self.produced - self.acked

    def may_produce(self) -> bool:
        return self.produced - self.acked < self.window

    def produce(self) -> int:
        """One more item goes out: its index. Only when ``may_produce()``."""
        if not self.may_produce():
            raise RuntimeError(f"{self!r}: produced past the window")
        index = self.produced
        self.produced += 1
        return index

    def on_ack(self, consumed: int) -> bool:
        """The consumer took ``consumed`` items in all. True if the producer may go on now
        and could not before. Stale or out-of-range acks change nothing harmful: acks only
        move forward, and never past what was produced."""
        was_blocked = not self.may_produce()
        consumed = min(consumed, self.produced)
        if consumed > self.acked:
            self.acked = consumed
        return was_blocked and self.may_produce()


class ConsumerStream:
    """The consumer's side: order of arriving items, items taken, acks due."""

    __slots__ = ("ack_every", "acked", "consumed", "received", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"a stream window must be at least 1, not {window}")
        self.window = window
        self.ack_every = max(1, window // 2)
        self.received = 0  # items kept: the next new index
        self.consumed = 0  # items taken by the consumer
        self.acked = 0  # the last ``consumed`` reported to the producer

    def __repr__(self) -> str:
        return (
            f"<ConsumerStream received={self.received} consumed={self.consumed} acked={self.acked}>"
        )

    @property
    def available(self) -> int:
        """Items received and not yet taken."""
        return self.received - self.consumed

    def on_item(self, index: int) -> bool:
        """Item ``index`` arrived: True to keep it (the next in order), False for a
        duplicate. Raises StreamGapError for a gap."""
        if index < self.received:
            return False
        if index > self.received:
            raise StreamGapError(
                f"stream item {index} arrived while item {self.received} was expected: the "
                "link lost or reordered a message (a bug in actorgrid: please report it)"
            )
        self.received += 1
        return True

    def take(self) -> int | None:
        """The consumer took the next item (only when ``available``): the ``consumed``
        count to acknowledge now, or None when no ack is due yet."""
        if self.consumed >= self.received:
            raise RuntimeError(f"{self!r}: took an item that was not received")
        self.consumed += 1
        if self.consumed - self.acked >= self.ack_every:
            self.acked = self.consumed
            return self.consumed
        return None
