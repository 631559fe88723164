"""Agents on a small worker (below ACTORGRID_PARK_FROM actors, agenthost.py): every agent parks
from its first wait on an empty mailbox; one that gets busy (woken BUSY_WAKES times between two
idle checks) gets a Trio task of its own and keeps it while messages keep coming, never parked
in the middle of a burst; once it has taken no message for PARK_IDLE_S it parks again. Through
all of it, what one sender sends arrives in order.

On a real 1-worker cluster: a feeder agent sends a numbered burst to a recorder agent on the
same worker, a message every few milliseconds for several idle checks; the recorder logs, per
message, the Trio task it runs in (a user sees a park as its code running in the worker's
resumer after it, and a task of its own as one task throughout).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import trio
from conftest import ProcessWatch

import actorgrid as ag
from actorgrid._runtime.agentruns import BUSY_WAKES, PARK_IDLE_S

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# The burst: messages, and the pause between two (many more than BUSY_WAKES per idle check,
# and lasting several checks: PARK_IDLE_S / 2 apart).
BURST = 150
GAP_S = 0.01
# Idle spells of PARK_IDLE_S to wait for the recorder to park (it parks within one on an idle
# worker; more only on a loaded machine, whose loop is late).
IDLE_TRIES = 30


def _where() -> tuple[str, int]:
    task = trio.lowlevel.current_task()
    return task.name.rsplit(".", 1)[-1], id(task)


@ag.remote
async def recorder(ctx: ag.Context) -> None:
    """Logs (number, task name, task id) for each number it gets; asked "log", replies with
    the log and clears it; asked "where", replies with its task's name."""
    log: list[tuple[int, str, int]] = []
    async for msg in ctx.mailbox:
        if msg == "log":
            await ctx.reply(log)
            log = []
        elif msg == "where":
            await ctx.reply(_where()[0])
        else:
            log.append((msg, *_where()))


@ag.remote
async def feeder(ctx: ag.Context) -> None:
    """Asked ``(name, n)``: sends 0..n-1 to ``name``, GAP_S apart, then replies."""
    async for msg in ctx.mailbox:
        name, n = msg
        for i in range(n):
            await ctx.send(name, i)
            await trio.sleep(GAP_S)
        await ctx.reply(n)


@pytest.fixture
def small_worker() -> Iterator[None]:
    watch = ProcessWatch()
    try:
        with ag.init(num_workers=1):
            yield
            watch.add(p.pid for p in _children())
        watch.wait_gone()
    finally:
        watch.kill_leftovers()


def _children() -> list[object]:
    import psutil

    return list(psutil.Process().children(recursive=True))


def _ask(target: object, msg: object) -> object:
    return ag.ask(target, msg, timeout=60)


def _burst_keeps_one_task(sink: object, feed: object) -> None:
    """A burst from ``feed`` to ``sink``, parked before it: every number in order; from the
    first message ``sink`` handled in a task of its own, all in that one task."""
    assert _ask(feed, ("rec", BURST)) == BURST
    log = _ask(sink, "log")
    assert [n for n, _, _ in log] == list(range(BURST))
    own = [i for i, (_, name, _) in enumerate(log) if name == "_live"]
    assert own, f"never given a task of its own: {log[: BUSY_WAKES + 2]}"
    # Parked until then (resumed by the worker's resumers), and never parked after.
    assert {name for _, name, _ in log[: own[0]]} <= {"_resume_inline"}
    assert own == list(range(own[0], BURST))
    assert len({task for _, _, task in log[own[0] :]}) == 1


def _parks_once_idle(sink: object) -> None:
    for _ in range(IDLE_TRIES):
        time.sleep(PARK_IDLE_S)  # idle this long, it parks (checked every PARK_IDLE_S / 2)
        if _ask(sink, "where") == "_resume_inline":
            return
    pytest.fail(f"still not parked after {IDLE_TRIES} idle spells of {PARK_IDLE_S} s")


def test_a_busy_agent_keeps_a_task_of_its_own_until_it_idles(small_worker: None) -> None:
    sink = recorder.options(name="rec").remote()
    feed = feeder.remote()
    assert _ask(sink, "where") in ("_start_inline", "_resume_inline")  # a race: parked or not
    assert _ask(sink, "where") == "_resume_inline"  # parked from its first wait, idle
    _burst_keeps_one_task(sink, feed)
    _parks_once_idle(sink)
    # Busy again: a task of its own again, with nothing lost or reordered across the park.
    _burst_keeps_one_task(sink, feed)
    _parks_once_idle(sink)
    ag.kill(sink)
    with pytest.raises(ag.ActorDiedError, match="was killed"):
        ag.get(sink, timeout=60)
