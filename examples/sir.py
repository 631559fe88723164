"""An epidemic (SIR) on a contact network, one keyed agent per person, a clock on a topic.

Each person knows a few contacts (a ring lattice with some links rewired at random, as
Watts-Strogatz). Every day the clock publishes one tick; each infected person exposes each
contact with probability ``--beta`` (a message to ``person.key(contact)``) and recovers with
probability ``--gamma``. An exposed susceptible person is infected from then on. The day ends
when every person has reported and every exposure has landed (each landing is counted at the
clock), so no message of one day leaks into the next count.

With ``--simulate SEED`` the same model runs in the deterministic mode
(``actorgrid.testing.simulate``): the whole cluster in one process on a virtual clock, the same
run for the same seed (it prints the trace hash to show it).

    python examples/sir.py --agents 10000 --days 100
    python examples/sir.py --simulate 1 --agents 1000 --days 30
"""

from __future__ import annotations

import argparse
import random
import time

import actorgrid as ag

TOPIC = "sir-clock"
SUSCEPTIBLE, INFECTED, RECOVERED = "S", "I", "R"


def contacts(i: int, n: int, k: int, rewire: float, seed: int) -> list[int]:
    """Person ``i``'s contacts: its ``k`` nearest on a ring, some rewired at random."""
    rng = random.Random(f"{seed}-{i}")
    near = [(i + d) % n for d in range(-(k // 2), k // 2 + 1) if d != 0]
    return [rng.randrange(n) if rng.random() < rewire else c for c in near]


@ag.remote
async def person(ctx: ag.Context) -> None:
    state, exposed = SUSCEPTIBLE, False
    clock, mine, beta, gamma = "", [], 0.0, 0.0
    rng = random.Random(ctx.key)
    async for msg in ctx.mailbox:
        kind = msg[0]
        if kind == "day":
            if state == SUSCEPTIBLE and exposed:
                state = INFECTED
            sent = 0
            if state == INFECTED:
                for contact in mine:
                    if rng.random() < beta:
                        await ctx.send(person.key(str(contact)), ("expose",))
                        sent += 1
                if rng.random() < gamma:
                    state = RECOVERED
            await ctx.send(clock, ("done", state, sent))
        elif kind == "expose":
            exposed = exposed or state == SUSCEPTIBLE
            await ctx.send(clock, ("landed",))
        elif kind == "join":
            _, clock, mine, beta, gamma, infected = msg
            state = INFECTED if infected else SUSCEPTIBLE
            ctx.subscribe(TOPIC)
            await ctx.send(clock, ("joined",))


@ag.remote
async def clock(
    ctx: ag.Context, n: int, days: int, beta: float, gamma: float, seed: int
) -> tuple[float, list[tuple[int, int, int]]]:
    first = set(random.Random(seed).sample(range(n), max(1, n // 100)))  # 1% infected
    for i in range(n):
        net = contacts(i, n, 4, 0.1, seed)
        await ctx.send(person.key(str(i)), ("join", ctx.name, net, beta, gamma, i in first))
    for _ in range(n):
        await ctx.mailbox.receive()
    history = []
    started = time.perf_counter()
    for _ in range(days):
        await ctx.publish(TOPIC, ("day",))
        counts = {SUSCEPTIBLE: 0, INFECTED: 0, RECOVERED: 0}
        reported = exposures = landed = 0
        while reported < n or landed < exposures:
            msg = await ctx.mailbox.receive()
            if msg[0] == "done":
                counts[msg[1]] += 1
                exposures += msg[2]
                reported += 1
            else:
                landed += 1
        history.append((counts[SUSCEPTIBLE], counts[INFECTED], counts[RECOVERED]))
        if counts[INFECTED] == 0:
            break
    return time.perf_counter() - started, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--beta", type=float, default=0.3)
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--simulate", type=int, metavar="SEED", default=None)
    args = parser.parse_args()
    n = args.agents

    def start() -> ag.ObjectRef[tuple[float, list[tuple[int, int, int]]]]:
        epidemic = clock.options(name="sir-clock")
        return epidemic.remote(n, args.days, args.beta, args.gamma, args.seed)

    if args.simulate is not None:
        from actorgrid.testing import simulate

        async def simulated() -> tuple[float, list[tuple[int, int, int]]]:
            return await start()

        result = simulate(simulated, seed=args.simulate, workers_per_node=args.workers)
        elapsed, history = result.value
        print(f"simulated with seed {args.simulate}: trace hash {result.trace_hash}")
    else:
        with ag.init(num_workers=args.workers):
            elapsed, history = ag.get(start(), timeout=3600)
    days = len(history)
    print(f"{n} agents, {days} days in {elapsed:.2f} s ({n * days / elapsed:,.0f} agent-days/s)")
    assert all(s + i + r == n for s, i, r in history)
    print(f"every day: S + I + R = {n}")
    peak_day, (_, peak, _) = max(enumerate(history, 1), key=lambda d: d[1][1])
    print(f"peak: {peak} infected on day {peak_day}")
    s, i, r = history[-1]
    print(f"after day {days}: {s} never infected, {i} infected, {r} recovered")


if __name__ == "__main__":
    main()
