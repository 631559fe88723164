"""The free pool's accounts (``_scheduler/recycling.py``), with no files: what is pooled,
what is removed, and that claims and shrinking keep the bounds."""

from __future__ import annotations

from actorgrid._scheduler.recycling import (
    Claimed,
    Offered,
    Recycle,
    Remove,
    SegmentPool,
    Shrink,
    pool_name,
    size_class,
)

MB = 2**20


def test_sizes_up_to_the_same_power_of_two_share_a_class() -> None:
    assert size_class(5 * MB) == size_class(8 * MB) != size_class(8 * MB + 1)
    assert pool_name(6 * MB, "abc.1") == f"{size_class(6 * MB)}-abc.1"


def test_freed_files_are_pooled_within_the_bounds_and_removed_beyond() -> None:
    pool = SegmentPool(limit=20 * MB, per_class=2, min_bytes=4 * MB)
    assert pool.handle(Offered("small", MB)) == [Remove("small")]
    assert pool.handle(Offered("a", 6 * MB)) == [Recycle("a", pool_name(6 * MB, "a"))]
    assert pool.handle(Offered("b", 7 * MB)) == [Recycle("b", pool_name(7 * MB, "b"))]
    assert pool.handle(Offered("c", 6 * MB)) == [Remove("c")], "two of a class at most"
    assert pool.handle(Offered("d", 12 * MB)) == [Remove("d")], "over the byte limit"
    assert pool.bytes == 13 * MB
    assert pool.handle(Claimed(pool_name(6 * MB, "a"))) == []
    assert pool.handle(Claimed(pool_name(6 * MB, "a"))) == [], "claimed twice counts once"
    assert pool.bytes == 7 * MB
    assert pool.handle(Offered("e", 5 * MB)) == [Recycle("e", pool_name(5 * MB, "e"))]


def test_shrink_removes_every_pooled_file() -> None:
    pool = SegmentPool(limit=100 * MB, min_bytes=4 * MB)
    pool.handle(Offered("a", 6 * MB))
    pool.handle(Offered("b", 40 * MB))
    assert sorted(pool.handle(Shrink()), key=repr) == sorted(
        [Remove("", pool_name(6 * MB, "a")), Remove("", pool_name(40 * MB, "b"))], key=repr
    )
    assert pool.bytes == 0 and pool.handle(Shrink()) == []
    assert pool.handle(Offered("c", 6 * MB)) == [Recycle("c", pool_name(6 * MB, "c"))]
