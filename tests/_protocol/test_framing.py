"""Framing: a byte stream split anywhere at all decodes to exactly the frames sent."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorgrid._exceptions import ProtocolError
from actorgrid._protocol.framing import (
    GROWTH_START_BYTES,
    HEADER,
    SMALL_BUFFER_BYTES,
    FrameDecoder,
    frame_header,
)

HYPOTHESIS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bodies bigger than the shared buffer take the decoder's other path (a buffer of their own).
# Hypothesis cannot draw half a megabyte of bytes, so big bodies are drawn as (size, seed).
_big_bodies = st.builds(
    lambda size, seed: random.Random(seed).randbytes(size),
    st.integers(min_value=SMALL_BUFFER_BYTES - HEADER.size - 2, max_value=600_000),
    st.integers(min_value=0, max_value=2**32),
)
_small_bodies = st.binary(max_size=300)
# At least one big body, at any position among up to four others of either kind.
_with_a_big_body = st.builds(
    lambda others, big, at: [*others[:at], big, *others[at:]],
    st.lists(_small_bodies | _big_bodies, max_size=4),
    _big_bodies,
    st.integers(min_value=0, max_value=4),
)


def stream_of(bodies: list[bytes]) -> bytes:
    return b"".join(frame_header(len(body)) + body for body in bodies)


def boundaries_of(bodies: list[bytes]) -> set[int]:
    """Stream offsets at which a frame has just ended (and offset 0)."""
    return {0, *itertools.accumulate(HEADER.size + len(body) for body in bodies)}


@st.composite
def split_streams(
    draw: st.DrawFn, bodies_strategy: st.SearchStrategy[list[bytes]]
) -> tuple[list[bytes], list[bytes]]:
    """Bodies, and their stream cut into chunks at arbitrary points, frame boundaries among
    them."""
    bodies = draw(bodies_strategy)
    stream = stream_of(bodies)
    cut_at = st.integers(min_value=0, max_value=len(stream)) | st.sampled_from(
        sorted(boundaries_of(bodies))
    )
    cuts = sorted(draw(st.lists(cut_at, max_size=30)))
    edges = [0, *cuts, len(stream)]
    return bodies, [stream[lo:hi] for lo, hi in itertools.pairwise(edges)]


def feed_with_feed(decoder: FrameDecoder, chunk: bytes) -> None:
    decoder.feed(chunk)


def feed_with_buffer_protocol(decoder: FrameDecoder, chunk: bytes) -> None:
    """What the TCP transport does: recv_into(get_buffer()), then buffer_updated(n)."""
    view = memoryview(chunk)
    while view.nbytes:
        target = decoder.get_buffer()
        # An empty buffer would make recv_into return 0, which reads as end of stream.
        assert target.nbytes > 0
        n = min(target.nbytes, view.nbytes)
        target[:n] = view[:n]
        decoder.buffer_updated(n)
        view = view[n:]


def feed_with_partial_writes(decoder: FrameDecoder, chunk: bytes) -> None:
    """Like a recv_into that fills at most a few bytes of the buffer it is given."""
    view = memoryview(chunk)
    rng = random.Random(len(chunk))
    while view.nbytes:
        target = decoder.get_buffer()
        assert target.nbytes > 0
        n = min(target.nbytes, view.nbytes, rng.choice([1, 2, 7, 8, 9, 4096, 70_000]))
        target[:n] = view[:n]
        decoder.buffer_updated(n)
        view = view[n:]


FEEDERS = [feed_with_feed, feed_with_buffer_protocol, feed_with_partial_writes]
Feeder = Callable[[FrameDecoder, bytes], None]


def check_decodes(bodies: list[bytes], chunks: list[bytes], feeder: Feeder) -> None:
    decoder = FrameDecoder()
    boundaries = boundaries_of(bodies)
    received: list[bytes] = []
    offset = 0
    for chunk in chunks:
        feeder(decoder, chunk)
        offset += len(chunk)
        while (frame := decoder.next_frame()) is not None:
            received.append(bytes(frame))
        # Each frame is handed out as soon as its last byte arrives, never before.
        complete = sum(1 for b in boundaries if 0 < b <= offset)
        assert len(received) == complete
        assert decoder.in_progress == (offset not in boundaries)
    assert received == bodies
    assert not decoder.in_progress
    assert decoder.next_frame() is None


@pytest.mark.parametrize("feeder", FEEDERS)
@settings(HYPOTHESIS, max_examples=100)
@given(case=split_streams(st.lists(_small_bodies, max_size=12)))
def test_small_frames_split_anywhere(feeder: Feeder, case: tuple[list[bytes], list[bytes]]) -> None:
    check_decodes(*case, feeder)


@pytest.mark.parametrize("feeder", FEEDERS)
@settings(HYPOTHESIS, max_examples=8)
@given(case=split_streams(_with_a_big_body))
def test_frames_larger_than_the_shared_buffer_split_anywhere(
    feeder: Feeder, case: tuple[list[bytes], list[bytes]]
) -> None:
    check_decodes(*case, feeder)


@pytest.mark.parametrize("feeder", FEEDERS)
@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        SMALL_BUFFER_BYTES - HEADER.size - 1,
        SMALL_BUFFER_BYTES - HEADER.size,  # header and body fill the shared buffer exactly
        SMALL_BUFFER_BYTES - HEADER.size + 1,  # one byte too many: a buffer of its own
        SMALL_BUFFER_BYTES,
        3 * SMALL_BUFFER_BYTES + 5,
    ],
)
def test_frame_sizes_around_the_shared_buffer(feeder: Feeder, size: int) -> None:
    bodies = [b"a" * 5, random.Random(size).randbytes(size), b"z" * 3]
    stream = stream_of(bodies)
    for chunk_size in (1_000, 65_536, len(stream)):
        chunks = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
        check_decodes(bodies, chunks, feeder)


def test_one_byte_at_a_time() -> None:
    bodies = [b"", b"x", b"hello" * 50, b""]
    stream = stream_of(bodies)
    check_decodes(bodies, [stream[i : i + 1] for i in range(len(stream))], feed_with_feed)


def test_in_progress_follows_frame_boundaries() -> None:
    decoder = FrameDecoder()
    assert not decoder.in_progress
    decoder.feed(frame_header(4)[:3])
    assert decoder.in_progress  # part of a header
    decoder.feed(frame_header(4)[3:])
    assert decoder.in_progress  # a header, no body yet
    decoder.feed(b"ab")
    assert decoder.in_progress
    assert decoder.next_frame() is None
    decoder.feed(b"cd")
    assert not decoder.in_progress
    assert decoder.next_frame() == b"abcd"
    decoder.feed(frame_header(0))
    assert not decoder.in_progress  # an empty frame is complete with its header
    assert decoder.next_frame() == b""
    assert decoder.next_frame() is None


def test_in_progress_during_a_large_frame() -> None:
    size = 2 * SMALL_BUFFER_BYTES
    decoder = FrameDecoder()
    decoder.feed(frame_header(size) + b"x" * 10)
    assert decoder.in_progress
    decoder.feed(b"x" * (size - 10))
    assert not decoder.in_progress
    assert decoder.next_frame() == b"x" * size


def test_large_frame_is_received_in_place() -> None:
    # The body of a frame too big for the shared buffer is the very buffer the bytes were
    # received into: get_buffer() hands out a view of it, and next_frame() returns it.
    size = SMALL_BUFFER_BYTES + 1
    decoder = FrameDecoder()
    decoder.feed(frame_header(size))
    target = decoder.get_buffer()
    assert target.nbytes == size
    target[:] = b"q" * size
    received_into = target.obj
    decoder.buffer_updated(size)
    frame = decoder.next_frame()
    assert isinstance(frame, memoryview)
    assert frame.obj is received_into
    assert frame == b"q" * size


@pytest.mark.parametrize("split", [False, True])
def test_oversized_header_raises(split: bool) -> None:
    decoder = FrameDecoder(max_message_bytes=1000)
    header = frame_header(1001)
    with pytest.raises(ProtocolError, match=r"1001 bytes exceeds max_message_bytes=1000"):
        if split:
            decoder.feed(header[:5])
            decoder.feed(header[5:])
        else:
            decoder.feed(header)


def test_oversized_header_after_good_frames_raises() -> None:
    decoder = FrameDecoder(max_message_bytes=10)
    with pytest.raises(ProtocolError, match="max_message_bytes"):
        decoder.feed(frame_header(3) + b"abc" + frame_header(2**63))
    assert decoder.next_frame() == b"abc"


def test_frame_of_exactly_max_message_bytes_is_accepted() -> None:
    decoder = FrameDecoder(max_message_bytes=10)
    decoder.feed(frame_header(10) + b"0123456789")
    assert decoder.next_frame() == b"0123456789"


# --- memory follows the bytes that arrived ------------------------------------------------------


def test_a_header_alone_does_not_allocate_the_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_header(1 << 30))
    assert decoder.in_progress
    assert decoder.buffered_bytes <= SMALL_BUFFER_BYTES + GROWTH_START_BYTES
    assert decoder.get_buffer().nbytes <= GROWTH_START_BYTES


@settings(HYPOTHESIS, max_examples=30)
@given(
    size=st.integers(min_value=SMALL_BUFFER_BYTES, max_value=12 * GROWTH_START_BYTES),
    step=st.sampled_from([1_000, 65_536, 1_000_000, 3_000_000]),
)
def test_a_large_frame_buffer_grows_with_the_bytes_received(size: int, step: int) -> None:
    """At every point, the frame's buffer is at most twice what arrived (or the start size),
    and the body is still whole and in place at the end."""
    body = random.Random(size).randbytes(size)
    decoder = FrameDecoder()
    decoder.feed(frame_header(size))
    received = 0
    owners = set()
    while received < size:
        target = decoder.get_buffer()
        large = decoder.buffered_bytes - decoder.shared_buffer_bytes
        assert large <= max(GROWTH_START_BYTES, 2 * received)
        owners.add(id(target.obj))
        n = min(step, target.nbytes, size - received)
        target[:n] = body[received : received + n]
        decoder.buffer_updated(n)
        received += n
    frame = decoder.next_frame()
    assert frame is not None
    assert frame == body
    assert isinstance(frame, memoryview)
    assert {id(frame.obj)} == owners  # one buffer, grown in place: no copy into another


def test_close_frees_a_frame_in_progress_even_if_the_decoder_is_kept() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_header(100 * GROWTH_START_BYTES) + b"x" * 1000)
    decoder.close()
    assert decoder.buffered_bytes == 0
    assert not decoder.in_progress
    with pytest.raises(ProtocolError, match="closed"):
        decoder.get_buffer()
    decoder.close()  # idempotent


def test_a_lent_buffer_is_released_once_reported() -> None:
    # A view kept past buffer_updated (in a traceback, say) must not pin the buffer.
    decoder = FrameDecoder()
    decoder.feed(frame_header(SMALL_BUFFER_BYTES * 2))
    target = decoder.get_buffer()
    decoder.buffer_updated(10)
    with pytest.raises(ValueError, match="released"):
        target[0]
