"""Named coroutine agents at scale: create rate, RSS per idle agent, by-name messages/s.

The rumour workload of issue 13, written as a user would: N named agents, each knowing three
others by name. One publish on a topic starts a rumour at every agent with ``--hops`` to go;
an agent that gets a rumour passes it on, by name, to the next of its three peers, until its
hops run out; then it tells the counter. Messages/s counts those by-name sends between agents.

    python benchmarks/agents_scale.py --agents 1000 10000 100000 [--workers 2]

Prints one markdown row per size: agents, create (agents/s, from the first ``.remote()`` until
every agent has said it runs), the driver's CPU time per agent created (its own process, head
included in the embedded cluster: less disturbed by a loaded machine than the rate), RSS per
idle agent (driver plus workers, QUIET_S after creation, minus before), by-name messages/s,
RSS per agent again QUIET_S after the round's messages are all delivered (the agents idle and
parked again: what a round of wakes left behind), and the seconds it takes to end them all by name from the driver
(``ag.send(name, "stop")``). Under each row, the two RSS figures per process (driver, then
each worker), and the workers' CPU time per message of the round (all of it counted, messages
to the counter too: less disturbed by a loaded machine than the rate).

``--trace K``: also print what the driver process (the head included, in the embedded
cluster) keeps per agent, from tracemalloc snapshots taken before and after creating them,
grouped by file:line, the K biggest lines (slower, and its RSS column counts tracemalloc's
own tables: compare RSS only between untraced runs). ``--trace-workers K``: the same on each
worker, across the round (what the round left there: the names its agents sent to, cached,
and their flow-control entries), with the names cached and the entries left.

``--heap-workers``: also print, on each worker after creation and after the round, where its
RSS lies: pymalloc's arenas (1 MiB each), the bytes of live blocks in them, of free blocks
in pools in use and of empty pools (both kept in the RSS while their arena holds one live
block), and the RSS after a ``malloc_trim`` (what glibc's own heap held free). The row's RSS
after the round is then read after that probe and trim: compare it with plain runs only.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from typing import Any

import psutil

import actorgrid as ag

TOPIC = "rumour-start"
# How long the agents idle before their RSS is read, after creation and after the round: on a
# worker below ACTORGRID_PARK_FROM actors an agent parks 0.5 to 1 s after its last message
# (PARK_IDLE_S), plus the check's own time; the round is measured on parked agents too.
QUIET_S = 2.0


@ag.remote
async def gossip(ctx: ag.Context, me: int, n: int, prefix: str, counter: str) -> int:
    peers = [f"{prefix}{(me * 7 + k * 31 + 1) % n}" for k in range(3)]
    ctx.subscribe(TOPIC)
    await ctx.send(counter, "up")
    turn = 0
    passed = 0
    async for msg in ctx.mailbox:
        if msg == "stop":
            return passed
        if msg > 0:
            await ctx.send(peers[turn], msg - 1)
            turn = (turn + 1) % 3
            passed += 1
        else:
            await ctx.send(counter, "done")
    return passed


@ag.remote
async def counter(ctx: ag.Context) -> None:
    counts = {"up": 0, "done": 0}
    waiting: list[tuple[str, int, ag.Request]] = []
    async for msg in ctx.mailbox:
        if isinstance(msg, tuple):  # asked: reply once ``count[kind]`` reaches ``n``
            kind, n = msg
            assert ctx.request is not None
            waiting.append((kind, n, ctx.request))
        else:
            counts[msg] += 1
        for item in [w for w in waiting if counts.get(w[0], 0) >= w[1]]:
            waiting.remove(item)
            counts[item[0]] -= item[1]
            item[2].reply(item[1])


def rss_mb() -> dict[str, float]:
    """RSS in MB of this process ("driver") and of each process under it, by pid."""
    me = psutil.Process()
    sizes = {"driver": me.memory_info().rss / 1e6}
    for child in me.children(recursive=True):
        try:
            sizes[str(child.pid)] = child.memory_info().rss / 1e6
        except psutil.Error:
            pass
    return sizes


def workers_cpu_s() -> float:
    """CPU seconds the processes under this one have used so far (the workers, the template)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def kb_per_agent(now: dict[str, float], before: dict[str, float], n: int) -> dict[str, float]:
    """KB per agent each process gained since ``before`` (one that started since: all of it)."""
    return {k: (mb - before.get(k, 0.0)) * 1000 / n for k, mb in now.items()}


