"""What the agent message path promises for throughput, checked as logic (no timing).

- A send to an agent on another worker goes out at once (Peer.send_wait(flush=True)), with no
  task switch to the link's writer, when it is alone: the rest of a burst goes to the writer,
  in one write, until this process reads a frame again.
- A full mailbox's parked messages go in, in order, as the agent drains it.

The end-to-end rates are benchmarks (benchmarks/sim_workloads.py: agent_rate_local,
agent_rate_remote), not tests: a loaded CI machine would make any bound on them flaky.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

import actorgrid as ag
from actorgrid._protocol.codec import decode, encode
from actorgrid._protocol.ids import ActorId
from actorgrid._protocol.messages import Deliver, Hello, Pulse
from actorgrid._runtime.peer import Peer
from actorgrid._runtime.serialization import dumps, loads
from actorgrid._transport.memory import MemoryFrameStream, memory_frame_stream_pair


class CountingStream:
    """A frame stream that counts its writes (each send_nowait or send_frames call)."""

    def __init__(self, inner: MemoryFrameStream) -> None:
        self.inner = inner
        self.peer = inner.peer
        self.writes = 0
        self.frames = 0

    @property
    def pending(self) -> bool:
        return self.inner.pending

    def send_nowait(self, bodies: Sequence[Any]) -> bool:
        self.writes += 1
        self.frames += len(bodies)
        return self.inner.send_nowait(bodies)

    async def send_frames(self, bodies: Sequence[Any]) -> None:
        self.writes += 1
        self.frames += len(bodies)
        await self.inner.send_frames(bodies)

    async def receive_frame(self) -> Any:
        return await self.inner.receive_frame()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_one_message_alone_goes_out_at_once_without_the_writer() -> None:
    a, b = memory_frame_stream_pair()
    counting = CountingStream(a)
    sender = Peer("memory-b", lambda p, m: None, local_hello=Hello("worker", "memory-a", 1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run, counting)
        await trio.testing.wait_all_tasks_blocked()
        before = counting.writes
        await sender.send_wait(Deliver(0, ActorId(b"\x02" * 16), dumps("hello")), flush=True)
        # Written before anything else ran: a ring's hop pays no task switch to go out.
        assert counting.writes == before + 1
        assert await b.receive_frame() is not None  # the hello
        assert await b.receive_frame() is not None  # the message, already there
        nursery.cancel_scope.cancel()


async def test_a_burst_goes_out_in_two_writes_and_a_frame_read_lets_the_next_go_at_once() -> None:
    a, b = memory_frame_stream_pair()
    counting = CountingStream(a)
    sender = Peer("memory-b", lambda p, m: None, local_hello=Hello("worker", "memory-a", 1))
    target = ActorId(b"\x02" * 16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run, counting)
        await trio.testing.wait_all_tasks_blocked()
        await b.send_frames([encode(Hello("worker", "memory-b", 1))])
        await trio.testing.wait_all_tasks_blocked()
        before = counting.writes
        for i in range(100):
            await sender.send_wait(Deliver(0, target, dumps(i)), flush=True)
        assert counting.writes == before + 1  # the first at once, the rest queued
        await trio.testing.wait_all_tasks_blocked()
        assert counting.writes == before + 2  # the writer sent the other 99 in one write
        assert await b.receive_frame() is not None  # the hello
        got = [loads(_delivered(await b.receive_frame()).payload) for _ in range(100)]
        assert got == list(range(100))
        # A frame comes in (new work may come with it): the next lone message goes at once.
        await b.send_frames([encode(Pulse())])
        await trio.testing.wait_all_tasks_blocked()
        await sender.send_wait(Deliver(0, target, dumps("next")), flush=True)
        assert counting.writes == before + 3
        assert loads(_delivered(await b.receive_frame()).payload) == "next"
        nursery.cancel_scope.cancel()


def _delivered(frame: Any) -> Deliver:
    message = decode(frame)
    assert isinstance(message, Deliver)
    return message


@ag.remote
async def drain(ctx: ag.Context, n: int) -> list[int]:
    return [await ctx.mailbox.receive() for _ in range(n)]


@ag.remote
async def blast(ctx: ag.Context, target: str, n: int) -> int:
    for i in range(n):
        await ctx.send(target, i)
    return n


def test_a_fast_sender_and_a_small_mailbox_on_one_worker_deliver_everything_in_order() -> None:
    # One worker: the sender outpaces the receiver, its mailbox (8) fills, the rest is parked
    # under the credit window and moved in as the receiver drains, half a mailbox at a time.
    n = 5000
    with ag.init(num_workers=1):
        sink = drain.options(name="rates-sink", mailbox_size=8).remote(n)
        sender = blast.remote("rates-sink", n)
        assert ag.get(sender, timeout=120) == n
        assert ag.get(sink, timeout=120) == list(range(n))


@ag.remote
async def never_reads(ctx: ag.Context) -> None:
    await trio.sleep_forever()


@ag.remote
async def sends_burst(ctx: ag.Context, target: str, n: int) -> int:
    for i in range(n):
        await ctx.send(target, i)  # on this worker: straight into its mailbox
    return n


def test_local_sends_left_in_a_mailbox_when_its_agent_ends_are_reported_not_lost() -> None:
    # One worker: the burst goes into the mailbox of an agent that never reads it (no letter,
    # no loopback on the way); killed, it reports each message it held as undelivered.
    n = 10
    with ag.init(num_workers=1) as cluster:
        receiver = never_reads.options(name="rates-never-reads").remote()
        assert ag.get(sends_burst.remote("rates-never-reads", n), timeout=60) == n
        ag.kill(receiver)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = [e for e in cluster.recent_events() if e.kind == "message_undelivered"]
            if len(events) >= n:
                break
            time.sleep(0.05)
        assert len(events) == n, [e.detail for e in events]
        assert all("was killed" in e.detail for e in events)
