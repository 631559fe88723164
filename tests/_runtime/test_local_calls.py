"""Quiet calls from a pool thread to a sync actor on the same worker go straight into its lane
(``Executor.call_from_thread``): no loop, loopback or inbox on the way. They must keep every
guarantee of the way round: the calls of one sender run in the order sent, whichever way
each went; an actor's methods never run at once, not even with a call run on the loop
(``inline.py``) that came meanwhile from elsewhere. One worker, so every actor is local.
"""

from __future__ import annotations

import time
from typing import Any

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 1}
DEADLINE_S = 60.0


@ag.remote
class Node:
    def __init__(self) -> None:
        self.next: Any = None
        self.seen: list[int] = []
        self.busy = False
        self.overlaps = 0

    def link(self, next_node: Any) -> None:
        self.next = next_node

    def hop(self, n: int, last: int, done: str) -> None:
        self.overlaps += self.busy
        self.busy = True
        self.seen.append(n)
        time.sleep(0.0002)  # a window for anything that would run beside it
        if n >= last:
            ag.send(done, n)
        else:
            self.next.hop.remote(n + 1, last, done)  # quiet, to an actor on this worker
        self.busy = False

    @ag.method(inline=True)
    def poke(self) -> None:
        """Run on the worker's loop when nothing of this actor is queued or running."""
        self.overlaps += self.busy
        self.busy = True
        until = time.perf_counter() + 0.0005
        while time.perf_counter() < until:  # a window for a hop to start beside it
            pass
        self.busy = False

    def add(self, i: int) -> None:
        self.overlaps += self.busy
        self.busy = True
        self.seen.append(i)
        time.sleep(0.0005)  # slower than a burst: its calls fill the lane and wait in the inbox
        self.busy = False

    def burst(self, target: Any, first: int, count: int) -> None:
        for i in range(first, first + count):
            target.add.remote(i)  # the first may go straight in; the rest through the loop
        time.sleep(0.05)  # the loop takes them all: the next burst may find the portal idle

    def report(self) -> tuple[list[int], int]:
        return list(self.seen), self.overlaps


@ag.remote
async def sink(ctx: ag.Context) -> int:
    async for msg in ctx.mailbox:
        return int(msg)
    return -1


def test_a_ring_on_one_worker_runs_each_actors_calls_one_at_a_time(cluster: ag.Cluster) -> None:
    n, hops = 4, 600
    nodes = [Node.remote() for _ in range(n)]
    ag.get([a.link.remote(nodes[(i + 1) % n]) for i, a in enumerate(nodes)], timeout=DEADLINE_S)
    done = sink.options(name="local-ring-done").remote()
    nodes[0].hop.remote(0, hops, "local-ring-done")
    pokes = 0
    while not ag.wait([done], timeout=0)[0]:  # calls from another sender, run on the loop
        ag.get([node.poke.remote() for node in nodes], timeout=DEADLINE_S)
        pokes += 1
    assert ag.get(done, timeout=DEADLINE_S) == hops
    reports = ag.get([node.report.remote() for node in nodes], timeout=DEADLINE_S)
    for i, (seen, overlaps) in enumerate(reports):
        assert seen == list(range(i, hops + 1, n))
        assert overlaps == 0, f"node {i} ran two calls at once {overlaps} times ({pokes} pokes)"
    for node in nodes:
        ag.kill(node)


def test_an_actors_calls_to_one_on_its_worker_keep_their_order(cluster: ag.Cluster) -> None:
    sender, target = Node.remote(), Node.remote()
    # More than a lane holds (256): later bursts find it full or filling (a call then goes
    # round), or find the first burst's calls queued there (one may go straight in behind).
    count, bursts = 300, 3
    for b in range(bursts):  # each burst's first call may go straight in, the rest round
        sender.burst.remote(target, b * count, count)
    expected = list(range(count * bursts))
    deadline = time.monotonic() + DEADLINE_S
    while len(seen := ag.get(target.report.remote(), timeout=DEADLINE_S)[0]) < len(expected):
        assert time.monotonic() < deadline, f"the target saw only {len(seen)} calls"
        time.sleep(0.01)
    assert seen == expected
    ag.kill(sender)
    ag.kill(target)
