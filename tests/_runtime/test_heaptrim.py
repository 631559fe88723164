"""heaptrim.py: what a burst freed in the middle of the heap goes back to the system."""

from __future__ import annotations

import sys

import psutil
import pytest

from actorgrid._runtime.heaptrim import trim_heap

# Blocks of malloc's heap (over pymalloc's 512 bytes, under glibc's mmap threshold), and how
# many: ~100 MB, of which one in KEEP_EVERY stays, scattered, so that the heap's top is never
# free and glibc gives nothing back by itself.
BLOCK = 2000
BLOCKS = 50_000
KEEP_EVERY = 8


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_what_a_burst_freed_among_what_it_kept_goes_back_to_the_system() -> None:
    me = psutil.Process()
    burst = [bytes(BLOCK) for _ in range(BLOCKS)]
    kept = burst[::KEEP_EVERY]
    del burst
    freed = me.memory_info().rss
    assert trim_heap()
    trimmed = me.memory_info().rss
    # ~87 MB freed among the kept blocks (none of it gone by itself); a third of it at least
    # leaves the RSS (~55 MB does on this machine: the kept blocks pin their pages).
    assert freed - trimmed > BLOCK * BLOCKS * (KEEP_EVERY - 1) // KEEP_EVERY // 3
    assert all(len(block) == BLOCK for block in kept)
