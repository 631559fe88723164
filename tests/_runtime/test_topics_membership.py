"""A process's view of the workers survives news that overtakes the membership reply.

The bug (issue 13's broadcasting clock hung in CI): a runtime asks the head for the
membership when it connects; the head answers, then pushes each worker that registers after
that. On a loaded machine the reader reads the reply and a ``WorkerJoined`` right behind it in
one go and handles both before the task that asked resumes; that task then dropped every
worker its reply did not list, the one just added among them. The worker hosting the clock
never knew of the other worker: its publishes reached only itself, half the agents never
got a tick, and the clock waited for their acks forever (placement and keyed agents' owners
missed that worker too).

The head link here answers as such a reader does: the news comes through the runtime's own
message handlers before ``request`` returns. Deterministic, no processes: the race is in the
order of two handlers, and the rest of the path (publish to every worker in the view) is
covered by test_topics.py and test_agents_100k_wealth.py on real processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import trio

from actorgrid._protocol.ids import NodeId, WorkerId
from actorgrid._protocol.messages import Membership, WorkerJoined, WorkerLeft, WorkerState
from actorgrid._protocol.records import WorkerInfo
from actorgrid._runtime.core import Runtime
from actorgrid._runtime.virtual import live_workers


def _worker(port: int) -> WorkerInfo:
    return WorkerInfo(
        WorkerId(os.urandom(16)), NodeId(b"n" * 16), f"127.0.0.1:{port}", 1, "host", 1.0
    )


class _HeadReadingAhead:
    """A head link whose reader handles ``news`` (sent by the head after its reply) before
    the task waiting for the reply runs again."""

    address = "127.0.0.1:1"
    closed = False

    def __init__(self, rt: Runtime, listed: list[WorkerInfo], news: list[Any]) -> None:
        self.rt = rt
        self.listed = listed
        self.news = news

    async def request(self, make: Callable[[int], Any]) -> Any:
        make(1)
        for message in self.news:
            self.rt._handle(self, message)  # type: ignore[arg-type]
        return Membership(1, tuple(self.listed))

    def send(self, message: Any) -> None:
        pass


def _connect(
    listed: list[WorkerInfo], news: list[Any], known: tuple[WorkerInfo, ...] = ()
) -> Runtime:
    """A runtime that knew of ``known`` (a reconnection) connects to the head."""
    rt = Runtime(kind="worker", secret=b"s" * 32, head_address=None)

    async def main() -> None:
        for info in known:
            rt._add_worker(info)
        await rt._on_head_connected(_HeadReadingAhead(rt, listed, news))  # type: ignore[arg-type]

    trio.run(main)
    return rt


def test_a_worker_that_joins_right_after_the_reply_is_kept() -> None:
    first, second = _worker(1001), _worker(1002)
    rt = _connect([first], [WorkerJoined(second)])
    assert set(rt.placement.workers) == {first.worker_id, second.worker_id}
    assert live_workers(rt) == (first.address, second.address)  # a publish reaches both


def test_a_worker_that_leaves_right_after_the_reply_stays_gone() -> None:
    first, second = _worker(1001), _worker(1002)
    rt = _connect([first, second], [WorkerLeft(second.worker_id, "exited")])
    assert set(rt.placement.workers) == {first.worker_id}
    assert live_workers(rt) == (first.address,)


def test_a_suspension_sent_again_after_the_reply_holds_on_a_reconnection() -> None:
    first, second = _worker(1001), _worker(1002)
    rt = _connect([first, second], [WorkerState(second.worker_id, True)], (first, second))
    assert rt.placement.suspended == {second.worker_id}
