"""Mesa's Boltzmann wealth model on keyed agents: coins given to random others, a clock on a topic.

Every person starts with one coin. At each step of the clock (one publish on a topic, whatever
the number of people), every person with a coin gives one to a random person. Wealth ends
unequal; the Gini coefficient says how much.

It is Mesa's model, not an approximation of it: in Mesa's ``shuffle_do`` people take their
turns one after another in a random order, so a person who had no coin but was given one
before their turn gives it on in the same step. Here every person draws their turn as a random
time in the step (uniform times give a uniformly random order) and every gift carries the
giver's turn: a person who started the step with a coin gives one at their turn, and one who
started without gives one on, once, if a gift made before their turn reaches them. Whether a
gift came before a turn does not depend on when its message arrives, so the people need no
common order and the Gini matches Mesa's (about 0.63 after 100 steps of 10,000 people;
``benchmarks/sim_workloads.py`` measures both over several seeds).

People live in districts: ``district.key("3")`` is a keyed agent holding the people whose
number ``p`` has ``p % districts == 3``, activated on its first message on the worker its key
hashes to. A step goes in rounds: each district lands the gifts it got, lets its people give
on, and sends every other district one message with its gifts for it and a count of all it
sent; a round in which no district sent anything ends the step (about five rounds, so a step is
a few times ``districts ** 2`` messages, not one message and one Trio task switch per person,
which is what lets 10,000 people step in milliseconds). Every coin is accounted for.
Districts keep their people in memory only: one that loses them (its worker died, or a worker
joined and its key moved mid-run) makes the clock stop the run and say why, not wait forever.

With ``--per-person``, every person is a keyed agent of its own (``person.key("42")``),
giving its coin by key; a receiver acks each gift to whoever gave it once any coin it gave on
is acked in turn, so the clock knows the step is over when it has one ack per person: the
model written the most direct way, and a measure of what one message per agent costs.

With ``--simulate SEED`` the same model runs in the deterministic mode
(``actorgrid.testing.simulate``): the whole cluster in one process on a virtual clock, the same
run for the same seed (it prints the trace hash to show it). ``--address`` runs it on a running
cluster instead of an embedded one (``ACTORGRID_SECRET`` holds its secret).

    python examples/wealth.py --agents 10000 --steps 100 [--districts 16] [--per-person]
    python examples/wealth.py --agents 10000 --steps 100 --seed 1 --seeds 10
    python examples/wealth.py --simulate 1 --agents 1000 --steps 10
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

import trio

import actorgrid as ag

TOPIC = "wealth-clock"
# A step in which no district says anything for this long has lost a message with a worker.
STALLED_S = 300.0
Gifts = list[tuple[float, int]]  # (the giver's turn, the receiver's place in its district)


class District:
    """One district's people and its part of each step; no I/O: ``step`` and ``gifts`` return
    the messages to send, as (district number, message) pairs, or (-1, message) for the clock."""

    def __init__(self, me: int, n: int, places: int, seed: int) -> None:
        self.me, self.n, self.places = me, n, places
        self.rng = random.Random(f"{seed}-{me}")
        self.wealth = [1] * len(range(me, n, places))
        self.turn = [0.0] * len(self.wealth)
        # Started the step without a coin and has not given one on yet.
        self.waiting = [False] * len(self.wealth)
        self.step = self.round = -1
        self.sent = 0  # gifts sent to other districts in this round
        self.inbox: dict[tuple[int, int], list[tuple[Gifts, int]]] = {}

    def start(self, step: int) -> list[tuple[int, Any]]:
        self.step, self.round = step, 0
        out: list[Gifts] = [[] for _ in range(self.places)]
        random_ = self.rng.random
        for p, coins in enumerate(self.wealth):
            at = self.turn[p] = random_()
            self.waiting[p] = coins == 0
            if coins:
                self.wealth[p] = coins - 1
                self._give(at, out)
        self._land(out[self.me], out)
        return self._send(out) + self._advance()

    def gifts(self, step: int, round_: int, gifts: Gifts, sent: int) -> list[tuple[int, Any]]:
        self.inbox.setdefault((step, round_), []).append((gifts, sent))
        return self._advance() if (step, round_) == (self.step, self.round) else []

    def _give(self, at: float, out: list[Gifts]) -> None:
        other = self.rng.randrange(self.n)
        out[other % self.places].append((at, other // self.places))

    def _land(self, work: Gifts, out: list[Gifts]) -> None:
        """Every gift in ``work`` to its receiver; one who started without a coin and is given
        one before their turn gives one on at their turn (to this district: into ``work``)."""
        wealth, waiting, turn = self.wealth, self.waiting, self.turn
        while work:
            at, p = work.pop()
            if waiting[p] and at < turn[p]:
                waiting[p] = False
                self._give(turn[p], out)
            else:
                wealth[p] += 1

    def _send(self, out: list[Gifts]) -> list[tuple[int, Any]]:
        self.sent = sum(len(g) for d, g in enumerate(out) if d != self.me)
        msg = ("gifts", self.step, self.round)
        return [(d, (*msg, g, self.sent)) for d, g in enumerate(out) if d != self.me]

    def _advance(self) -> list[tuple[int, Any]]:
        """Once every other district's message of this round is in: the step is over if no
        one sent a gift in it, else land them and start the next round."""
        key = (self.step, self.round)
        got = self.inbox.get(key, [])
        if len(got) < self.places - 1:
            return []
        del self.inbox[key]
        if self.sent + sum(sent for _, sent in got) == 0:
            return [(-1, ("done", self.step))]
        out: list[Gifts] = [[] for _ in range(self.places)]
        for gifts, _ in got:
            self._land(list(gifts), out)
        self._land(out[self.me], out)
        self.round += 1
        return self._send(out) + self._advance()


@ag.remote
async def district(ctx: ag.Context) -> None:
    me = int(ctx.key or 0)
    clock, model = "", District(me, 0, 1, 0)
    async for msg in ctx.mailbox:
        kind = msg[0]
        if kind == "gifts" and not clock:
            # Activated anew in the middle of a run (its worker died, or a worker joined and
            # the key moved): its people are lost. Say so to the clock (every other district
            # names it), which stops the run with the reason instead of waiting forever.
            await ctx.send(msg[-1], ("lost", me))
            return
        if kind == "gifts":
            todo = model.gifts(*msg[1:-1])
        elif kind == "step":
            todo = model.start(msg[1])
        elif kind == "join":
            if not clock:
                ctx.subscribe(TOPIC)
            clock, n, places, seed = msg[1:]
            model = District(me, n, places, seed)
            todo = [(-1, "joined")]
        elif kind == "report":
            todo = [(-1, ("wealth", me, model.wealth))]
        for d, out in todo:
            if d < 0:
                await ctx.send(clock, out)
                continue
            try:  # a gift carries the clock's name (see "lost" above)
                await ctx.send(district.key(str(d)), (*out, clock))
            except ag.ActorDiedError:  # district d's worker died, and its people with it
                await ctx.send(clock, ("lost", d))
                return


@ag.remote
async def clock(
    ctx: ag.Context, n: int, steps: int, places: int, seed: int
) -> tuple[float, list[int]]:
    for d in range(places):  # activate every district; each subscribes to the clock's topic
        await ctx.send(district.key(str(d)), ("join", ctx.name, n, places, seed))
    for _ in range(places):
        await ctx.mailbox.receive()
    started = time.perf_counter()
    for i in range(steps):
        await ctx.publish(TOPIC, ("step", i))
        for _ in range(places):  # the step is over when every district has every gift
            await _from_districts(ctx, i)
    elapsed = time.perf_counter() - started
    await ctx.publish(TOPIC, ("report",))
    wealth = [0] * n
    for _ in range(places):
        _, d, held = await _from_districts(ctx, steps)
        wealth[d::places] = held
    return elapsed, wealth


async def _from_districts(ctx: ag.Context, step: int) -> Any:
    """The next district's message; an error that says why if one lost its people (or none
    has said anything for STALLED_S: a message to a district died with its worker)."""
    with trio.move_on_after(STALLED_S):
        msg = await ctx.mailbox.receive()
        if msg[0] != "lost":
            return msg
        raise RuntimeError(
            f"district {msg[1]} lost its people at step {step}: it was activated anew in the "
            "middle of the run, on another worker (its worker died, or a worker joined the "
            "cluster and its key moved there; districts keep their people in memory only). "
            "Start the model once all the cluster's workers are up, and keep them up"
        )
    raise RuntimeError(
        f"no district has said anything for {STALLED_S:g} s at step {step}: a message "
        "between districts was lost with a worker that died (districts keep their people in "
        "memory only, and a dead worker's are gone). Start the model again"
    )


@ag.remote
async def person(ctx: ag.Context) -> None:
    me = ctx.key or "0"
    wealth, clock, n = 1, "", 0
    rng = random.Random()
    step, turn, rich, waiting = -1, 0.0, False, False
    owed = ""  # whom to ack, once the coin given on is acked ("" is the clock)
    async for msg in ctx.mailbox:
        kind = msg[0]
        if kind in ("step", "coin") and msg[1] != step:
            step, turn, rich = msg[1], rng.random(), wealth > 0
            waiting = not rich
        if kind == "step":
            if not rich:  # no coin to give: nothing of this person's for the clock to wait on
                await ctx.send(clock, ("ack",))
            else:
                wealth -= 1
                await ctx.send(person.key(str(rng.randrange(n))), ("coin", step, turn, ""))
        elif kind == "coin":
            _, _, at, giver = msg
            if waiting and at < turn:
                waiting, owed = False, giver
                await ctx.send(person.key(str(rng.randrange(n))), ("coin", step, turn, me))
            else:
                wealth += 1
                await ctx.send(person.key(giver) if giver else clock, ("ack",))
        elif kind == "ack":
            await ctx.send(person.key(owed) if owed else clock, ("ack",))
        elif kind == "join":
            if not clock:
                ctx.subscribe(TOPIC)
            clock, n, seed = msg[1:]
            wealth, step, rng = 1, -1, random.Random(f"{seed}-{me}")
            await ctx.send(clock, "joined")
        elif kind == "report":
            await ctx.send(clock, (int(me), wealth))


@ag.remote
async def person_clock(ctx: ag.Context, n: int, steps: int, seed: int) -> tuple[float, list[int]]:
    for i in range(n):  # activate every person; each subscribes to the clock's topic
        await ctx.send(person.key(str(i)), ("join", ctx.name, n, seed))
    for _ in range(n):
        await ctx.mailbox.receive()
    started = time.perf_counter()
    for i in range(steps):
        await ctx.publish(TOPIC, ("step", i))
        for _ in range(n):  # one ack per person, once every coin it set going has landed
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
    parser.add_argument("--districts", type=int, default=None, help="default: one per worker")
    parser.add_argument("--per-person", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="runs, seeds SEED, SEED+1, ...")
    parser.add_argument("--simulate", type=int, metavar="SEED", default=None)
    parser.add_argument("--address", default=None, help="a running cluster's head")
    args = parser.parse_args()

    def start(seed: int) -> ag.ObjectRef[tuple[float, list[int]]]:
        name = f"wealth-clock-{seed}"
        if args.per_person:
            return person_clock.options(name=name).remote(args.agents, args.steps, seed)
        places = max(1, min(args.districts or args.workers, args.agents))
        return clock.options(name=name).remote(args.agents, args.steps, places, seed)

    runs: list[tuple[float, list[int]]] = []
    seeds = range(args.seed, args.seed + args.seeds)
    if args.simulate is not None:
        from actorgrid.testing import simulate

        async def simulated() -> tuple[float, list[int]]:
            return await start(args.simulate)

        result = simulate(simulated, seed=args.simulate, workers_per_node=args.workers)
        runs.append(result.value)
        print(f"simulated with seed {args.simulate}: trace hash {result.trace_hash}")
    else:
        secret = os.environ.get("ACTORGRID_SECRET")
        with ag.init(
            args.address,
            num_workers=None if args.address else args.workers,
            secret=bytes.fromhex(secret) if args.address and secret else None,
        ):
            runs += [ag.get(start(seed), timeout=3600) for seed in seeds]
    for seed, (elapsed, wealth) in zip(seeds, runs, strict=False):
        if len(runs) > 1:
            print(f"seed {seed}: gini {gini(wealth):.3f}, {args.steps / elapsed:.1f} steps/s")
        assert sum(wealth) == args.agents, f"{sum(wealth)} coins of {args.agents}"
    elapsed = statistics.mean(e for e, _ in runs)
    print(
        f"{args.agents} agents, {args.steps} steps in {elapsed:.4f} s: "
        f"{args.steps / elapsed:.1f} steps/s ({args.agents * args.steps / elapsed:,.0f} "
        "agent-steps/s)"
    )
    print(f"coins conserved: {sum(runs[-1][1])} of {args.agents}")
    ginis = [gini(w) for _, w in runs]
    spread = f" +- {statistics.stdev(ginis):.4f} over {len(runs)} seeds" if len(runs) > 1 else ""
    print(f"gini: {statistics.mean(ginis):.4f}{spread}")


if __name__ == "__main__":
    main()
