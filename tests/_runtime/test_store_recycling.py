"""The node store's free pool on a live cluster: the file of a freed large object is reused
by the next object of its size class (no new segment), and never while a reader still maps
it: an actor that keeps an array it was passed keeps its values when the driver frees the
object and writes another of the same size."""

from __future__ import annotations

import gc
import glob
import os
import time
from collections.abc import Callable

import numpy as np
import pytest
from actorgrid.cli.status import _node_rows, status_report

import actorgrid as ag
from actorgrid._scheduler.recycling import size_class

CLUSTER_OPTIONS = {"num_workers": 1}
MB = 2**20
SIZE = 6 * MB  # over the pool's 4 MB minimum; 5-8 MB files share a size class
SETTLE_S = 30.0  # generous: frees are batched, and the machine is shared

pytestmark = pytest.mark.usefixtures("cluster")


def _folder() -> str:
    folders = glob.glob(f"/dev/shm/actorgrid-{os.getpid()}-*")
    assert len(folders) == 1, folders
    return folders[0]


def _pooled() -> set[str]:
    return set(os.listdir(os.path.join(_folder(), ".pool")))


def _inodes() -> dict[str, int]:
    """Object file -> inode, for the objects in the store now."""
    folder = _folder()
    return {
        n: os.stat(os.path.join(folder, n)).st_ino
        for n in os.listdir(folder)
        if not n.startswith(".")
    }


def _mapped_by_workers(cluster: ag.Cluster) -> bool:
    """Whether a worker still maps a pooled file (its task's argument not yet dropped)."""
    for worker in cluster.workers():
        with open(f"/proc/{worker.pid}/maps") as maps:
            if "/.pool/" in maps.read():
                return True
    return False


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


@ag.remote
class Keeper:
    def keep(self, a: np.ndarray) -> int:
        self.a = a  # a read-only view of the store's mapping, kept past the call
        return int(a[0])

    def kept(self) -> tuple[int, int]:
        return int(self.a.min()), int(self.a.max())


def test_a_freed_segment_is_reused_by_the_next_object_of_its_size(cluster: ag.Cluster) -> None:
    _wait_until(lambda: not _pooled() and not _inodes(), "the store is empty")
    ref = ag.put(np.full(SIZE, 1, dtype=np.uint8))
    assert ag.get(total.remote(ref)) == SIZE
    (first_inode,) = _inodes().values()
    del ref
    _wait_until(lambda: len(_pooled()) == 1 and not _inodes(), "the freed file is pooled")
    _check_pool_shown(cluster, files=1)
    _wait_until(lambda: not _mapped_by_workers(cluster), "the task dropped its argument")
    again = ag.put(np.full(SIZE - MB, 2, dtype=np.uint8))
    assert not _pooled(), "the writer took the pooled file"
    assert list(_inodes().values()) == [first_inode], "the same segment holds the new object"
    assert ag.get(total.remote(again)) == 2 * (SIZE - MB)
    _wait_until(
        lambda: cluster.status().nodes[0].object_store_pool == (0, 0),
        "Cluster.status() shows the pool empty once the writer took its file",
    )
    del again
    _wait_until(lambda: not _inodes(), "the second object is freed")


def _check_pool_shown(cluster: ag.Cluster, files: int) -> None:
    """Cluster.status() and `actorgrid status` (its table and its JSON, made from the same
    ClusterStatus here rather than in a second process, which costs seconds to start) show
    the pool's files and bytes."""
    _wait_until(
        lambda: cluster.status().nodes[0].object_store_pool[0] == files,
        f"Cluster.status() shows {files} pooled file(s)",
    )
    status = cluster.status()
    pooled_bytes = status.nodes[0].object_store_pool[1]
    assert SIZE <= pooled_bytes < SIZE + MB, pooled_bytes  # the file: the array and a header
    report = status_report(cluster.address, status)
    store = report["nodes"][0]["object_store"]
    assert (store["pooled"], store["pooled_bytes"]) == (files, pooled_bytes), store
    table = "\n".join(_node_rows(report["nodes"]))
    assert f"pool {files} (6.0 MiB)" in table, table


def test_a_segment_still_mapped_by_a_reader_is_not_overwritten() -> None:
    keeper = Keeper.remote()
    ref = ag.put(np.full(SIZE, 1, dtype=np.uint8))
    assert ag.get(keeper.keep.remote(ref)) == 1
    del ref
    _wait_until(lambda: len(_pooled()) == 1 and not _inodes(), "the freed file is pooled")
    # The next writer of the size class claims that file, finds the keeper's lock on it and
    # writes a fresh segment instead.
    other = ag.put(np.full(SIZE, 9, dtype=np.uint8))
    assert ag.get(total.remote(other)) == 9 * SIZE
    assert ag.get(keeper.kept.remote()) == (1, 1), "the kept array still holds its values"
    assert not _pooled(), "the file the keeper maps left the pool"
    del other
    ag.kill(keeper)


# Over glibc's largest mmap threshold (32 MiB): the reader's new bytes object is a mapping of
# its own, into which it maps the store's pages (smaller ones may come from the heap: copied).
BYTES_SIZE = 40 * 2**20


@ag.remote
class BytesKeeper:
    def keep(self, data: bytes) -> tuple[str, str]:
        self.data = data  # kept past the call, after its object is freed
        return type(data).__name__, _mapped_at(id(data) + len(data) // 2)

    def kept(self) -> tuple[int, int, bool]:
        return self.data.count(1), len(self.data), hash(self.data) == self.first_hash

    def remember_hash(self) -> None:
        self.first_hash = hash(self.data)


def _mapped_at(address: int) -> str:
    """The file this process maps at ``address`` ("" for anonymous memory)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return fields[5] if len(fields) >= 6 else ""
    return ""


@ag.remote
def count_of(data: bytes, byte: int) -> tuple[str, int]:
    return type(data).__name__, data.count(byte)


def test_a_large_bytes_value_is_the_stores_pages_and_keeps_its_values_once_freed() -> None:
    keeper = BytesKeeper.remote()
    ref = ag.put(b"\x01" * BYTES_SIZE)
    kind, mapped = ag.get(keeper.keep.remote(ref))
    assert kind == "bytes", "a bytes value arrives as bytes"
    assert "/dev/shm/actorgrid-" in mapped, f"its middle is not the store's pages: {mapped!r}"
    ag.get(keeper.remember_hash.remote())
    del ref
    _wait_until(lambda: len(_pooled_bytes_class()) == 1, "the freed file is pooled")
    # The next writer of its size class finds the keeper's lock on the pooled file and
    # writes a fresh segment: the bytes the keeper holds never change.
    other = ag.put(b"\x09" * BYTES_SIZE)
    assert ag.get(count_of.remote(other, 9)) == ("bytes", BYTES_SIZE)
    assert ag.get(keeper.kept.remote()) == (BYTES_SIZE, BYTES_SIZE, True)
    assert not _pooled_bytes_class(), "the file the keeper maps left the pool"
    del other
    ag.kill(keeper)


def _pooled_bytes_class() -> set[str]:
    """The pooled files of BYTES_SIZE's size class (other tests' may be pooled meanwhile)."""
    prefix = f"{size_class(BYTES_SIZE + 1)}-"
    return {name for name in _pooled() if name.startswith(prefix)}
