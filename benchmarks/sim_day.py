"""One virtual day of agents on timers, in the deterministic simulation: how long it takes.

    python benchmarks/sim_day.py [--agents 10000] [--pulse 60] [--seed 7]

The scenario of ``tests/_sim/test_scale.py``: each agent is a keyed agent that, every few
virtual hours on its own timer, sends "hi" to a random other agent by key; at the end of the
day one published "report" gathers what each sent and got. It runs in ``ag.testing.simulate``
(one process, virtual time, a 2-worker cluster) and prints the CPU and wall seconds it took,
the messages agents sent, the frames the simulated network delivered, and the trace hash (the
same for the same seed and size).
"""

from __future__ import annotations

import argparse
import random
import time

import trio

import actorgrid as ag
from actorgrid.testing import simulate

DAY_S = 86_400.0
MEAN_GAP_MIN = 360  # minutes between an agent's messages, on average (uniform 1..719)


@ag.remote
async def villager(ctx: ag.Context) -> None:
    rng = random.Random(int(ctx.key))
    sent = got = agents = 0  # agents: how many there are, told by every message

    def next_at() -> float:
        return trio.current_time() + 60 * rng.randint(1, 2 * MEAN_GAP_MIN - 1)

    wake = next_at()
    while True:
        msg = None
        with trio.move_on_at(wake):
            msg = await ctx.mailbox.receive()
        if msg is None:  # the timer
            if trio.current_time() < DAY_S and agents:
                await ctx.send(villager.key(str(rng.randrange(agents))), ("hi", agents))
                sent += 1
            wake = next_at()
        elif msg[0] == "hi":
            got, agents = got + 1, msg[1]
        elif msg[0] == "start":
            agents = msg[1]
            ctx.subscribe("report")
        elif msg[0] == "report":
            await ctx.send(msg[1], (sent, got))


@ag.remote
async def tally(ctx: ag.Context, n: int) -> tuple[int, int, int]:
    sent = got = 0
    for _ in range(n):
        s, g = await ctx.mailbox.receive()
        sent, got = sent + s, got + g
    return n, sent, got


def one_day(agents: int, seed: int, pulse_s: float) -> dict[str, object]:
    async def main() -> tuple[int, int, int]:
        for i in range(agents):
            await ag.send_async(villager.key(str(i)), ("start", agents))
        await trio.sleep(DAY_S + 3600)  # an hour for the last messages to land
        inbox = tally.remote(agents)
        await ag.publish_async("report", ("report", inbox))
        return await inbox

    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = simulate(main, seed=seed, pulse_interval=pulse_s, timeout=DAY_S + 7200)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    reported, sent, got = result.value
    assert reported == agents and sent == got, (reported, sent, got)
    return {
        "agents": agents,
        "cpu_s": round(cpu_s, 2),
        "wall_s": round(wall_s, 2),
        "messages": sent,
        "frames": result.messages,
        "trace_hash": result.trace_hash,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--pulse", type=float, default=60.0, help="pulse interval, virtual s")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    figures = one_day(args.agents, args.seed, args.pulse)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
