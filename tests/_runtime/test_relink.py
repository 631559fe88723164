"""A dropped link to a live worker is redialled, not taken as the worker's death (links.py,
_scheduler/relink.py): the driver's TCP connection to a worker is shut down from outside, as
a reset or a proxy's timeout would, while the worker process lives on."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from losses import wait_until

import actorgrid as ag
from actorgrid._runtime import current

CLUSTER_OPTIONS = {"num_workers": 2}
GET_TIMEOUT_S = 30.0  # a hang fails the test instead of stalling the suite

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote(max_concurrency=2)
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> tuple[int, int]:
        self.n += 1
        return os.getpid(), self.n

    def hold(self, started: str, release: str) -> str:
        Path(started).touch()
        while not Path(release).exists():
            time.sleep(0.01)
        return "held"


def _drop_link(address: str) -> Any:
    """Shut the driver's connection to ``address`` down under it; the closed link."""
    rt: Any = current.get()
    link = rt.peers[address]
    link._stream.sock.shutdown(socket.SHUT_RDWR)
    wait_until("the link closed", lambda: link.closed)
    return link


def test_a_dropped_link_fails_its_calls_in_flight_and_the_worker_keeps_serving(
    cluster: ag.Cluster, tmp_path: Path
) -> None:
    counter = Counter.remote()
    named = Counter.options(name="relinked").remote()
    pid, n = ag.get(counter.incr.remote(), timeout=GET_TIMEOUT_S)
    assert n == 1
    address = counter._info.address  # type: ignore[attr-defined]
    started, release = tmp_path / "started", tmp_path / "release"
    held = counter.hold.remote(str(started), str(release))
    wait_until("the held call started", started.exists)

    _drop_link(address)

    # The call in flight on the dropped link fails, and says why and what it may have done.
    with pytest.raises(ag.ActorDiedError, match=r"dropped .* stayed alive, so the call may or"):
        ag.get(held, timeout=GET_TIMEOUT_S)
    release.touch()
    # The actor lives on, with its state, in the same process.
    assert ag.get(counter.incr.remote(), timeout=GET_TIMEOUT_S) == (pid, 2)
    assert ag.get(ag.get_actor("relinked").incr.remote(), timeout=GET_TIMEOUT_S)[1] == 1
    assert ag.get(named.incr.remote(), timeout=GET_TIMEOUT_S)[1] == 2
    # Placement still uses that worker, and the cluster still counts it.
    assert pid in {w.pid for w in cluster.workers()}
    rt: Any = current.get()
    assert len(rt.placement.workers) == 2
    fresh = [Counter.remote() for _ in range(6)]
    pids = {p for p, _ in ag.get([c.incr.remote() for c in fresh], timeout=GET_TIMEOUT_S)}
    assert pid in pids
    for handle in [counter, named, *fresh]:
        ag.kill(handle)


def test_calls_made_after_the_drop_run_in_the_order_made(cluster: ag.Cluster) -> None:
    counter = Counter.remote()
    pid, _ = ag.get(counter.incr.remote(), timeout=GET_TIMEOUT_S)
    _drop_link(counter._info.address)  # type: ignore[attr-defined]
    refs = [counter.incr.remote() for _ in range(20)]
    assert ag.get(refs, timeout=GET_TIMEOUT_S) == [(pid, n) for n in range(2, 22)]
    ag.kill(counter)
