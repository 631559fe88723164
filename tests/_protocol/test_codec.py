"""The codec: every wire message round-trips, and malformed bodies only raise ProtocolError."""

from __future__ import annotations

import struct
import types
import typing
from typing import Any, NewType

import attrs
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorgrid._exceptions import ProtocolError
from actorgrid._protocol import codec
from actorgrid._protocol.messages import MESSAGE_TYPES, Deliver, Hello, Payload, WorkerInfo

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ENV_LEN = struct.Struct("!I")


# --- strategies built from the attrs fields -----------------------------------------------

_buffers = st.lists(st.binary(max_size=64).map(memoryview), max_size=3).map(tuple)
_payloads = st.builds(Payload, st.binary(max_size=64), _buffers)
_PRIMITIVES: dict[Any, st.SearchStrategy[Any]] = {
    bytes: st.binary(max_size=24),
    str: st.text(max_size=16),
    # The whole msgpack integer range: signed 64-bit below zero, unsigned 64-bit above.
    int: st.integers(min_value=-(2**63), max_value=2**64 - 1),
    float: st.floats(allow_nan=False),
    bool: st.booleans(),
}


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for a field type of a wire message; fails loudly on a type it does not know,
    so a new field type gets a strategy here instead of going untested."""
    if tp is Payload:
        return _payloads
    if tp in _PRIMITIVES:
        return _PRIMITIVES[tp]
    if isinstance(tp, NewType):
        return strategy_for(tp.__supertype__)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in typing.get_args(tp)])
    if tp is type(None):
        return st.none()
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
        return st.tuples(*(strategy_for(arg) for arg in args))
    if attrs.has(tp):
        hints = typing.get_type_hints(tp)
        return st.builds(tp, **{f.name: strategy_for(hints[f.name]) for f in attrs.fields(tp)})
    raise AssertionError(f"no strategy for field type {tp!r}: add one to strategy_for")


messages = st.one_of([strategy_for(cls) for cls in MESSAGE_TYPES])


def normalized(obj: Any) -> Any:
    """A comparable form of a message: Payload buffers become bytes, attrs objects tuples."""
    if isinstance(obj, Payload):
        return ("Payload", obj.data, tuple(bytes(b) for b in obj.buffers))
    if attrs.has(type(obj)):
        return (
            type(obj).__name__,
            *(normalized(getattr(obj, f.name)) for f in attrs.fields(type(obj))),
        )
    if isinstance(obj, tuple):
        return tuple(normalized(x) for x in obj)
    return obj


def body_of(message: Any) -> bytes:
    return b"".join(bytes(part) for part in codec.encode(message))


def envelope_body(envelope: Any, tail: bytes = b"") -> bytes:
    packed = msgpack.packb(envelope, use_bin_type=True)
    return ENV_LEN.pack(len(packed)) + packed + tail


def payloads_of(message: Any) -> list[Payload]:
    """Every Payload in a message, nested messages included (AdoptActor carries a
    CreateActor; RejoinWorker a tuple of them), depth first in field order."""
    found: list[Payload] = []
    for f in attrs.fields(type(message)):
        found.extend(_payloads_in(getattr(message, f.name)))
    return found


def _payloads_in(value: Any) -> list[Payload]:
    # A field may hold a Payload, a nested message, or a tuple of them (RejoinWorker carries
    # the CreateActor of each of its detached actors).
    if isinstance(value, Payload):
        return [value]
    if attrs.has(type(value)):
        return payloads_of(value)
    if isinstance(value, tuple):
        return [p for item in value for p in _payloads_in(item)]
    return []


# --- round trips --------------------------------------------------------------------------


def test_every_message_class_has_a_strategy() -> None:
    # strategy_for resolves every field eagerly, so an unknown field type fails here.
    for cls in MESSAGE_TYPES:
        strategy_for(cls)


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_each_message_class_round_trips(cls: type, data: st.DataObject) -> None:
    message = data.draw(strategy_for(cls))
    decoded = codec.decode(body_of(message))
    assert type(decoded) is cls
    assert normalized(decoded) == normalized(message)


@FAST
@given(message=messages, as_type=st.sampled_from([bytes, bytearray, memoryview]))
def test_round_trip_accepts_any_buffer_type(message: Any, as_type: type) -> None:
    decoded = codec.decode(as_type(body_of(message)))
    assert normalized(decoded) == normalized(message)


@FAST
@given(message=messages)
def test_encode_parts_carry_buffers_unchanged_and_decode_views_them(message: Any) -> None:
    parts = codec.encode(message)
    buffers = [b for p in payloads_of(message) for b in p.buffers]
    # [u32 envelope length][envelope][buffer 0][buffer 1]...: the buffers are not copied.
    assert len(parts) == 2 + len(buffers)
    assert ENV_LEN.unpack(parts[0]) == (len(parts[1]),)
    for part, buf in zip(parts[2:], buffers, strict=True):
        assert part is buf
    body = bytearray(b"".join(bytes(p) for p in parts))
    for payload in payloads_of(codec.decode(body)):
        for view in payload.buffers:
            assert isinstance(view, memoryview)
            assert view.obj is body


def test_payload_buffers_with_a_wider_item_format_round_trip() -> None:
    import array

    numbers = array.array("d", [1.5, -2.0, 3.25])
    message = Deliver(rid=7, actor_id=b"a" * 16, payload=Payload(b"pickle", (memoryview(numbers),)))
    decoded = codec.decode(body_of(message))
    assert isinstance(decoded, Deliver)
    (buf,) = decoded.payload.buffers
    assert bytes(buf) == numbers.tobytes()


@pytest.mark.parametrize(
    "not_a_message",
    [
        object(),
        None,
        b"bytes",
        {"t": "Hello", "kind": "driver", "address": "", "pid": 1},
        Payload(b"data"),
        WorkerInfo(b"w" * 16, b"n" * 16, "127.0.0.1:1", 1, "host", 1.0),
    ],
    ids=["object", "None", "bytes", "dict", "Payload", "WorkerInfo"],
)
def test_encoding_a_non_message_raises_type_error(not_a_message: Any) -> None:
    with pytest.raises(TypeError, match="not a wire message"):
        codec.encode(not_a_message)


# --- malformed input only ever raises ProtocolError ----------------------------------------


def decodes_or_protocol_error(body: bytes) -> None:
    """decode either returns a message or raises ProtocolError; anything else escapes."""
    try:
        codec.decode(body)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_error(body: bytes) -> None:
    decodes_or_protocol_error(body)


@FAST
@given(envelope=st.binary(max_size=100), tail=st.binary(max_size=20))
def test_random_envelope_with_correct_length_only_raises_protocol_error(
    envelope: bytes, tail: bytes
) -> None:
    decodes_or_protocol_error(ENV_LEN.pack(len(envelope)) + envelope + tail)


@FAST
@given(message=messages, data=st.data())
def test_truncated_body_raises_protocol_error(message: Any, data: st.DataObject) -> None:
    body = body_of(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="cut")
    with pytest.raises(ProtocolError):
        codec.decode(body[:cut])


@FAST
@given(message=messages, extra=st.binary(min_size=1, max_size=16))
def test_trailing_bytes_raise_protocol_error(message: Any, extra: bytes) -> None:
    with pytest.raises(ProtocolError, match="trailing bytes"):
        codec.decode(body_of(message) + extra)


def test_too_short_for_an_envelope_length() -> None:
    with pytest.raises(ProtocolError, match="too short"):
        codec.decode(b"\x00\x00")


def test_envelope_length_past_the_end() -> None:
    with pytest.raises(ProtocolError, match="envelope length runs past"):
        codec.decode(ENV_LEN.pack(100) + b"\x80")


def test_envelope_that_is_not_msgpack() -> None:
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        codec.decode(ENV_LEN.pack(1) + b"\xc1")  # 0xc1 is never used in msgpack


@pytest.mark.parametrize(
    "envelope",
    [
        {"t": "NoSuchMessage"},
        {"t": "Payload", "data": b""},  # a wire type, but not a message
        {"t": "WorkerInfo"},
        {"t": 3},
        {"t": None},
        {"t": b"Hello"},  # bytes, not str
        {"kind": "driver", "address": "", "pid": 1},  # no tag at all
        {"t": {}},  # unhashable tags must not escape as TypeError
        {"t": ["Hello"]},
        {"t": {"Hello": 1}},
        ["Hello", "driver", "", 1],
        "Hello",
        42,
        None,
    ],
    ids=repr,
)
def test_wrong_tag_raises_protocol_error(envelope: Any) -> None:
    with pytest.raises(ProtocolError, match="not a known message"):
        codec.decode(envelope_body(envelope))


@pytest.mark.parametrize(
    "envelope",
    [
        {"t": "Hello"},  # missing fields
        {"t": "Hello", "kind": "driver", "address": "", "pid": "not a number"},
        {"t": "Hello", "kind": "driver", "address": "", "pid": float("inf")},
        {"t": "CancelTask", "task_id": "text, not bytes"},
        {"t": "Membership", "rid": 1, "workers": 5},
        {"t": "Membership", "rid": 1, "workers": [{"worker_id": b""}]},
        {"t": "Deliver", "rid": 1, "actor_id": b"a", "payload": "x"},
        {"t": "Deliver", "rid": 1, "actor_id": b"a", "payload": [b"d"]},
        {"t": "Deliver", "rid": 1, "actor_id": b"a", "payload": ["text", []]},
        {"t": "Deliver", "rid": 1, "actor_id": b"a", "payload": [b"d", 3]},
        {"t": "Deliver", "rid": 1, "actor_id": b"a", "payload": [b"d", [1], "extra"]},
    ],
    ids=repr,
)
def test_malformed_fields_raise_protocol_error(envelope: Any) -> None:
    with pytest.raises(ProtocolError):
        codec.decode(envelope_body(envelope))


@pytest.mark.parametrize(
    ("lengths", "tail"),
    [
        ([10], b"12345"),
        ([3, 3], b"12345"),
        ([1], b""),
        ([2**40], b"x"),
        ([2**64 - 1], b"x"),
        ([-1], b"x"),
        (["3"], b"xyz"),
        ([None], b""),
        ([1.0], b"x"),
    ],
    ids=repr,
)
def test_buffer_lengths_past_the_end_raise_protocol_error(lengths: list[Any], tail: bytes) -> None:
    envelope = {"t": "Deliver", "rid": 1, "actor_id": b"a" * 16, "payload": [b"pickle", lengths]}
    with pytest.raises(ProtocolError, match="run past the end"):
        codec.decode(envelope_body(envelope, tail))


def test_buffer_lengths_that_fit_decode() -> None:
    envelope = {"t": "Deliver", "rid": 1, "actor_id": b"a" * 16, "payload": [b"p", [2, 0, 3]]}
    decoded = codec.decode(envelope_body(envelope, b"abcde"))
    assert isinstance(decoded, Deliver)
    assert [bytes(b) for b in decoded.payload.buffers] == [b"ab", b"", b"cde"]


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**16)  # bytes(n) allocates n bytes
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def tagged_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    cls = draw(st.sampled_from(MESSAGE_TYPES))
    names = [f.name for f in attrs.fields(cls)]
    fields = draw(st.fixed_dictionaries({}, optional={name: _msgpack_values for name in names}))
    # Mostly the right tag, so the fields get structured; sometimes any value at all.
    tag = draw(st.just(cls.__name__) | st.just(cls.__name__) | _msgpack_values)
    return {"t": tag, **fields}


@settings(max_examples=300, deadline=None)
@given(envelope=tagged_envelopes(), tail=st.binary(max_size=12))
def test_tagged_envelope_with_random_fields_only_raises_protocol_error(
    envelope: dict[str, Any], tail: bytes
) -> None:
    decodes_or_protocol_error(envelope_body(envelope, tail))


def test_decode_keeps_no_reference_to_the_previous_body() -> None:
    # The decoder parks the body in thread-local state while structuring; an error must not
    # leave it there, or a big frame would stay alive after it was rejected.
    with pytest.raises(ProtocolError):
        codec.decode(
            envelope_body({"t": "Deliver", "rid": 1, "actor_id": b"", "payload": [b"", [9]]})
        )
    assert codec._state.body is None


def test_hello_round_trip_example() -> None:
    hello = Hello(kind="worker", address="127.0.0.1:5000", pid=1234)
    assert codec.decode(body_of(hello)) == hello
