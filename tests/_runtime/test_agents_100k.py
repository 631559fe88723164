"""Agents by the hundred thousand (issue 13): named coroutine agents on a 2-worker embedded
cluster, created, each reached by name once, and the cluster shut down with all of them alive.

The size is ``ACTORGRID_SCALE_AGENTS`` (default SCALE_AGENTS_DEFAULT, which keeps it inside the
suite's time budget). At 100,000 it is bound by creation: ~0.33-0.37 ms of CPU per agent on a
2-core machine, ~0.1 ms of it the driver's (its ``.remote()`` calls, and its head: name claims
come in one ClaimNames per loop turn, first lookups in one LookupNames) and ~0.1-0.12 ms each
worker's. Its runs at 100,000 (issue 13, with inbox.py): at a load average of ~4, created in
47.2 s, each reached by name once, stopped in 8.9 s, 95 s in all. With batched names and a
stopping head that frees nothing name by name (issue 13, mass5), at a load average of ~4:
created in 28.9 s, stopped in 8.2 s, 68 s in all (main, run just after it: 75.3 s, 9.6 s, 129
s); merged with main, at a load average of ~1.5: created in 16.3 s, stopped in 6.5 s, 41 s in
all (~0.33 ms of CPU per agent: driver 0.12, of it 0.1 its .remote() calls; each worker 0.1).
Earlier runs of it at a load average of ~6.5-7.5 (seven test runs on the 2 cores): created in
47.5-68.1 s, stopped in 10.3-15.7 s, over SHUTDOWN_S. At a load average of 10-16 (six other
test runs on the machine), each of four runs lost a worker: killed as a zombie (no pulse for 5
s) once mid-stop (a stopping node now kills none: node.py) and once in the by-name round; twice
gone with no zombie line seen (not understood yet). Every batch of work per loop turn that
these sizes showed is bounded (starting.py, names.release_gradually, Portal._drain,
ExecutorTasks.interrupt_all, the fan-out of a publish, peer.py's parked senders).
"""

from __future__ import annotations

import logging
import os
import time

import pytest
from conftest import ProcessWatch

import actorgrid as ag

SCALE_AGENTS_DEFAULT = 10_000
AGENTS = int(os.environ.get("ACTORGRID_SCALE_AGENTS", SCALE_AGENTS_DEFAULT))
# Generous: creation runs at ~400 agents/s on a 2-core machine shared with other test runs.
DEADLINE_S = 60 + AGENTS / 150
# The goal is 2 s; on a loaded machine the stop of 100,000 agents takes longer, but
# never the 5 s after which a silent worker is killed as a zombie (checked in the log too).
SHUTDOWN_S = 10.0
GO = "go-by-name"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(DEADLINE_S + 60)]


@ag.remote
async def member(ctx: ag.Context, i: int, n: int, tally: str) -> int:
    ctx.subscribe(GO)
    await ctx.send(tally, ("up", i))
    got = -1
    async for msg in ctx.mailbox:
        if msg == "go":
            await ctx.send(f"m{(i + 1) % n}", i)  # by name: its worker asks the head once
        elif msg == "stop":
            return got
        else:
            got = msg
            await ctx.send(tally, ("got", i, msg))
    return got


@ag.remote
async def tally(ctx: ag.Context, n: int) -> None:
    """Counts "up"s and "got"s; asked ``("wait", kind, k)``, replies once ``k`` of that kind came,
    with the wrong deliveries seen so far."""
    up: set[int] = set()
    got: dict[int, int] = {}
    wrong: list[tuple[int, int]] = []
    waiting: list[tuple[str, int, ag.Request]] = []
    async for msg in ctx.mailbox:
        if msg[0] == "up":
            up.add(msg[1])
        elif msg[0] == "got":
            _, i, sender = msg
            if i in got or sender != (i - 1) % n:
                wrong.append((i, sender))
            got[i] = sender
        else:  # ("wait", kind, k), asked
            assert ctx.request is not None
            waiting.append((msg[1], msg[2], ctx.request))
        for item in list(waiting):
            kind, k, request = item
            if len(up if kind == "up" else got) >= k:
                waiting.remove(item)
                request.reply(wrong)


def _zombie_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "zombie" in r.getMessage()]


def test_agents_created_and_each_reached_by_name_once(
    caplog: pytest.LogCaptureFixture, processes: ProcessWatch
) -> None:
    caplog.set_level(logging.WARNING)
    n = AGENTS
    start = time.monotonic()
    with ag.init(num_workers=2) as cluster:
        pids = [w.pid for w in cluster.workers()]
        processes.add(pids)
        tally.options(name="tally").remote(n)
        for i in range(n):
            member.options(name=f"m{i}").remote(i, n, "tally")
        assert ag.ask("tally", ("wait", "up", n), timeout=DEADLINE_S) == []
        created_s = time.monotonic() - start
        ag.publish(GO, "go")  # each sends its number to the next agent, by name
        wrong = ag.ask("tally", ("wait", "got", n), timeout=DEADLINE_S)
        assert wrong == []  # every agent got exactly one message, from the one before it
        kinds = {e.kind for e in cluster.recent_events()}
        assert not kinds & {"worker_zombie", "node_zombie", "worker_died", "worker_left"}
        assert [w.pid for w in cluster.workers()] == pids
        stopping = time.monotonic()
    stopped_s = time.monotonic() - stopping
    print(f"{n} agents: created in {created_s:.1f} s, stopped in {stopped_s:.1f} s")
    processes.wait_gone()
    assert stopped_s < SHUTDOWN_S  # with every agent still running
    assert _zombie_lines(caplog) == []
