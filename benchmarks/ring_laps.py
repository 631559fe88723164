"""Each lap of a ring of named agents, and where the first lap's time goes.

    python benchmarks/ring_laps.py [--agents 8] [--laps 200] [--workers 2]

The ``ring`` workload of ``run.py`` (named coroutine agents pass one counter round by
``ctx.send``), timed per lap: agent 0 notes ``time.perf_counter()`` (the same CLOCK_MONOTONIC
in every process of the machine) each time the counter reaches it. The first lap differs from
the others: each agent's first send looks its target's name up at the head (one agent after
another round the ring), and the first message each way between two workers may wait for their
link. For the first lap it prints, per hop: when the counter arrived (after ``ag.send`` from the
driver), how long the agent's send took, and how much of it was the name lookup (the time in
``RuntimeNames._ask_batched``, patched in each worker). Then the first, second and median lap.
The counter first waits for the agents to start: that is the "driver to agent 0" figure.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

import actorgrid as ag


@ag.remote
async def lap_agent(ctx: ag.Context, me: int, n: int, hops: int) -> list[tuple[Any, ...]]:
    from actorgrid._runtime.names import RuntimeNames

    rt: Any = ctx._runtime
    if not hasattr(RuntimeNames, "lookups_timed"):  # once per worker: its agents share it
        plain = RuntimeNames._ask_batched
        timed: list[tuple[str, float]] = []

        async def ask(self: Any, key: tuple[str, str]) -> Any:
            started = time.perf_counter()
            try:
                return await plain(self, key)
            finally:
                timed.append((key[1], time.perf_counter() - started))

        RuntimeNames._ask_batched = ask  # type: ignore[method-assign]
        RuntimeNames.lookups_timed = timed  # type: ignore[attr-defined]
    lookups: list[tuple[str, float]] = RuntimeNames.lookups_timed  # type: ignore[attr-defined]
    target = f"lap{(me + 1) % n}"
    notes: list[tuple[Any, ...]] = []
    async for msg in ctx.mailbox:
        arrived = time.perf_counter()
        if msg >= hops:  # the end: passed on round the ring once, so that all return
            if msg < hops + n - 1:
                await ctx.send(target, msg + 1)
            return notes
        await ctx.send(target, msg + 1)
        if msg < n:
            asked = [s for name, s in lookups if name == target]
            sent_s = time.perf_counter() - arrived
            notes.append((msg, arrived, sent_s, sum(asked), len(asked), rt.address))
        elif me == 0:
            notes.append((msg, arrived))
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--laps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    n, hops = args.agents, args.agents * args.laps
    with ag.init(num_workers=args.workers):
        refs = [lap_agent.options(name=f"lap{i}").remote(i, n, hops) for i in range(n)]
        started = time.perf_counter()
        ag.send("lap0", 0)
        notes = sorted(note for got in ag.get(refs, timeout=120) for note in got)
        total = time.perf_counter() - started
    print(f"{n} agents, {hops:,} hops on {args.workers} workers: {hops / total:,.0f} hops/s")
    print(
        "first lap: hop, arrived (ms after ag.send), send (ms), of which lookup (ms), "
        "lookups asked (more than 1: the name was not at the head yet), worker"
    )
    for msg, arrived, send_s, lookup_s, asked, where in (note for note in notes if len(note) > 2):
        print(
            f"  {msg:3d}  {(arrived - started) * 1e3:8.2f}  {send_s * 1e3:7.2f}  "
            f"{lookup_s * 1e3:7.2f}  {asked}  {where}"
        )
    at_zero = [note[1] for note in notes if note[0] % n == 0]
    laps = [b - a for a, b in itertools.pairwise(at_zero)]
    print(
        f"driver to agent 0: {(at_zero[0] - started) * 1e3:.2f} ms; first lap "
        f"{laps[0] * 1e3:.2f} ms, second {laps[1] * 1e3:.2f} ms, median of the rest "
        f"{statistics.median(laps[2:]) * 1e3:.3f} ms"
    )
    rest = sorted(laps[2:])
    print(
        f"the rest: mean {statistics.fmean(rest) * 1e3:.3f} ms, 90th percentile "
        f"{rest[len(rest) * 9 // 10] * 1e3:.3f} ms, slowest {rest[-1] * 1e3:.2f} ms; "
        f"from agent 0's last note to the driver's return {(total - (at_zero[-1] - started)) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
