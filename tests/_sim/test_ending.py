"""An agent that ends while messages wait in its overflow (its mailbox full): each of them
is either delivered or reported as not delivered, once, and the worker goes on.

On the simulation because the race is one of ordering: the "stop" from the driver overtakes
a flooder's messages (there is no order across senders), and a fixed seed makes the holder
end exactly while its overflow is being moved into its mailbox, every run.
"""

from __future__ import annotations

import logging

import pytest
import trio

import actorgrid as ag
from actorgrid.testing import simulate

SMALL = 4  # mailbox_size: the flood overflows it at once


@ag.remote
async def holder(ctx: ag.Context, hold_s: float) -> list[object]:
    got: list[object] = []
    async for msg in ctx.mailbox:
        if msg == "hold":
            await trio.sleep(hold_s)
        elif msg == "stop":
            return got
        else:
            got.append(msg)
    return got


@ag.remote
async def flooder(ctx: ag.Context, target: str, count: int) -> None:
    for i in range(count):
        await ctx.send(target, i)


@ag.remote
def square(x: int) -> int:
    return x * x


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "was not delivered" in r.getMessage()]


def test_an_agent_ending_with_a_full_overflow_refuses_the_rest_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = SMALL + 300

    async def main() -> tuple[list[object], int]:
        h = holder.options(name="holder", mailbox_size=SMALL).remote(40.0)
        await ag.send_async("holder", "hold")
        await flooder.remote("holder", count)
        await ag.send_async("holder", "stop")
        got = await h
        # The messages still in flight when it ended are refused as they land, and the
        # refusals travel back to the flooder: wait (virtual time) for every one to be told.
        while len(got) + len(_refusals(caplog)) < count:
            await trio.sleep(0.1)
        return got, await square.remote(7)  # the worker still serves

    with caplog.at_level(logging.WARNING, logger="actorgrid"):
        result = simulate(main, seed=2)
    assert result.error is None, result.error
    got, still = result.value
    assert still == 49
    assert got == list(range(len(got)))  # in order, none twice
    refused = _refusals(caplog)
    assert len(got) + len(refused) == count, (len(got), len(refused))
