"""Mesa's Boltzmann wealth model on keyed agents: coins given to random others, a clock on a topic.

Every person starts with one coin. At each step of the clock (one publish on a topic, whatever
the number of people), every person with a coin gives one to a random person. Wealth ends
unequal; the Gini coefficient says how much (Mesa reaches about 0.6 as well).

People live in districts: ``district.key("3")`` is a keyed agent holding the people whose
number ``p`` has ``p % districts == 3``, activated on its first message on the worker its key
hashes to. At a step each district walks its people, then sends each district one message
with the coins its people gave there, and tells the clock once it has heard from every
district: a step is ``districts ** 2`` messages and one gather, not one message (and one Trio
task switch) per person, which is what lets 10,000 people step in milliseconds. Every coin is
accounted for: a step ends only once every district has received every gift.

With ``--per-person``, every person is a keyed agent of its own instead (``person.key("42")``),
giving its coin by key and the receiver acking each gift to the clock: the model written the
most direct way, and a measure of what one message per agent per step costs.

With ``--simulate SEED`` the same model runs in the deterministic mode
(``actorgrid.testing.simulate``): the whole cluster in one process on a virtual clock, the same
run for the same seed (it prints the trace hash to show it).

    python examples/wealth.py --agents 10000 --steps 100 [--districts 16] [--per-person]
    python examples/wealth.py --simulate 1 --agents 1000 --steps 10
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import actorgrid as ag

TOPIC = "wealth-clock"


@ag.remote
async def district(ctx: ag.Context) -> None:
    me = int(ctx.key or 0)
    rng = random.Random(me)
    clock, n, places = "", 0, 0
    wealth: list[int] = []
    step = -1  # the last step whose gifts this district has given
    heard = 0  # districts whose gifts for that step have come in
    early: list[Any] = []  # gifts for the next step that came before its tick
    async for msg in ctx.mailbox:
        kind = msg[0]
        if kind == "coins":
            _, at, receivers = msg
            if at != step:
                early.append(msg)  # a faster district's gifts: they count once we step too
                continue
            for person in receivers:
                wealth[person] += 1
            heard += 1
            if heard == places:
                await ctx.send(clock, ("done", step))
        elif kind == "step":
            step, heard = msg[1], 0
            gifts: list[list[int]] = [[] for _ in range(places)]
            for i, coins in enumerate(wealth):
                if coins > 0:
                    wealth[i] = coins - 1
                    other = rng.randrange(n)
                    gifts[other % places].append(other // places)
            for d, receivers in enumerate(gifts):
                await ctx.send(district.key(str(d)), ("coins", step, receivers))
            pending, early = early, []
            for gift in pending:
                await ctx.send(district.key(str(me)), gift)  # in line after this step's own
        elif kind == "join":
            clock, n, places = msg[1], msg[2], msg[3]
            wealth = [1] * len(range(me, n, places))
            ctx.subscribe(TOPIC)
            await ctx.send(clock, "joined")
        elif kind == "report":
            await ctx.send(clock, ("wealth", me, wealth))


@ag.remote
async def clock(ctx: ag.Context, n: int, steps: int, places: int) -> tuple[float, list[int]]:
    for d in range(places):  # activate every district; each subscribes to the clock's topic
        await ctx.send(district.key(str(d)), ("join", ctx.name, n, places))
    for _ in range(places):
        await ctx.mailbox.receive()
    started = time.perf_counter()
    for i in range(steps):
        await ctx.publish(TOPIC, ("step", i))
        for _ in range(places):  # the step is over when every district has every gift
            await ctx.mailbox.receive()
    elapsed = time.perf_counter() - started
    await ctx.publish(TOPIC, ("report",))
    wealth = [0] * n
    for _ in range(places):
        _, d, held = await ctx.mailbox.receive()
        wealth[d::places] = held
    return elapsed, wealth


@ag.remote
async def person(ctx: ag.Context) -> None:
    wealth = 1
    clock, n = "", 0
    rng = random.Random(ctx.key)
    async for msg in ctx.mailbox:
        kind = msg[0]
        if kind == "step":
            gift = 1 if wealth > 0 else 0
            wealth -= gift
            await ctx.send(person.key(str(rng.randrange(n))), ("coin", gift))
        elif kind == "coin":
            wealth += msg[1]
            await ctx.send(clock, "ack")
        elif kind == "join":
            clock, n = msg[1], msg[2]
            ctx.subscribe(TOPIC)
            await ctx.send(clock, "joined")
        elif kind == "report":
            await ctx.send(clock, (int(ctx.key or 0), wealth))


@ag.remote
async def person_clock(ctx: ag.Context, n: int, steps: int) -> tuple[float, list[int]]:
    for i in range(n):  # activate every person; each subscribes to the clock's topic
        await ctx.send(person.key(str(i)), ("join", ctx.name, n))
    for _ in range(n):
        await ctx.mailbox.receive()
    started = time.perf_counter()
    for _ in range(steps):
        await ctx.publish(TOPIC, ("step",))
        for _ in range(n):  # one ack per gift: the step is over when every gift has landed
            await ctx.mailbox.receive()
    elapsed = time.perf_counter() - started
    await ctx.publish(TOPIC, ("report",))
    wealth = [0] * n
    for _ in range(n):
        p, coins = await ctx.mailbox.receive()
        wealth[p] = coins
    return elapsed, wealth


def gini(wealth: list[int]) -> float:
    ordered = sorted(wealth)
    n, total = len(ordered), sum(ordered)
    weighted = sum((i + 1) * w for i, w in enumerate(ordered))
    return (2 * weighted) / (n * total) - (n + 1) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--districts", type=int, default=16)
    parser.add_argument("--per-person", action="store_true")
    parser.add_argument("--simulate", type=int, metavar="SEED", default=None)
    args = parser.parse_args()

    def start() -> ag.ObjectRef[tuple[float, list[int]]]:
        if args.per_person:
            return person_clock.options(name="wealth-clock").remote(args.agents, args.steps)
        places = max(1, min(args.districts, args.agents))
        return clock.options(name="wealth-clock").remote(args.agents, args.steps, places)

    if args.simulate is not None:
        from actorgrid.testing import simulate

        async def simulated() -> tuple[float, list[int]]:
            return await start()

        result = simulate(simulated, seed=args.simulate, workers_per_node=args.workers)
        elapsed, wealth = result.value
        print(f"simulated with seed {args.simulate}: trace hash {result.trace_hash}")
    else:
        with ag.init(num_workers=args.workers):
            elapsed, wealth = ag.get(start(), timeout=3600)
    print(
        f"{args.agents} agents, {args.steps} steps in {elapsed:.2f} s: "
        f"{args.steps / elapsed:.1f} steps/s ({args.agents * args.steps / elapsed:,.0f} "
        "agent-steps/s)"
    )
    print(f"coins conserved: {sum(wealth)} of {args.agents}")
    print(f"gini: {gini(wealth):.2f}")
    assert sum(wealth) == args.agents


if __name__ == "__main__":
    main()
