"""The node object store on a live two-worker cluster: large values are read without a copy
(the array a task gets is a read-only view of a /dev/shm file), a large result passed from
task to task never enters the driver, and an object is freed when its last ref goes."""

from __future__ import annotations

import gc
import glob
import os
import time
from collections.abc import Callable

import numpy as np
import psutil
import pytest

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}
MB = 2**20
SETTLE_S = 30.0  # generous: frees are batched, and the machine is shared

pytestmark = pytest.mark.usefixtures("cluster")


def _store_files() -> set[str]:
    """The objects in this cluster's node store (its folder is named after this process,
    which runs the embedded node)."""
    folders = glob.glob(f"/dev/shm/actorgrid-{os.getpid()}-*")
    assert len(folders) == 1, folders
    return {n for n in os.listdir(folders[0]) if not n.startswith(".")}


def _wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {SETTLE_S} s: {what}")
        gc.collect()
        time.sleep(0.05)


@ag.remote
def backing(a: np.ndarray) -> tuple[str, bool, str]:
    """What holds the array's memory, whether it is writable, and the file mapped at its
    address in this process (from /proc/self/maps)."""
    base: object = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    holder = base.obj if isinstance(base, memoryview) else base
    address = a.ctypes.data
    mapped = ""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end and len(fields) >= 6:
                mapped = fields[5]
    return type(holder).__name__, bool(a.flags.writeable), mapped


@ag.remote
def make(nbytes: int) -> np.ndarray:
    return np.full(nbytes, 7, dtype=np.uint8)


@ag.remote
def total(a: np.ndarray) -> int:
    return int(a.sum(dtype=np.int64))


def _assert_shared(found: tuple[str, bool, str]) -> None:
    holder, writable, mapped = found
    assert holder == "mmap", f"the array's memory is held by a {holder}, not the store's mmap"
    assert not writable, "a shared array must be read-only"
    assert mapped.startswith("/dev/shm/actorgrid-"), f"mapped from {mapped!r}"


def test_an_array_argument_reaches_the_task_as_a_view_of_shared_memory() -> None:
    _assert_shared(ag.get(backing.remote(np.arange(1_000_000))))


def test_a_result_passed_by_ref_and_a_put_value_are_shared_too() -> None:
    _assert_shared(ag.get(backing.remote(make.remote(4 * MB))))
    _assert_shared(ag.get(backing.remote(ag.put(np.zeros(500_000)))))


def test_a_small_array_still_travels_inline() -> None:
    holder, _, mapped = ag.get(backing.remote(np.arange(100)))
    assert holder != "mmap" and not mapped.startswith("/dev/shm/")


def test_the_driver_reads_a_large_result_as_a_read_only_view_with_the_right_values() -> None:
    value = ag.get(make.remote(3 * MB))
    assert value.shape == (3 * MB,) and not value.flags.writeable
    assert int(value[-1]) == 7


def test_a_large_result_used_by_a_second_task_never_enters_the_driver() -> None:
    driver = psutil.Process()
    gc.collect()
    before = driver.memory_info().rss
    ref = make.remote(100 * MB)
    assert ag.get(total.remote(ref)) == 7 * 100 * MB
    grown = driver.memory_info().rss - before
    assert grown < 30 * MB, f"the driver grew by {grown / MB:.0f} MB for a 100 MB result"


def test_an_object_is_freed_when_its_last_ref_goes() -> None:
    before = _store_files()
    ref = ag.put(np.ones(2 * MB, dtype=np.uint8))
    assert ag.get(total.remote(ref)) == 2 * MB
    added = _store_files() - before
    assert len(added) == 1, added
    del ref
    _wait_until(lambda: not (_store_files() & added), "the put object's file is gone")


def test_the_store_shows_in_cluster_status(cluster: ag.Cluster) -> None:
    ref = ag.put(np.ones(4 * MB, dtype=np.uint8))

    def shown() -> bool:
        used, capacity, _ = cluster.status().nodes[0].object_store
        return capacity > 0 and used >= 4 * MB

    _wait_until(shown, "the node's pulse reports the 4 MB object")
    del ref


@ag.remote
def echo(value: object) -> object:
    return value


def test_large_bytes_and_bytearrays_go_through_the_store_and_keep_their_type() -> None:
    data = os.urandom(3 * MB)
    before = _store_files()
    back = ag.get(echo.remote(data))
    assert type(back) is bytes and back == data
    # 4 MB and over load into memory advised for huge pages (serialization.load_bytes).
    large = os.urandom(9 * MB)
    back = ag.get(echo.remote(large))
    assert type(back) is bytes and back == large and hash(back) == hash(large)
    mutable = ag.get(echo.remote(bytearray(data)))
    assert type(mutable) is bytearray and mutable == data
    kept = ag.put(data)
    assert len(_store_files() - before) >= 1, "the put bytes value is in the store"
    assert ag.get(kept) == data
