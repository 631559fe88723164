"""The node object store under a small ``object_store_memory``: objects that do not fit spill
to disk and are still read back right; dropped ones go; and nothing of ours is left in
/dev/shm after a worker was killed and the cluster stopped."""

from __future__ import annotations

import gc
import glob
import os
import signal
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pytest

import actorgrid as ag
from actorgrid._node.objectstore import NodeStore
from actorgrid._protocol.ids import new_node_id

MB = 2**20
SETTLE_S = 30.0  # generous: frees are batched, spills are copies, the machine is shared


def _ours(root: str, suffix: str = "") -> list[str]:
    """This process's node store folders under ``root`` (the embedded node runs here)."""
    return glob.glob(os.path.join(root, f"actorgrid-{os.getpid()}-*{suffix}"))


def _objects(folder: str) -> list[str]:
    return [n for n in os.listdir(folder) if not n.startswith(".")]


def _wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {SETTLE_S} s: {what}")
        gc.collect()
        time.sleep(0.05)


@ag.remote
def total(a: np.ndarray) -> int:
    return int(a.sum(dtype=np.int64))


def test_a_full_store_spills_to_disk_and_still_reads_every_object() -> None:
    with ag.init(num_workers=1, object_store_memory=24 * MB) as cluster:
        [memory] = _ours("/dev/shm")
        [spill] = _ours(tempfile.gettempdir(), "-spill")
        refs = [ag.put(np.full(8 * MB, i, dtype=np.uint8)) for i in range(6)]  # 48 MB
        _wait_until(lambda: len(_objects(spill)) >= 3, "half of the objects are on disk")
        _wait_until(
            lambda: cluster.status().nodes[0].object_store[2] >= 24 * MB,
            "status reports the spilled bytes",
        )
        assert len(_objects(memory)) <= 3, "shared memory holds at most its capacity"
        assert ag.get([total.remote(r) for r in refs]) == [i * 8 * MB for i in range(6)]
        assert [int(ag.get(r)[0]) for r in refs] == list(range(6))
        del refs
        _wait_until(
            lambda: not _objects(memory) and not _objects(spill),
            "every dropped object is gone from memory and disk",
        )


def test_unreferenced_objects_make_room_for_new_ones() -> None:
    with ag.init(num_workers=1, object_store_memory=24 * MB):
        [memory] = _ours("/dev/shm")
        [spill] = _ours(tempfile.gettempdir(), "-spill")
        for i in range(10):  # 80 MB in all, 8 MB at a time
            ref = ag.put(np.full(8 * MB, 1, dtype=np.uint8))
            assert ag.get(total.remote(ref)) == 8 * MB
            del ref
            _wait_until(lambda: not _objects(memory), f"object {i} is freed")
        assert not _objects(spill), "nothing needed to spill"


@ag.remote
class Holder:
    """Owns a large object in its worker and makes a large result."""

    def __init__(self) -> None:
        self.kept = ag.put(np.ones(4 * MB, dtype=np.uint8))

    def pid(self) -> int:
        return os.getpid()

    def make(self) -> np.ndarray:
        return np.ones(4 * MB, dtype=np.uint8)


def test_a_killed_worker_leaks_no_segment() -> None:
    with ag.init(num_workers=1) as cluster:
        [memory] = _ours("/dev/shm")
        holder = Holder.remote()
        pid = ag.get(holder.pid.remote())
        result = holder.make.remote()
        assert ag.get(total.remote(result)) == 4 * MB
        assert len(_objects(memory)) == 2  # the actor's put and the result the driver owns
        os.kill(pid, signal.SIGKILL)
        _wait_until(lambda: len(_objects(memory)) == 1, "the dead worker's own object goes")
        assert ag.get(total.remote(result)) == 4 * MB, "a result it made outlives it"
        assert cluster.embedded
    assert not _ours("/dev/shm"), "the store's shared memory is gone after shutdown"
    assert not _ours(tempfile.gettempdir(), "-spill")


def test_without_dev_shm_the_store_falls_back_to_files_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = NodeStore(new_node_id(), 8 * MB, shm_root="/nonexistent-shm")
    try:
        assert store.file_backed
        assert store.folder.startswith(tempfile.gettempdir())
        assert os.path.isdir(store.folder)
        assert "/nonexistent-shm is missing" in caplog.text and "--shm-size" in caplog.text
    finally:
        store.aclose_nowait()
    assert not os.path.exists(store.folder)
