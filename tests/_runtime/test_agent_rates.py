"""What the agent message path promises for throughput, checked as logic (no timing).

- A burst of sends on one link within one loop turn becomes a handful of writes, not one
  write per message (ctx.send to an agent on another worker flushes through Peer.send_wait).
- A full mailbox's parked messages go in, in order, as the agent drains it.

The end-to-end rates are benchmarks (benchmarks/sim_workloads.py: agent_rate_local,
agent_rate_remote), not tests: a loaded CI machine would make any bound on them flaky.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

import actorgrid as ag
from actorgrid._protocol.ids import ActorId
from actorgrid._protocol.messages import Deliver, Hello, Message
from actorgrid._runtime.peer import Peer
from actorgrid._runtime.serialization import dumps, loads
from actorgrid._transport.memory import MemoryFrameStream, memory_frame_stream_pair

BURST = 1000


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


async def test_a_burst_of_sends_in_one_loop_turn_is_a_handful_of_writes() -> None:
    a, b = memory_frame_stream_pair(buffer=2 * BURST)
    counting = CountingStream(a)
    got: list[Message] = []
    all_in = trio.Event()

    def collect(_: Peer, message: Message) -> None:
        got.append(message)
        if len(got) == BURST:
            all_in.set()

    sender = Peer("memory-b", lambda p, m: None, local_hello=Hello("worker", "memory-a", 1))
    receiver = Peer("memory-a", collect, local_hello=Hello("worker", "memory-b", 2))
    actor = ActorId(b"\x01" * 16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run, counting)
        nursery.start_soon(receiver.run, b)
        await trio.testing.wait_all_tasks_blocked()
        before = counting.writes  # the hello
        for i in range(BURST):  # no checkpoint in between: one loop turn, as an agent's loop
            await sender.send_wait(Deliver(0, actor, dumps(i)), flush=True)
        with trio.fail_after(30):
            await all_in.wait()
        nursery.cancel_scope.cancel()
    assert [loads(m.payload) for m in got if isinstance(m, Deliver)] == list(range(BURST))
    # The first goes out at once (a lone message waits for nobody), the rest of the turn in
    # one write by the writer.
    assert counting.writes - before <= 3


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
