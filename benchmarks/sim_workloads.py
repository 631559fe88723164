"""Simulation workloads: Mesa's Boltzmann wealth model on actorgrid and on Mesa, side by side,
and the by-name message rates between agents that such models live on.

    python benchmarks/sim_workloads.py [--agents 10000] [--steps 100] [--seeds 10] [--per-person]
    python benchmarks/sim_workloads.py --rates [--messages 100000]

The actorgrid run is ``examples/wealth.py`` as a user runs it (an embedded 2-worker cluster,
keyed agents, a clock on a topic); the Mesa run is the model of Mesa's tutorial, in one
process. Both print steps/s and the Gini coefficient they reach, as a mean and spread over
``--seeds`` runs (the two must agree within sampling noise: about 0.632 +- 0.004 for 10,000
agents after 100 steps). Mesa is in the ``bench`` extra only
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
import re
import statistics
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
# Runs (seeds) of each system whose Gini's mean and spread are compared: the sampling noise
# of one run of 10,000 agents is about 0.004, so one run each cannot tell 0.63 from 0.62.
SEEDS = (10, 1)  # full, quick
RATE_MESSAGES = (100_000, 2_000)  # full, quick
TIMEOUT_S = 3600.0


def gini(wealth: list[int]) -> float:
    ordered = sorted(wealth)
    n, total = len(ordered), sum(ordered)
    weighted = sum((i + 1) * w for i, w in enumerate(ordered))
    return (2 * weighted) / (n * total) - (n + 1) / n


def run_actorgrid(
    agents: int, steps: int, workers: int = 2, seeds: int = 1, *extra: str
) -> dict[str, float]:
    """examples/wealth.py in a child process, ``seeds`` runs in one cluster: the mean steps/s,
    and the Gini's mean and spread (standard deviation) over the seeds."""
    sizes = ["--agents", str(agents), "--steps", str(steps), "--workers", str(workers)]
    out = subprocess.run(
        [sys.executable, str(WEALTH), *sizes, "--seeds", str(seeds), *extra],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    ).stdout
    return wealth_figures(out, steps, seeds)


def wealth_figures(out: str, steps: int, seeds: int) -> dict[str, float]:
    """What examples/wealth.py printed: steps/s, and the Gini's mean and spread."""
    seconds = re.search(r"steps in ([\d.]+) s", out)
    coefficient = re.search(r"gini: ([\d.]+)(?: \+- ([\d.]+))?", out)
    if seconds is None or coefficient is None:
        raise RuntimeError(f"examples/wealth.py printed no timing or Gini:\n{out}")
    return {
        "steps_per_s": steps / float(seconds.group(1)),
        "gini": float(coefficient.group(1)),
        "gini_sd": float(coefficient.group(2) or 0.0),
        "seeds": seeds,
    }


def run_mesa(agents: int, steps: int, seeds: int = 1) -> dict[str, float] | None:
    """The model of Mesa's tutorial (Mesa 3), ``seeds`` runs: the mean steps/s, and the
    Gini's mean and spread; None if Mesa is not installed."""
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
        def __init__(self, n: int, seed: int) -> None:
            super().__init__(seed=seed)
            self.population = [MoneyAgent(self) for _ in range(n)]

        def step(self) -> None:
            self.agents.shuffle_do("step")

    times, ginis = [], []
    for seed in range(1, seeds + 1):
        model = MoneyModel(agents, seed)
        started = time.perf_counter()
        for _ in range(steps):
            model.step()
        times.append(time.perf_counter() - started)
        ginis.append(gini([a.wealth for a in model.population]))
    return {
        "steps_per_s": steps / statistics.mean(times),
        "gini": statistics.mean(ginis),
        "gini_sd": statistics.stdev(ginis) if seeds > 1 else 0.0,
        "seeds": seeds,
    }


@register("wealth", "wealth model (sim_workloads.py)", "agent-steps/s", ">=", 265_000)
def wealth(sizes: Any, num_workers: int) -> dict[str, Any]:
    """run.py's workload: agent-steps/s on actorgrid, with Mesa's figures beside them."""
    quick = getattr(sizes, "tasks", 10_000) < 10_000  # run.py's QUICK sizes
    agents, steps = QUICK_SIZE if quick else FULL_SIZE
    seeds = SEEDS[1] if quick else SEEDS[0]
    mine = run_actorgrid(agents, steps, num_workers, seeds)
    theirs = run_mesa(agents, steps, seeds)
    detail: dict[str, Any] = {"agents": agents, "steps": steps, "actorgrid": mine}
    detail["mesa"] = theirs if theirs is not None else "not installed"
    if theirs is not None:
        detail["of_mesa"] = mine["steps_per_s"] / theirs["steps_per_s"]
    ours = f"Gini {mine['gini']:.3f} +- {mine['gini_sd']:.3f} over {seeds} seed{'s' * (seeds > 1)}"
    if theirs is None:
        detail["summary"] = f"{ours}; Mesa not installed"
    else:
        rate = theirs["steps_per_s"] * agents
        detail["summary"] = (
            f"{ours}; Mesa {rate:,.0f} agent-steps/s, Gini {theirs['gini']:.3f} +- "
            f"{theirs['gini_sd']:.3f}"
        )
    return {"value": mine["steps_per_s"] * agents, "detail": detail}


def table(agents: int, rows: list[tuple[str, dict[str, float] | None]]) -> str:
    lines = [
        "| system | steps/s | agent-steps/s | Gini (mean +- sd over seeds) |",
        "|---|---|---|---|",
    ]
    for name, r in rows:
        if r is None:
            lines.append(f"| {name} | not installed (pip install -e '.[bench]') | | |")
            continue
        rate, spread = r["steps_per_s"], f"{r['gini']:.3f} +- {r['gini_sd']:.3f} ({r['seeds']:.0f})"
        lines.append(f"| {name} | {rate:.2f} | {rate * agents:,.0f} | {spread} |")
    return "\n".join(lines)


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
    parser.add_argument("--seeds", type=int, default=SEEDS[0], help="runs of each system")
    parser.add_argument("--per-person", action="store_true", help="also one agent per person")
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
    print(f"wealth model, {args.agents:,} agents x {args.steps} steps, {args.seeds} seeds each")
    rows = [("actorgrid", run_actorgrid(args.agents, args.steps, args.workers, args.seeds))]
    if args.per_person:
        row = run_actorgrid(args.agents, args.steps, args.workers, args.seeds, "--per-person")
        rows.append(("actorgrid --per-person", row))
    rows.append(("mesa", run_mesa(args.agents, args.steps, args.seeds)))
    print(table(args.agents, rows))


if __name__ == "__main__":
    main()