def traced_per_agent(before: tracemalloc.Snapshot, n: int, top: int) -> None:
    """Print the bytes per agent the driver gained since ``before``, by file:line."""
    gc.collect()
    diff = tracemalloc.take_snapshot().compare_to(before, "lineno")
    total = sum(d.size_diff for d in diff)
    print(f"driver + head, traced: {total / n:,.0f} B per agent; by line:")
    for d in diff[:top]:
        frame = d.traceback[0]
        where = frame.filename.rsplit("actorgrid/", 1)[-1]
        print(f"  {d.size_diff / n:7.1f} B  {d.count_diff / n:5.2f} blocks  {where}:{frame.lineno}")


def start_worker_trace() -> None:
    """On a worker: a tracemalloc snapshot to compare with (``end_worker_trace``)."""
    import builtins

    gc.collect()
    tracemalloc.start()
    builtins._agents_scale_snapshot = tracemalloc.take_snapshot()  # type: ignore[attr-defined]


def end_worker_trace(n: int, top: int) -> str:
    """On a worker: what it gained since ``start_worker_trace``, per agent, by file:line."""
    import builtins

    from actorgrid._runtime.core import current_runtime

    gc.collect()
    before = builtins._agents_scale_snapshot  # type: ignore[attr-defined]
    diff = tracemalloc.take_snapshot().compare_to(before, "lineno")
    tracemalloc.stop()
    del builtins._agents_scale_snapshot  # type: ignore[attr-defined]
    rt = current_runtime()
    peers = list(rt.peers.values())
    entries = sum(len(p.send_credits) + len(p.receive_credits) for p in peers)
    total = sum(d.size_diff for d in diff)
    lines = [
        f"worker {os.getpid()}, traced: {total / n:,.0f} B per agent; {len(rt.names):,} names "
        f"cached; {entries:,} flow-control entries on its outbound links; by line:"
    ]
    for d in diff[:top]:
        frame = d.traceback[0]
        where = frame.filename.rsplit("actorgrid/", 1)[-1]
        lines.append(
            f"  {d.size_diff / n:7.1f} B  {d.count_diff / n:5.2f} blocks  {where}:{frame.lineno}"
        )
    return "\n".join(lines)


_HEAP_STATS = {
    "arenas allocated current": "arenas",
    "bytes in allocated blocks": "live",
    "bytes in available blocks": "free in pools",
    "unused pools": "empty pools",
}


def worker_heap(when: str) -> str:
    """On a worker: its RSS and pymalloc's breakdown of it (``sys._debugmallocstats``, which
    writes to fd 2: sent to a file meanwhile), then its RSS after ``malloc_trim``."""
    import sys
    import tempfile

    from actorgrid._runtime.heaptrim import trim_heap

    rss_kb = psutil.Process().memory_info().rss // 1024
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        stats = {}
        for line in out:
            for key, label in _HEAP_STATS.items():
                if key in line and label not in stats:
                    stats[label] = int(line.rsplit("=", 1)[1].replace(",", ""))
    trim_heap()
    trimmed_kb = psutil.Process().memory_info().rss // 1024
    figures = ", ".join(
        f"{label} {value:,}" if label == "arenas" else f"{label} {value // 1024:,} KB"
        for label, value in stats.items()
    )
    return (
        f"  worker {os.getpid()} {when}: RSS {rss_kb:,} KB ({figures}); trimmed {trimmed_kb:,} KB"
    )


