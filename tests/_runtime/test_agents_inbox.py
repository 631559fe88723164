"""The inbox under every actor's mailbox (inbox.py) keeps trio's memory-channel semantics.

Logic only (one trio.run, no processes): the mailbox behaviour users see (order, backpressure,
a killed agent's refused messages) is covered on real workers by test_named_agents.py,
test_flow_control.py and test_keyed_agents.py.
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

from actorgrid._runtime.inbox import open_inbox


def test_fifo_bounded_and_closing_like_a_memory_channel() -> None:
    async def main() -> None:
        send, receive = open_inbox(2)
        with pytest.raises(trio.WouldBlock):
            receive.receive_nowait()
        send.send_nowait(1)
        send.send_nowait(2)
        with pytest.raises(trio.WouldBlock):
            send.send_nowait(3)  # full
        assert receive.statistics().current_buffer_used == 2
        assert receive.receive_nowait() == 1
        send.send_nowait(3)
        send.close()
        with pytest.raises(trio.ClosedResourceError):
            send.send_nowait(4)
        assert [m async for m in receive] == [2, 3]  # what was queued, then the end
        with pytest.raises(trio.EndOfChannel):
            receive.receive_nowait()

        send, receive = open_inbox(1)
        receive.close()
        with pytest.raises(trio.BrokenResourceError):
            send.send_nowait(1)
        with pytest.raises(trio.ClosedResourceError):
            receive.receive_nowait()

    trio.run(main)


def test_blocked_senders_go_in_first_come_first_served_and_receivers_wake() -> None:
    async def main() -> None:
        send, receive = open_inbox(1)
        got: list[int] = []
        async with trio.open_nursery() as nursery:
            send.send_nowait(0)
            for i in (1, 2, 3):
                nursery.start_soon(send.send, i)
                await trio.testing.wait_all_tasks_blocked()
            assert receive.statistics().tasks_waiting_send == 3
            for _ in range(4):
                got.append(await receive.receive())
            assert got == [0, 1, 2, 3]

            async def reader() -> None:
                got.append(await receive.receive())

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert receive.statistics().tasks_waiting_receive == 1
            send.send_nowait(4)  # handed to the waiting receiver
        assert got[-1] == 4

        # A receiver parked when the send end closes ends; a cancelled one leaves no trace.
        send, receive = open_inbox(1)
        async with trio.open_nursery() as nursery:

            async def ends() -> None:
                with pytest.raises(trio.EndOfChannel):
                    await receive.receive()

            nursery.start_soon(ends)
            gives_up = trio.CancelScope()

            async def waits_then_gives_up() -> None:
                with gives_up:
                    await receive.receive()

            nursery.start_soon(waits_then_gives_up)
            await trio.testing.wait_all_tasks_blocked()
            assert receive.statistics().tasks_waiting_receive == 2
            gives_up.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert receive.statistics().tasks_waiting_receive == 1
            send.close()

        # The first receiver gives up: the next one parked is served.
        send, receive = open_inbox(1)
        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()

            async def first_gives_up() -> None:
                with first:
                    await receive.receive()

            async def second() -> None:
                got.append(await receive.receive())

            nursery.start_soon(first_gives_up)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
            await trio.testing.wait_all_tasks_blocked()
            send.send_nowait(5)
        assert got[-1] == 5

    trio.run(main)


def test_an_idle_inbox_is_small() -> None:
    send, receive = open_inbox(1024)
    size = sys.getsizeof(send) + sys.getsizeof(receive)
    assert size < 300  # a trio memory channel pair: ~1.8 KB with its state
