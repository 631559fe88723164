"""The head's history of task events is bounded: past TASK_EVENT_HISTORY events the oldest
batches go, the newest stay, and every batch still reaches the event subscribers.

``ObserveHub`` is the head's observability logic; it is fed batches as the head's links
hand them over, with stand-ins for the links (no process, no socket).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from actorgrid._node.hub import ObserveHub
from actorgrid._protocol.ids import ObjectId
from actorgrid._protocol.messages import Event
from actorgrid._protocol.observe import ID_BYTES, TaskEvents, pack_task_events
from actorgrid._runtime.headlink import TASK_EVENT_HISTORY

BATCH = 1000


class _Link:
    """What the hub uses of a link: who is at the other end, and send."""

    remote_hello = None

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def _batch(first: int) -> TaskEvents:
    records = [
        ("task_finished", float(i), ObjectId(i.to_bytes(ID_BYTES, "big")), "f", None, "", None)
        for i in range(first, first + BATCH)
    ]
    return pack_task_events(records, node_id=None, hostname="h", pid=1)


def test_the_heads_task_event_history_keeps_the_newest_and_forwards_every_batch() -> None:
    subscriber = _Link()
    hub = ObserveHub(deque[Event](), {subscriber}, lambda: (), lambda *a: None)  # type: ignore[arg-type]
    batches = 3 * TASK_EVENT_HISTORY // BATCH
    for b in range(batches):
        hub.handlers()[TaskEvents](_Link(), _batch(b * BATCH))  # type: ignore[arg-type]
    history = hub.history()
    assert TASK_EVENT_HISTORY - BATCH <= len(history) <= TASK_EVENT_HISTORY
    assert history[-1].time == batches * BATCH - 1  # the newest is kept
    assert [e.time for e in history] == sorted(e.time for e in history)
    assert len(subscriber.sent) == batches  # each batch forwarded as it came
