"""A ref pickled into a message that is never unpickled does not pin its object for ever: its
hold is a lease (ACTORGRID_REF_LEASE_S), here shortened so the test sees it end."""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorgrid as ag

LEASE_S = 2.0
# 50 MB in objects small enough to stay in their owner's memory (not the node's store).
OBJECT_BYTES, OBJECTS = 90_000, 550
SETTLE_S = 30.0  # well past the lease: releases are batched, and the machine is shared


@ag.remote
def hold_the_worker(started: str) -> None:
    Path(started).touch()
    time.sleep(600)  # cancelled by the test


@ag.remote
def size(blobs: list[ag.ObjectRef[bytes]]) -> int:
    return sum(len(b) for b in ag.get(blobs))


def held_mb() -> float:
    """The memory this process's Python objects hold now. Not RSS: pytest runs every test in
    one process, and the heap freed by earlier tests is reused by new objects without RSS
    growing, so RSS would neither show the objects arrive nor reliably show them go."""
    return tracemalloc.get_traced_memory()[0] / 1e6


def wait_until(condition: Callable[[], bool], timeout_s: float = SETTLE_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_ref_in_a_task_cancelled_before_it_ran_is_freed_after_its_lease(
    tmp_path: Path, processes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTORGRID_REF_LEASE_S", str(LEASE_S))
    with ag.init(num_workers=1) as cluster:
        processes.add(w.pid for w in cluster.workers())
        started = tmp_path / "started"
        blocker = hold_the_worker.remote(str(started))
        assert wait_until(started.exists, 60)
        tracemalloc.start()
        try:
            gc.collect()
            before = held_mb()
            refs = [ag.put(os.urandom(OBJECT_BYTES)) for _ in range(OBJECTS)]
            assert held_mb() > before + 40  # the objects are in this process's memory
            queued = size.remote(refs)  # waits behind the blocker: its arguments stay pickled
            del refs
            ag.cancel(queued)
            with pytest.raises(ag.TaskCancelledError):
                ag.get(queued, timeout=60)
            del queued
            gc.collect()
            # Nothing holds the objects but the holds of the never-unpickled refs, until their
            # lease ends.
            assert wait_until(lambda: held_mb() < before + 20), (before, held_mb())
        finally:
            tracemalloc.stop()
        ag.cancel(blocker, force=True)
    processes.wait_gone()
