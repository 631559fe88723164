"""The positional form of the hottest messages (``hotcodec.py``): smaller than the map form, and
malformed positional envelopes only raise ProtocolError. Round trips of every message class,
these included, are ``test_codec.py``'s."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorgrid._exceptions import ProtocolError
from actorgrid._protocol import codec
from actorgrid._protocol.messages import (
    CallActor,
    Credit,
    Deliver,
    Payload,
    TaskResult,
    TaskResults,
)

ENV_LEN = struct.Struct("!I")
TAGS = range(1, 11)  # hotcodec's tags

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**16)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


def body(envelope: Any, tail: bytes = b"") -> bytes:
    packed = msgpack.packb(envelope, use_bin_type=True)
    return ENV_LEN.pack(len(packed)) + packed + tail


@pytest.mark.parametrize(
    "message",
    [
        CallActor(b"t" * 16, b"a" * 16, "ping", Payload(b"args")),
        TaskResult(b"t" * 16, True, Payload(b"value", (memoryview(b"buf"),))),
        Deliver(0, b"a" * 16, Payload(b"m")),
        Credit(b"a" * 16, 5),
        TaskResults(
            (
                TaskResult(b"t" * 16, True, Payload(b"one", (memoryview(b"b1"),))),
                TaskResult(b"u" * 16, False, Payload(b"two")),
                TaskResult(
                    b"v" * 16, True, Payload(b"three", (memoryview(b"b3"), memoryview(b"")))
                ),
            )
        ),
    ],
    ids=lambda m: type(m).__name__,
)
def test_a_hot_message_is_a_positional_envelope(message: Any) -> None:
    parts = codec.encode(message)
    envelope = msgpack.unpackb(bytes(parts[1]), raw=False)
    assert isinstance(envelope, list)  # not the {"t": ...} map of every other message
    assert codec.decode(b"".join(bytes(p) for p in parts)) == message


@pytest.mark.parametrize(
    "envelope",
    [
        [],
        [0],
        [99, b"x"],
        [True, b"t", b"a", "m", [b"", []], ""],  # a bool is not a tag
        [1, b"t", b"a", "m", [b"", []]],  # a field short
        [1, b"t", b"a", "m", [b"", []], "", "extra"],
        [1, "text id", b"a", "m", [b"", []], ""],
        [1, b"t", b"a", b"method", [b"", []], ""],
        [2, b"t", 1, [b"", []]],  # ok is a bool, not an int
        [2, b"t", True, [b"", [5]]],  # a buffer past the end
        [2, b"t", True, ["text", []]],
        [2, b"t", True, [b"", [1], b"extra"]],
        [3, b"t", b"f", None, [b"", []], "1", [], ""],
        [3, b"t", b"f", None, [b"", []], 1.0, [["CPU"]], ""],
        [6, b"a", 10**3 * 1.5],
        [8, [b"t", True]],  # results come in [id, ok, payload] triples
        [8, [b"t", 1, [b"", []]]],
        [8, [b"t", True, [b"", [4]]]],
        [8, b"t"],
        [9, [[b"t", b"a", "m", [b"", []]]]],  # a call a field short
        [9, [[b"t", b"a", b"m", [b"", []], ""]]],
        [9, b"calls"],
        [10, [[b"t", b"f", None, [b"", []], 1.0, []]]],
        [10, [[b"t", b"f", None, [b"", [3]], 1.0, [], ""]]],
    ],
    ids=repr,
)
def test_malformed_positional_envelopes_raise_protocol_error(envelope: Any) -> None:
    with pytest.raises(ProtocolError):
        codec.decode(body(envelope))


def test_trailing_bytes_after_a_positional_message_raise_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="trailing bytes"):
        codec.decode(body([6, b"a" * 16, 1], b"x"))


@settings(max_examples=80, deadline=None)
@given(
    tag=st.sampled_from(TAGS),
    fields=st.lists(_values, max_size=10),
    tail=st.binary(max_size=8),
)
def test_random_positional_fields_only_raise_protocol_error(
    tag: int, fields: list[Any], tail: bytes
) -> None:
    try:
        codec.decode(body([tag, *fields], tail))
    except ProtocolError:
        pass
