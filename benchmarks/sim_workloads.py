"""Simulation workloads: Mesa's Boltzmann wealth model on actorgrid and on Mesa, side by side,
and the by-name message rates between agents that such models live on.

    python benchmarks/sim_workloads.py [--agents 10000] [--steps 100]
    python benchmarks/sim_workloads.py --rates [--messages 100000]

The actorgrid run is ``examples/wealth.py`` as a user runs it (an embedded 2-worker cluster,
keyed agents, a clock on a topic); the Mesa run is the model of Mesa's tutorial, in one
process. Both print steps/s and the Gini coefficient they reach (the two must agree within
sampling noise, about 0.6 after 100 steps). Mesa is in the ``bench`` extra only
(``pip install -e '.[bench]'``); without it, its row says so and the rest runs.

``run.py`` runs ``wealth`` as one of its workloads (agent-steps/s), and ``agent_rate_local`` and
``agent_rate_remote``: one agent sends ``ctx.send("name", i)`` as fast as it may to one on the
same worker, or on the other worker; the receiver times the messages from its first to its last
(msgs/s), and says how many it got per CPU second of its worker process (on a loaded machine the
wall-clock rate is the machine's, the CPU one the runtime's).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workloads import GET_TIMEOUT_S, register

import actorgrid as ag

WEALTH = Path(__file__).resolve().parent.parent / "examples" / "wealth.py"
FULL_SIZE = (10_000, 100)  # agents, steps
QUICK_SIZE = (200, 3)  # run.py --quick: the suite must stay short
RATE_MESSAGES = (100_000, 2_000)  # full, quick
TIMEOUT_S = 3600.0


def gini(wealth: list[int]) -> float:
    ordered = sorted(wealth)
    n, total = len(ordered), sum(ordered)
    weighted = sum((i + 1) * w for i, w in enumerate(ordered))
    return (2 * weighted) / (n * total) - (n + 1) / n


def run_actorgrid(agents: int, steps: int, workers: int = 2) -> dict[str, float]:
    """examples/wealth.py in a child process: its steps/s and Gini."""
    sizes = ["--agents", str(agents), "--steps", str(steps), "--workers", str(workers)]
    out = subprocess.run(
        [sys.executable, str(WEALTH), *sizes],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    ).stdout
    seconds = re.search(r"steps in ([\d.]+) s", out)
    coefficient = re.search(r"gini: ([\d.]+)", out)
    if seconds is None or coefficient is None:
        raise RuntimeError(f"examples/wealth.py printed no timing or Gini:\n{out}")
    return {"steps_per_s": steps / float(seconds.group(1)), "gini": float(coefficient.group(1))}


def run_mesa(agents: int, steps: int) -> dict[str, float] | None:
    """The model of Mesa's tutorial (Mesa 3); None if Mesa is not installed."""
    try:
        import mesa  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None

    class MoneyAgent(mesa.Agent):  # type: ignore[misc,unused-ignore]
        def __init__(self, model: Any) -> None:
            super().__init__(model)
            self.wealth = 1

        def step(self) -> None:
            if self.wealth > 0:
                other = self.random.choice(self.model.population)
                other.wealth += 1
                self.wealth -= 1

    class MoneyModel(mesa.Model):  # type: ignore[misc,unused-ignore]
        def __init__(self, n: int) -> None:
            super().__init__(seed=random.randrange(2**32))
            self.population = [MoneyAgent(self) for _ in range(n)]

        def step(self) -> None:
            self.agents.shuffle_do("step")

    model = MoneyModel(agents)
    started = time.perf_counter()
    for _ in range(steps):
        model.step()
    elapsed = time.perf_counter() - started
    return {
        "steps_per_s": steps / elapsed,
        "gini": gini([a.wealth for a in model.population]),
    }


@register("wealth", "wealth model (sim_workloads.py)", "agent-steps/s", ">=", 265_000)
def wealth(sizes: Any, num_workers: int) -> dict[str, Any]:
    """run.py's workload: agent-steps/s on actorgrid, with Mesa's figures beside them."""
    quick = getattr(sizes, "tasks", 10_000) < 10_000  # run.py's QUICK sizes
    agents, steps = QUICK_SIZE if quick else FULL_SIZE
    mine = run_actorgrid(agents, steps, num_workers)
    theirs = run_mesa(agents, steps)
    detail: dict[str, Any] = {"agents": agents, "steps": steps, "actorgrid": mine}
    detail["mesa"] = theirs if theirs is not None else "not installed"
    return {"value": mine["steps_per_s"] * agents, "detail": detail}


