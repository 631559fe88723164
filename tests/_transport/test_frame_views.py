"""frame_views: the bytes of a batch of frames, in as few views as the sizes allow."""

from __future__ import annotations

from actorgrid._protocol.framing import frame_header
from actorgrid._transport.tls import frame_views


def _expected(bodies: list[list[bytes | memoryview]]) -> bytes:
    out = b""
    for body in bodies:
        data = b"".join(bytes(p) for p in body)
        out += frame_header(len(data)) + data
    return out


def test_a_batch_of_small_frames_is_one_view_with_every_byte_in_order() -> None:
    bodies: list[list[bytes | memoryview]] = [[b"\x00\x00\x00\x02", b"m%d" % i] for i in range(500)]
    views = frame_views(bodies)
    assert len(views) == 1
    assert b"".join(views) == _expected(bodies)


def test_big_parts_stay_uncopied_views_between_joined_small_ones() -> None:
    big = bytearray(b"b" * 100_000)
    array = memoryview(bytearray(8 * 20_000)).cast("d")  # items of 8 bytes, as numpy's
    bodies: list[list[bytes | memoryview]] = [
        [b"head", memoryview(big), b"", b"tail"],
        [b"x" * 10],
        [array],
    ]
    views = frame_views(bodies)
    assert b"".join(views) == _expected(bodies)
    assert any(v.obj is big for v in views)  # sent from the caller's buffer, not a copy
    assert all(v.format == "B" for v in views)
    assert len(views) == 4  # [hdr+head], big, [tail+hdr+x..+hdr], array
