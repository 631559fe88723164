"""Broadcast and gather through small mailboxes on real processes: no hang, no lost message.

Mesa's Boltzmann wealth model as the issue found it hanging: a clock sends "step" to every
named agent by name and waits for its acks; each agent gives a coin to a random agent by name.
Every mailbox holds only ``SMALL`` messages, so senders are held back by flow control all the
time, both ways at once. The receiver of each coin acks it to the clock, so a step ends when
every coin has landed and the total is exact at once: no polling, no deadline to outwait.

Its own module, on the default pulse interval: the point here is that backpressure never
deadlocks or drops; that a link held back by flow control is not declared a zombie is
test_flow_control.py's, on short pulses. (On a loaded machine, 2,000 agents' creation and
traffic could starve a process past a 1 s zombie window, which says nothing about flow control.)
"""

import os
import random
import uuid

import pytest

import actorgrid as ag

SMALL = 4  # mailbox_size of every agent and of the clock

CLUSTER_OPTIONS = {"num_workers": 2}


@ag.remote
async def wealth_agent(ctx: ag.Context, prefix, n, clock_name, seed):
    """On "step", give a coin (or nothing, when broke) to a random agent; the receiver acks
    each gift to the clock, so that the clock's step ends once every gift has landed."""
    rng = random.Random(seed)
    wealth = 1
    await ctx.send(clock_name, "alive")  # no step or coin is sent to it before it runs
    async for msg in ctx.mailbox:
        if msg == "step":
            gift = 1 if wealth > 0 else 0
            wealth -= gift
            await ctx.send(f"{prefix}-{rng.randrange(n)}", ("coin", gift))
        elif msg == "wealth":
            await ctx.reply((wealth, os.getpid()))
        elif msg == "stop":
            return None
        else:
            wealth += msg[1]
            await ctx.send(clock_name, "ack")


@ag.remote
async def wealth_clock(ctx: ag.Context, prefix, n, steps):
    """Once every agent is alive, send "step" to every agent and wait for an ack of every
    gift; then count the coins."""
    names = [f"{prefix}-{i}" for i in range(n)]
    for _ in range(n):
        assert await ctx.mailbox.receive() == "alive"
    for _ in range(steps):
        for name in names:
            await ctx.send(name, "step")
        for _ in range(n):
            assert await ctx.mailbox.receive() == "ack"
    replies = [await ctx.ask(name, "wealth") for name in names]
    return sum(w for w, _ in replies), len({pid for _, pid in replies})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_broadcast_and_gather_finishes_every_step_and_conserves_every_coin(cluster):
    n, steps = 2000, 5
    prefix = f"wealth-{uuid.uuid4().hex[:10]}"
    clock_name = f"{prefix}-clock"
    # The clock first: each agent says it is alive before the first step, so that no message
    # waits for an agent whose creation is still on its way (a loaded machine can take longer
    # than a worker waits for a creation that messages raced: 30 s).
    clock = wealth_clock.options(name=clock_name, mailbox_size=SMALL).remote(prefix, n, steps)
    agents = [
        wealth_agent.options(name=f"{prefix}-{i}", mailbox_size=SMALL).remote(
            prefix, n, clock_name, i
        )
        for i in range(n)
    ]
    total, workers = ag.get(clock, timeout=900)
    assert total == n  # every coin conserved, and none still in flight: each was acked
    assert workers == 2  # the agents were spread over both workers
    for i in range(n):
        ag.send(f"{prefix}-{i}", "stop")
    ag.get(agents, timeout=300)
