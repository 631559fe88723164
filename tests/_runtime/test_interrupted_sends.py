"""Ctrl-C in a driver thread making calls (a KeyboardInterrupt raised between any two bytecodes
of the main thread), at the worst points of a call's sending, deterministically: raised from
a patched function at that exact point. A write cut in the middle leaves no half frame on the
link; a call recorded and then interrupted before it went out leaves no record behind."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from losses import wait_until

import actorgrid as ag
from actorgrid._runtime import current
from actorgrid._transport import tcp

CLUSTER_OPTIONS = {"num_workers": 1}
GET_TIMEOUT_S = 60.0  # a hang fails the test instead of stalling the suite


@ag.remote
class Echo:
    def size(self, data: bytes) -> int:
        return len(data)


def _worker_peer(cluster: ag.Cluster) -> Any:
    (worker,) = cluster.workers()
    rt: Any = current.get()
    return rt.peers[worker.address]


class _InterruptAfterAWrite:
    """Stands in for the transport's byte counts: raises KeyboardInterrupt in the main thread
    as it counts the bytes of its next write, once (where a Ctrl-C that came during that
    ``sendmsg`` is raised: on its way back to Python, before the write is accounted for)."""

    def __init__(self, counts: Any) -> None:
        self._counts = counts
        self.armed = True

    @property
    def received(self) -> int:
        return int(self._counts.received)

    @received.setter
    def received(self, n: int) -> None:
        self._counts.received = n

    @property
    def sent(self) -> int:
        return int(self._counts.sent)

    @sent.setter
    def sent(self, n: int) -> None:
        self._counts.sent = n
        if self.armed and threading.current_thread() is threading.main_thread():
            self.armed = False
            raise KeyboardInterrupt


def test_a_ctrl_c_in_the_middle_of_a_write_loses_nothing_on_the_link(
    cluster: ag.Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = Echo.remote()
    assert ag.get(echo.size.remote(b""), timeout=GET_TIMEOUT_S) == 0
    peer = _worker_peer(cluster)
    # A small send buffer: the call below is written in parts, and the Ctrl-C comes after the
    # first part. Its call has gone out in part, so the rest follows it (before the fix, the
    # rest was dropped: the worker read the next frame as the end of this one, and closed).
    peer._stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    counts = _InterruptAfterAWrite(tcp.TRAFFIC)
    monkeypatch.setattr(tcp, "TRAFFIC", counts)
    # This thread has waited, so its next call is written from it (Peer.send_threadsafe).
    with pytest.raises(KeyboardInterrupt):
        _ = echo.size.remote(b"x" * 60_000)
    assert not counts.armed, "the call was not written from this thread"
    assert ag.get(echo.size.remote(b"y" * 10), timeout=GET_TIMEOUT_S) == 10
    assert ag.get(echo.size.remote(b"z" * 60_000), timeout=GET_TIMEOUT_S) == 60_000
    assert not peer.closed
    wait_until("no call left in flight", lambda: not peer.inflight)


@ag.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


@pytest.mark.parametrize("where", ["after its record", "in the write, before any byte"])
def test_a_call_interrupted_before_it_went_out_leaves_no_record(
    cluster: ag.Cluster, where: str
) -> None:
    counter = Counter.remote()
    assert ag.get(counter.incr.remote(), timeout=GET_TIMEOUT_S) == 1
    rt: Any = current.get()
    peer = _worker_peer(cluster)
    # This thread has waited: its next call is recorded as in flight, then written from here.
    target, name = (
        (rt.observe, "call_sent") if where == "after its record" else (peer, "send_threadsafe")
    )

    def interrupt(*args: Any) -> Any:
        delattr(target, name)  # once
        raise KeyboardInterrupt

    setattr(target, name, interrupt)
    with pytest.raises(KeyboardInterrupt):
        _ = counter.incr.remote()
    assert name not in vars(target), "the call did not go out from this thread"
    # It never ran, nothing waits for it, and the link goes on.
    assert ag.get(counter.incr.remote(), timeout=GET_TIMEOUT_S) == 2
    assert not peer.closed
    # (The loop drops its record; the answer above may have been read by this thread first.)
    wait_until("no call left in flight", lambda: not peer.inflight and not rt._actor_calls)
