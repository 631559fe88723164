"""TaskEvents: task events in columns survive the wire and read back as the same events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorgrid._protocol.codec import decode, encode
from actorgrid._protocol.ids import ActorId, NodeId, ObjectId, WorkerId
from actorgrid._protocol.observe import (
    ID_BYTES,
    TASK_EVENT_KINDS,
    TaskEventRecord,
    TaskEvents,
    expand_task_events,
    pack_task_events,
)

_ids = st.binary(min_size=ID_BYTES, max_size=ID_BYTES).filter(any)
_records = st.tuples(
    st.sampled_from(TASK_EVENT_KINDS),
    st.floats(min_value=0, max_value=2e9, allow_nan=False),
    st.none() | _ids.map(ObjectId),
    st.sampled_from(["", "square", "Counter.incr", "ünïcode"]),
    st.none() | st.sampled_from([WorkerId(b"w" * 16), WorkerId(b"v" * 16)]),
    st.sampled_from(["", "ValueError: boom"]),
    st.none() | _ids.map(ActorId),
)


def _wire(batch: TaskEvents) -> TaskEvents:
    decoded = decode(b"".join(bytes(part) for part in encode(batch)))
    assert isinstance(decoded, TaskEvents)
    return decoded


@given(st.lists(_records, max_size=60), st.integers(0, 2**40), st.integers(0, 50))
def test_events_read_back_as_recorded(
    records: list[TaskEventRecord], sent: int, dropped: int
) -> None:
    node = NodeId(b"n" * 16)
    batch = _wire(
        pack_task_events(
            records, node_id=node, hostname="vm-2", pid=42, sent_bytes=sent, dropped=dropped
        )
    )
    assert len(batch) == len(records)
    assert (batch.sent_bytes, batch.dropped) == (sent, dropped)
    events = expand_task_events(batch)
    for event, (kind, when, task_id, name, worker_id, text, actor_id) in zip(
        events, records, strict=True
    ):
        assert (event.kind, event.time, event.task_id, event.name) == (kind, when, task_id, name)
        assert (event.worker_id, event.error, event.actor_id) == (worker_id, text, actor_id)
        assert (event.node_id, event.hostname, event.pid) == (node, "vm-2", 42)
        if kind == "task_retried" and task_id is not None:
            assert event.detail == f"task {task_id.hex()[:8]}: {text}"


def test_many_events_cost_a_few_fields_on_the_wire() -> None:
    records: list[TaskEventRecord] = [
        ("task_finished", 1.0 + i, ObjectId(i.to_bytes(16, "big")), "noop", None, "", None)
        for i in range(1, 2001)
    ]
    batch = pack_task_events(records, node_id=None, hostname="h", pid=None)
    assert batch.strings == ("", "noop")  # one name, however many events
    body = b"".join(bytes(part) for part in encode(batch))
    assert len(body) < 2000 * (1 + 8 + ID_BYTES + 2 + 2) + 200


def test_columns_that_disagree_are_refused() -> None:
    batch = pack_task_events(
        [("task_started", 1.0, None, "f", None, "", None)], node_id=None, hostname="", pid=None
    )
    broken = TaskEvents(
        None, "", None, batch.kinds * 2, batch.times, batch.task_ids, batch.names,
        batch.workers, batch.strings, batch.worker_ids,
    )  # fmt: skip
    with pytest.raises(ValueError, match="columns"):
        expand_task_events(broken)