@ag.remote
async def rate_sink(ctx: ag.Context, n: int) -> dict[str, float]:
    """Receives ``n`` messages (answering "pid" asks besides): their rate, by wall clock from
    the first to the last, and per CPU second of this worker process meanwhile."""
    got = 0
    started = cpu = 0.0
    async for msg in ctx.mailbox:
        if msg == "pid":
            await ctx.reply(os.getpid())
            continue
        if got == 0:
            started, cpu = time.perf_counter(), time.process_time()
        got += 1
        if got == n:
            wall_s = time.perf_counter() - started
            cpu_s = time.process_time() - cpu
            return {"per_s": (n - 1) / wall_s, "per_cpu_s": (n - 1) / max(cpu_s, 1e-9)}
    raise RuntimeError(f"the mailbox ended after {got} of {n} messages")


@ag.remote
async def rate_source(ctx: ag.Context, target: str, n: int) -> None:
    """On "go", sends 0..n-1 to ``target`` by name as fast as it may; answers "pid" asks."""
    async for msg in ctx.mailbox:
        if msg == "pid":
            await ctx.reply(os.getpid())
        elif msg == "go":
            for i in range(n):
                await ctx.send(target, i)
            return


def agent_rate(messages: int, same_worker: bool, num_workers: int = 2) -> dict[str, Any]:
    """By-name messages/s from one agent to another, on the same worker or across two."""
    tag = "local" if same_worker else "remote"
    with ag.init(num_workers=max(num_workers, 2)):
        sink = rate_sink.options(name=f"rate-sink-{tag}").remote(messages)
        sink_pid = ag.ask(sink, "pid", timeout=GET_TIMEOUT_S)
        for attempt in range(16):  # placement spreads agents: one lands where it should
            source = rate_source.options(name=f"rate-source-{tag}-{attempt}").remote(
                f"rate-sink-{tag}", messages
            )
            if (ag.ask(source, "pid", timeout=GET_TIMEOUT_S) == sink_pid) == same_worker:
                break
        else:
            raise RuntimeError(f"no source agent was placed {tag} to the sink in 16 tries")
        ag.send(source, "go")
        rates: dict[str, float] = ag.get(sink, timeout=GET_TIMEOUT_S)
    return {"messages": messages, **rates}


def _rate_messages(sizes: Any) -> int:
    quick = getattr(sizes, "tasks", 10_000) < 10_000  # run.py's QUICK sizes
    return RATE_MESSAGES[1] if quick else RATE_MESSAGES[0]


@register(
    "agent_rate_local", "by-name messages between agents on one worker", "msgs/s", ">=", 100_000
)
def agent_rate_local(sizes: Any, num_workers: int) -> dict[str, Any]:
    r = agent_rate(_rate_messages(sizes), True, num_workers)
    return {"value": r["per_s"], "detail": r}


@register(
    "agent_rate_remote", "by-name messages between agents across workers", "msgs/s", ">=", 30_000
)
def agent_rate_remote(sizes: Any, num_workers: int) -> dict[str, Any]:
    r = agent_rate(_rate_messages(sizes), False, num_workers)
    return {"value": r["per_s"], "detail": r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=FULL_SIZE[0])
    parser.add_argument("--steps", type=int, default=FULL_SIZE[1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rates", action="store_true", help="the by-name message rates instead")
    parser.add_argument("--messages", type=int, default=RATE_MESSAGES[0])
    args = parser.parse_args()
    if args.rates:
        print(f"by-name messages between two agents, {args.messages:,} messages")
        print("| path | msgs/s | msgs per CPU s of the receiver's worker |")
        print("|---|---|---|")
        for label, same in (("same worker", True), ("across workers", False)):
            r = agent_rate(args.messages, same, args.workers)
            print(f"| {label} | {r['per_s']:,.0f} | {r['per_cpu_s']:,.0f} |")
        return
    print(f"wealth model, {args.agents:,} agents x {args.steps} steps")
    print("| system | steps/s | agent-steps/s | Gini |")
    print("|---|---|---|---|")
    rows = [("actorgrid", run_actorgrid(args.agents, args.steps, args.workers))]
    rows.append(("mesa", run_mesa(args.agents, args.steps)))
    for name, r in rows:
        if r is None:
            print(f"| {name} | not installed (pip install -e '.[bench]') | | |")
        else:
            rate = r["steps_per_s"]
            print(f"| {name} | {rate:.2f} | {rate * args.agents:,.0f} | {r['gini']:.2f} |")


if __name__ == "__main__":
    main()
