"""Object lifetimes on a live two-worker cluster: memory of objects passed to tasks comes back
once every ref is dropped, a ref an actor stores keeps its object alive until the actor drops
it (checked on the owner's table of kept values), and a worker-owned object whose worker died
raises ObjectLostError naming it."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import signal
import time
from collections.abc import Callable

import psutil
import pytest

import actorgrid as ag
from actorgrid._protocol.ids import short
from actorgrid._runtime import current as ag_current

CLUSTER_OPTIONS = {"num_workers": 2}
OBJECT_BYTES = 100_000
SETTLE_S = 30.0  # generous: releases are batched, and the machine is shared

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote
def size(blob: bytes) -> int:
    return len(blob)


@ag.remote
class Keeper:
    """Stores refs it is given inside a list (so they arrive as refs, not values)."""

    def __init__(self) -> None:
        self.refs: list[ag.ObjectRef[bytes]] = []

    def keep(self, refs: list[ag.ObjectRef[bytes]]) -> int:
        self.refs = list(refs)
        return len(self.refs)

    def total(self) -> int:
        return sum(len(b) for b in ag.get(self.refs))

    def drop(self) -> None:
        self.refs = []


@ag.remote
class Relay:
    def pass_on(self, keeper: ag.ActorHandle[Keeper], refs: list[ag.ObjectRef[bytes]]) -> int:
        return ag.get(keeper.keep.remote(refs))


@ag.remote
class Maker:
    def make(self) -> list[ag.ObjectRef[bytes]]:
        return [ag.put(b"y" * 1000)]  # owned by this actor's worker

    def pid(self) -> int:
        return os.getpid()


def _trim_heap() -> None:
    """Give this process's freed heap back to the system (glibc keeps it otherwise).

    Earlier tests in the same process free large mappings, which raises glibc's mmap
    threshold: 100 KB objects then come from the heap, and freed heap pages stay in RSS
    until trimmed. Trimming makes RSS say what is still alive, not the allocator's history.
    """
    libc = ctypes.util.find_library("c")
    if libc is not None and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)


def rss_mb(pids: list[int]) -> float:
    if os.getpid() in pids:
        _trim_heap()
    return sum(psutil.Process(p).memory_info().rss for p in pids) / 1e6


def wait_until(condition: Callable[[], bool], timeout_s: float = SETTLE_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def put_and_pass(n: int) -> list[ag.ObjectRef[bytes]]:
    refs = [ag.put(os.urandom(OBJECT_BYTES)) for _ in range(n)]
    assert ag.get([size.remote(r) for r in refs]) == [OBJECT_BYTES] * n
    return refs


def test_memory_of_objects_passed_to_tasks_comes_back_once_every_ref_is_dropped(
    cluster: ag.Cluster,
) -> None:
    pids = [os.getpid()] + [w.pid for w in cluster.workers()]
    refs = put_and_pass(200)  # warm-up: connections, code caches, allocator arenas
    del refs
    gc.collect()
    start = rss_mb(pids)
    refs = put_and_pass(2000)  # 200 MB
    peak = rss_mb(pids)
    assert peak > start + 150, (start, peak)  # the measurement sees the objects at all
    del refs
    gc.collect()
    assert wait_until(lambda: rss_mb(pids) < start + 50), (start, peak, rss_mb(pids))


def test_a_ref_stored_by_an_actor_keeps_its_object_until_the_actor_drops_it() -> None:
    """The driver owns the objects: it keeps each value while the actor borrows it, and lets
    it go once the actor drops its refs. Checked on the owner's own table of kept values
    rather than on its RSS, which late in a full run moved by more than the 50 MB at stake
    (the allocator's history, not these objects)."""
    counts = ag_current.get().refs  # type: ignore[attr-defined]
    keeper = Keeper.remote()
    refs = [ag.put(os.urandom(OBJECT_BYTES)) for _ in range(500)]  # 50 MB in this process
    ids = [ref.id for ref in refs]
    assert ag.get(keeper.keep.remote(refs)) == 500
    freed = counts.freed
    del refs
    gc.collect()
    # The actor is the only holder now: it can still read every object from this process,
    # which still keeps every value.
    assert ag.get(keeper.total.remote(), timeout=SETTLE_S) == 500 * OBJECT_BYTES
    assert all(i in counts.kept for i in ids)
    ag.get(keeper.drop.remote())
    assert wait_until(lambda: not any(i in counts.kept for i in ids)), sum(
        i in counts.kept for i in ids
    )
    assert counts.freed >= freed + 500
    ag.kill(keeper)


def test_a_ref_passed_on_by_a_borrower_stays_alive_with_the_last_process_that_holds_it() -> None:
    counts = ag_current.get().refs  # type: ignore[attr-defined]
    keeper, relay = Keeper.remote(), Relay.remote()
    refs = [ag.put(os.urandom(OBJECT_BYTES)) for _ in range(300)]  # 30 MB in this process
    ids = [ref.id for ref in refs]
    assert ag.get(relay.pass_on.remote(keeper, refs)) == 300
    del refs
    gc.collect()
    ag.kill(relay)  # the process in the middle is gone too: the keeper alone holds them
    assert ag.get(keeper.total.remote(), timeout=SETTLE_S) == 300 * OBJECT_BYTES
    assert all(i in counts.kept for i in ids)
    ag.get(keeper.drop.remote())
    assert wait_until(lambda: not any(i in counts.kept for i in ids)), sum(
        i in counts.kept for i in ids
    )
    ag.kill(keeper)


def test_get_of_an_object_whose_owner_died_raises_object_lost_error_naming_both() -> None:
    maker = Maker.remote()
    pid = ag.get(maker.pid.remote())
    (ref,) = ag.get(maker.make.remote())
    owner = ref.owner
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ag.ObjectLostError) as info:
        ag.get(ref, timeout=SETTLE_S)
    message = str(info.value)
    assert short(ref.id) in message
    assert owner in message
    assert "owner" in message and "killed" in message  # the likely cause
    assert info.value.owner == owner and info.value.object_id == ref.id
