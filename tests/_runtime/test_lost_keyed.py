"""Messages to keyed (virtual) agents are never lost silently with their worker, against real
processes (``_runtime/confirms.py``, ``keyed.py``): fire-and-forget messages by key that were
in the agent's mailbox or on the link when its worker was killed (SIGKILL) are counted by
their sender (``Cluster.lost_sends``) and reported as a ``sends_lost`` event naming the key;
an ask by key in flight raises ``ActorDiedError`` at the asker (it is not sent again: the
agent may have acted on it); the next message activates the agent on a live worker."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import watched_init
from losses import lost_events, pid_in, unconfirmed, wait_until

import actorgrid as ag
from actorgrid._runtime import current

PULSE_S = 0.2


@pytest.fixture
def grid(processes) -> Iterator[ag.Cluster]:
    with watched_init(processes, num_workers=2, pulse_interval=PULSE_S, grace_s=1.0) as cluster:
        yield cluster


@ag.remote
async def gate(ctx: ag.Context) -> None:
    """``("hold", path)``: writes its pid to ``path`` and holds (until its worker is
    killed); ``"count?"``/``"pid?"`` (asked): how many it took, its pid; else counts."""
    got = 0
    async for msg in ctx.mailbox:
        if msg == "count?":
            await ctx.reply(got)
        elif msg == "pid?":
            await ctx.reply(os.getpid())
        elif isinstance(msg, tuple):
            Path(msg[1]).write_text(str(os.getpid()))
            await trio.sleep(60)  # killed long before this ends
        else:
            got += 1


def _key() -> Any:
    return gate.key(uuid.uuid4().hex[:12])


def test_messages_by_key_in_the_mailbox_when_its_worker_is_killed_are_reported(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    key = _key()
    ag.send(key, ("hold", str(tmp_path / "held")))
    for i in range(4):
        ag.send(key, i)  # in the mailbox behind the held one
    pid = pid_in(tmp_path / "held", processes)
    wait_until("the first message confirmed", lambda: unconfirmed() == 4)
    os.kill(pid, signal.SIGKILL)
    wait_until("four reported lost", lambda: sum(e.count for e in lost_events(grid)) == 4)
    assert grid.lost_sends == 4
    (event,) = lost_events(grid)
    assert event.name == repr(key)
    assert event.detail.startswith(f"4 fire-and-forget messages to actor {key!r} were lost")
    # Its next message activates it again, on a live worker, once the cluster has noticed.
    wait_until("the worker gone", lambda: pid not in [w.pid for w in grid.workers()])
    assert ag.ask(key, "pid?", timeout=30) in {w.pid for w in grid.workers()}


def test_an_ask_by_key_in_flight_when_its_worker_is_killed_raises_at_the_asker(
    grid: ag.Cluster, tmp_path: Path, processes
) -> None:
    key = _key()
    ag.send(key, ("hold", str(tmp_path / "held")))
    pid = pid_in(tmp_path / "held", processes)
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(ag.ask, key, "count?", timeout=60)  # behind the held message
        wait_until("the ask sent", lambda: _asks_waiting() == 1)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ag.ActorDiedError, match="unreachable"):
            asked.result(timeout=60)


def undelivered_events(grid: ag.Cluster) -> list[Any]:
    return [e for e in grid.recent_events() if e.kind == "message_undelivered"]


def _asks_waiting() -> int:
    rt: Any = current.get()
    return sum(len(p._requests) for p in list(rt.peers.values()))


def test_no_loss_is_reported_when_every_message_by_key_was_taken_before_the_kill(
    grid: ag.Cluster, processes
) -> None:
    key = _key()
    for i in range(5):
        ag.send(key, i)
    assert ag.ask(key, "count?", timeout=30) == 5
    wait_until("the worker confirmed them", lambda: unconfirmed() == 0)
    pid = ag.ask(key, "pid?", timeout=30)
    processes.add([pid])
    os.kill(pid, signal.SIGKILL)
    wait_until("the worker gone", lambda: pid not in [w.pid for w in grid.workers()])
    assert ag.ask(key, "count?", timeout=30) == 0  # a new activation: the old one was lost
    assert grid.lost_sends == 0
    assert lost_events(grid) == []


@ag.remote
async def fragile(ctx: ag.Context) -> None:
    """``("raise", n)``: raises once ``n`` more messages wait in its mailbox; ``"pid?"``."""
    async for msg in ctx.mailbox:
        if msg == "pid?":
            await ctx.reply(os.getpid())
        elif isinstance(msg, tuple):
            while ctx.mailbox.statistics().queued < msg[1]:
                await trio.sleep(0.01)  # until the test's messages have all come
            raise RuntimeError("boom")


def test_what_a_keyed_agent_that_raised_left_in_its_mailbox_is_refused_to_its_senders(
    grid: ag.Cluster,
) -> None:
    key = fragile.key(uuid.uuid4().hex[:12])
    ag.send(key, ("raise", 3))
    ag.send(key, 1)
    ag.send(key, 2)
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(ag.ask, key, "pid?", timeout=60)  # the third: it never answers
        with pytest.raises(ag.ActorDiedError, match="raised"):
            asked.result(timeout=60)
    wait_until("two reported undelivered", lambda: grid.undelivered_messages == 2)
    wait_until("every message accounted for", lambda: unconfirmed() == 0)
    # Named as users name the agent, with why: not by a short id they never saw.
    wait_until("two events", lambda: len(undelivered_events(grid)) == 2)
    for event in undelivered_events(grid):
        assert event.detail.startswith(f"a message to actor {key!r} was not delivered: ")
        assert event.detail.endswith("raised")
    assert grid.lost_sends == 0
    assert ag.ask(key, "pid?", timeout=30) in {w.pid for w in grid.workers()}  # it comes back


@ag.remote
async def selfish(ctx: ag.Context) -> None:
    """``(key, n)``: sends ``n`` messages to ``key`` (its own: from its worker, straight into
    its mailbox), then raises with them unread."""
    async for msg in ctx.mailbox:
        key, n = msg
        for i in range(n):
            await ctx.send(key, i)
        raise RuntimeError("boom")


def test_what_a_keyed_agent_that_raised_left_from_its_own_worker_is_reported_undelivered(
    grid: ag.Cluster,
) -> None:
    # Its sender is on its worker (the agent itself): the messages never left that process,
    # and that worker reports them as undelivered, with why, as it does a named agent's.
    key = selfish.key(uuid.uuid4().hex[:12])
    ag.send(key, (key, 3))
    wait_until("three reported undelivered", lambda: len(undelivered_events(grid)) == 3)
    for event in undelivered_events(grid):
        assert event.detail.startswith(f"a message to actor {key!r} was not delivered: ")
        assert event.detail.endswith("raised")
    assert grid.undelivered_messages == 0  # the driver's count: it sent none of them
    assert grid.lost_sends == 0


@ag.remote
async def listener(ctx: ag.Context, topic: str) -> None:
    """Subscribes to ``topic``; ``"pid?"``/``"got?"`` (asked): its pid, what it got."""
    ctx.subscribe(topic)
    got: list[int] = []
    async for msg in ctx.mailbox:
        if msg == "pid?":
            await ctx.reply(os.getpid())
        elif msg == "got?":
            await ctx.reply(list(got))
        else:
            got.append(msg)


def test_a_publish_reaches_every_live_subscriber_when_another_ones_worker_is_killed(
    grid: ag.Cluster, processes
) -> None:
    # A subscriber that died with its worker is gone, and the messages on their way to it
    # with it: nobody is left to miss them, and the publisher is told nothing (it is not
    # told who subscribes). Every live subscriber still gets every message, in order.
    topic = uuid.uuid4().hex[:12]
    by_pid: dict[int, list[Any]] = {}
    for _ in range(16):  # placed on either worker: some on each are wanted
        ref = listener.remote(topic)
        by_pid.setdefault(ag.ask(ref, "pid?", timeout=30), []).append(ref)
        if len(by_pid) == 2:
            break
    assert len(by_pid) == 2, "every listener was placed on one worker"
    doomed, kept = by_pid
    processes.add([doomed])
    for i in range(10):
        ag.publish(topic, i)
    os.kill(doomed, signal.SIGKILL)
    for i in range(10, 30):
        ag.publish(topic, i)  # the first ones may go to the dead worker: they do not raise
    for ref in by_pid[kept]:
        wait_until("all thirty", lambda r=ref: len(ag.ask(r, "got?", timeout=30)) == 30)
        assert ag.ask(ref, "got?", timeout=30) == list(range(30))
    for ref in by_pid[doomed]:
        with pytest.raises(ag.ActorDiedError):
            ag.get(ref, timeout=30)
    assert grid.lost_sends == 0
    assert lost_events(grid) == []