def run(
    n: int, hops: int, workers: int, trace: int = 0, trace_workers: int = 0, heap: bool = False
) -> dict[str, Any]:
    with ag.init(num_workers=workers):
        prefix = f"g{os.getpid()}-"
        counter.options(name="counter").remote()
        ag.ask("counter", ("up", 0), timeout=60)
        before = rss_mb()
        if trace:
            gc.collect()
            tracemalloc.start()
            traced = tracemalloc.take_snapshot()
        start = time.perf_counter()
        cpu = time.process_time()
        refs = [
            gossip.options(name=f"{prefix}{i}").remote(i, n, prefix, "counter") for i in range(n)
        ]
        ag.ask("counter", ("up", n), timeout=3600)
        create_s = time.perf_counter() - start
        cpu_us = (time.process_time() - cpu) * 1e6 / n
        time.sleep(QUIET_S)
        created = kb_per_agent(rss_mb(), before, n)
        if trace:
            traced_per_agent(traced, n, trace)
            tracemalloc.stop()
        if heap:
            print("\n".join(ag.run_on_each_worker(worker_heap, "after creation").values()))
        if trace_workers:
            ag.run_on_each_worker(start_worker_trace)
        start = time.perf_counter()
        cpu_before = workers_cpu_s()
        ag.publish(TOPIC, hops)
        ag.ask("counter", ("done", n), timeout=3600)
        msg_s = time.perf_counter() - start
        round_cpu_s = workers_cpu_s() - cpu_before
        time.sleep(QUIET_S)  # as after creation: what the round left, once its agents parked
        rounded = kb_per_agent(rss_mb(), before, n)
        if heap:
            print("\n".join(ag.run_on_each_worker(worker_heap, "after the round").values()))
        if trace_workers:
            for report in ag.run_on_each_worker(end_worker_trace, n, trace_workers).values():
                print(report)
        start = time.perf_counter()
        for i in range(n):
            ag.send(f"{prefix}{i}", "stop")
        ag.get(refs, timeout=3600)
        end_s = time.perf_counter() - start
    return {
        "agents": n,
        "create_per_s": n / create_s,
        "driver_cpu_us": cpu_us,
        "kb_per_agent": sum(created.values()),
        "msgs_per_s": n * hops / msg_s,
        "workers_cpu_us_per_msg": round_cpu_s * 1e6 / (n * hops),
        "kb_after_round": sum(rounded.values()),
        "end_s": end_s,
        "created_by_process": created,
        "rounded_by_process": rounded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--hops", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trace", type=int, default=0, metavar="K")
    parser.add_argument("--trace-workers", type=int, default=0, metavar="K")
    parser.add_argument("--heap-workers", action="store_true")
    args = parser.parse_args()
    print(
        "| agents | create | driver CPU per agent | RSS per agent | by-name msgs/s "
        "| RSS per agent after the round | ending all |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in args.agents:
        r = run(n, args.hops, args.workers, args.trace, args.trace_workers, args.heap_workers)
        print(
            f"| {n:,} | {r['create_per_s']:,.0f}/s | {r['driver_cpu_us']:.0f} µs "
            f"| {r['kb_per_agent']:.1f} KB "
            f"| {r['msgs_per_s']:,.0f} | {r['kb_after_round']:.1f} KB | {r['end_s']:.1f} s |",
            flush=True,
        )
        created, rounded = r["created_by_process"], r["rounded_by_process"]
        print(
            "  KB per agent by process, after creation / after the round: "
            + ", ".join(f"{k} {created[k]:.1f} / {rounded.get(k, 0.0):.1f}" for k in created)
            + f"; workers' CPU per message of the round: {r['workers_cpu_us_per_msg']:.0f} µs",
            flush=True,
        )


if __name__ == "__main__":
    main()
