"""CreationBatch and CreateAgents (``_protocol/creations.py``): the named agents' creations of
one batch, gathered per worker link and sent through the codec, come back out of each
CreateAgents as the very SubmitTasks that went in, in the order they were made, per link;
with code only where it was, and runs split where a batch must (kinds, count, bytes)."""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorgrid._exceptions import ProtocolError
from actorgrid._protocol import codec
from actorgrid._protocol.creations import MAX_KINDS, CreateAgents, CreationBatch
from actorgrid._protocol.ids import ActorId, ObjectId
from actorgrid._protocol.messages import ActorInfo, Payload, SubmitTask

_ids = itertools.count(1)


def _id() -> bytes:
    return next(_ids).to_bytes(16, "big")


def creation(
    kind: int, link: int, code: bool, args: bytes = b"args", address: str = "127.0.0.1:1"
) -> SubmitTask:
    """The creation of a new named agent of ``kind`` (one of a few functions and labels)."""
    actor = ActorInfo(
        ActorId(_id()),
        f"{address}{link}",
        "coroutine",
        f"agent{kind % 3}",
        f"name-{next(_ids)}",
        "default" if kind % 2 else "other",
        mailbox_size=kind % 4,
    )
    function_id = bytes([kind % 3]) * 16
    return SubmitTask(
        ObjectId(_id()),
        function_id,
        b"code-" + function_id if code else None,
        Payload(args),
        0.0,
        actor,
        (),
        "" if kind < 4 else "root",
    )


def through_the_wire(
    batch: CreationBatch,
) -> dict[object, list[SubmitTask]]:
    """What each link's worker runs: every message encoded and decoded, CreateAgents opened."""
    out: dict[object, list[SubmitTask]] = {}
    for link, msg in batch.messages():
        decoded = codec.decode(b"".join(bytes(part) for part in codec.encode(msg)))
        got = out.setdefault(link, [])
        if isinstance(decoded, CreateAgents):
            got.extend(decoded.submits())
        else:
            assert isinstance(decoded, SubmitTask)
            got.append(decoded)
    return out


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1)), min_size=1, max_size=60),
    max_bytes=st.sampled_from([200, 2000, 1 << 20]),
)
def test_each_link_gets_its_creations_back_in_order_with_code_only_where_it_was(
    plan: list[tuple[int, int]], max_bytes: int
) -> None:
    batch = CreationBatch(max_bytes)
    sent: dict[object, list[SubmitTask]] = {}
    shipped: set[tuple[int, bytes]] = set()  # code goes with a function's first on a link
    for kind, link in plan:
        function_id = bytes([kind % 3]) * 16
        msg = creation(kind, link, (link, function_id) not in shipped)
        shipped.add((link, function_id))
        batch.add(link, msg)
        sent.setdefault(link, []).append(msg)
    assert len(batch) == len(plan)
    assert through_the_wire(batch) == sent
    assert len(batch) == 0  # messages() empties it


def test_a_batch_past_its_kinds_or_bytes_is_split_into_runs_that_keep_the_order() -> None:
    batch = CreationBatch()
    sent = [creation(0, 0, False) for _ in range(3)]
    # MAX_KINDS + 1 kinds (one label each), then arguments past max_bytes.
    sent.extend(_relabel(creation(0, 0, False), f"k{i}") for i in range(MAX_KINDS + 1))
    sent.append(creation(0, 0, False, args=b"x" * 5000))
    sent.extend(creation(0, 0, False) for _ in range(2))
    for msg in sent:
        batch.add("link", msg)
    messages = batch.messages()
    assert len(messages) >= 2  # the kinds overflowed one CreateAgents
    again = CreationBatch()
    for msg in sent:
        again.add("link", msg)
    assert through_the_wire(again) == {"link": sent}


def _relabel(msg: SubmitTask, label: str) -> SubmitTask:
    assert msg.actor is not None
    return attrs.evolve(msg, actor=attrs.evolve(msg.actor, label=label))


def test_a_lone_creation_goes_as_its_own_submit_task() -> None:
    batch = CreationBatch()
    msg = creation(1, 0, True)
    batch.add(0, msg)
    assert batch.messages() == [(0, msg)]


def test_fields_that_disagree_are_a_protocol_error_when_opened() -> None:
    a, b = creation(0, 0, False), creation(0, 0, False)
    assert a.actor is not None and b.actor is not None
    ids = a.actor.actor_id + b.actor.actor_id
    bad = CreateAgents((a,), b"\x00\x01", a.task_id + b.task_id, ids, ("x", "y"), (a.args, b.args))
    with pytest.raises(ProtocolError, match="kind indexes"):
        list(bad.submits())
    short = CreateAgents((a,), b"\x00", a.task_id, a.actor.actor_id[:8], ("x",), (a.args,))
    with pytest.raises(ProtocolError):
        list(short.submits())
