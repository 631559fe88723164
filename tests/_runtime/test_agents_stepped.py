"""A busy agent stepped in the turn of the link's reader that put its message in its mailbox
(stepping.py): its code sees its own Trio task throughout, checkpoints and cancel scopes in
its handler work as in a turn of its own, what one sender sends arrives in order, an exception
restarts it on the same mailbox, and a kill or a cancel stops it while it awaits.

On a real 1-worker cluster, messages from the driver arrive over TCP, so the worker's reader
for the driver's link is the one that wakes the agent. The agent is asked BUSY_WAKES times
and more, so that it has a Trio task of its own (agenthost.py) and each ask wakes that task.
Each answer says whether the code ran in a reader's step (``_stepped``: ``stepping._step`` is
on the stack under it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import trio
from conftest import ProcessWatch

import actorgrid as ag
from actorgrid._runtime.agentruns import BUSY_WAKES

pytestmark = pytest.mark.timeout(120)

# Asks that make the agent busy (a task of its own), then asks that are stepped.
WARM = BUSY_WAKES * 3
ASKS = 60


def _stepped() -> bool:
    """Whether this code runs in a reader's step of its task (stepping.py)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_step" and frame.f_globals.get("__name__", "").endswith(
            "stepping"
        ):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


@ag.remote
async def pid_of(ctx: ag.Context) -> None:
    import os

    async for _ in ctx.mailbox:
        await ctx.reply(os.getpid())


@ag.remote(max_restarts=2)
async def busy(ctx: ag.Context) -> None:
    """Counts what it gets; for each ask replies (n, got, stepped, task the same before and
    after a checkpoint and a cancelled scope, id of its task). "boom" raises; "hang" awaits
    forever (until it is killed or cancelled)."""
    n = 0
    async for msg in ctx.mailbox:
        if msg == "boom":
            raise ValueError("boom")
        if msg == "hang":
            await ctx.reply("hanging")
            await trio.sleep_forever()
        stepped = _stepped()
        task = trio.lowlevel.current_task()
        await trio.lowlevel.checkpoint()
        with trio.CancelScope() as scope:
            scope.cancel()
            await trio.sleep(3600)
        with trio.move_on_after(3600):
            await trio.sleep(0)
        same = trio.lowlevel.current_task() is task and scope.cancelled_caught
        n += 1
        await ctx.reply((n, msg, stepped, same, id(task)))


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    watch = ProcessWatch()
    try:
        with ag.init(num_workers=1):
            watch.add([ag.ask(pid_of.remote(), "pid", timeout=60)])
            yield
        watch.wait_gone()
    finally:
        watch.kill_leftovers()


def _ask_all(agent: object, first: int, count: int) -> list[tuple[int, int, bool, bool, int]]:
    return [ag.ask(agent, first + i, timeout=60) for i in range(count)]


def test_a_busy_agent_is_stepped_in_its_own_task_in_order(cluster: None) -> None:
    agent = busy.remote()
    try:
        warm = _ask_all(agent, 0, WARM)
        answers = _ask_all(agent, WARM, ASKS)
        assert [(n, got) for n, got, *_ in warm + answers] == [
            (i + 1, i) for i in range(WARM + ASKS)
        ]
        assert all(same for *_, same, _ in warm + answers)
        # Busy: one task of its own from then on, and its code run in the reader's turn
        # (most asks: a machine's noise may leave one to Trio, which runs it as well).
        assert len({task for *_, task in answers}) == 1
        assert sum(stepped for _, _, stepped, _, _ in answers) >= ASKS // 2
    finally:
        ag.kill(agent)


def test_a_stepped_agent_that_raises_restarts_on_its_mailbox(cluster: None) -> None:
    agent = busy.remote()
    try:
        assert _ask_all(agent, 0, WARM)[-1][0] == WARM
        ag.send(agent, "boom")
        after = _ask_all(agent, 100, ASKS)  # queued behind the boom: its next run takes them
        assert [(n, got) for n, got, *_ in after] == [(i + 1, 100 + i) for i in range(ASKS)]
        assert all(same for *_, same, _ in after)
    finally:
        ag.kill(agent)


@pytest.mark.parametrize("stop", ["kill", "cancel"])
def test_a_stepped_agent_awaiting_in_its_handler_stops(cluster: None, stop: str) -> None:
    agent = busy.remote()
    _ask_all(agent, 0, WARM)
    assert ag.ask(agent, "hang", timeout=60) == "hanging"
    if stop == "kill":
        ag.kill(agent)
        with pytest.raises(ag.ActorDiedError, match="was killed"):
            ag.get(agent, timeout=60)
    else:
        ag.cancel(agent)
        with pytest.raises(ag.TaskCancelledError):
            ag.get(agent, timeout=60)


@ag.remote
async def ring_hop(ctx: ag.Context, me: int, n: int, hops: int) -> int:
    async for msg in ctx.mailbox:
        if msg >= hops:
            return int(msg)
        await ctx.send(f"stepped-ring{(me + 1) % n}", msg + 1)
    return -1


def test_a_ring_on_one_worker_goes_round_while_the_worker_answers(cluster: None) -> None:
    """Each hop wakes the next agent in the stepped agent's turn, stepped after it: at most
    a turn's worth of them (stepping._STEPS_MAX), then Trio's loop runs, so the worker still
    answers others while the ring goes round."""
    n, hops = 4, 3000
    refs = [ring_hop.options(name=f"stepped-ring{i}").remote(i, n, hops) for i in range(n)]
    other = busy.remote()
    try:
        ag.send("stepped-ring0", 0)
        answers = _ask_all(other, 0, 20)  # asked as the ring starts
        ready, _ = ag.wait(refs, num_returns=1, timeout=60)
        assert ag.get(ready, timeout=60) == [hops]
        assert [got for _, got, *_ in answers] == list(range(20))
    finally:
        for ref in [*refs, other]:
            ag.kill(ref)
