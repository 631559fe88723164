"""Keyed (virtual) agents on a live cluster: activation on first message exactly once under
racing senders, deactivation after idle_timeout with state saved and reloaded, reactivation on
a live worker after kill -9 of the agent's worker. (The hashing and the activation table are
tested without processes in tests/_scheduler/test_activation.py.)"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@ag.remote
async def collector(ctx: ag.Context):
    """Keeps what agents report; ``"get"`` (asked) answers with all of it."""
    got = []
    async for msg in ctx.mailbox:
        if msg == "get":
            await ctx.reply(list(got))
        elif msg == "pid":
            await ctx.reply(os.getpid())
        else:
            got.append(msg)


def wait_reports(name, done, timeout=60.0):
    """Ask the collector until ``done(reports)`` holds; the reports."""
    deadline = time.monotonic() + timeout
    while True:
        reports = ag.ask(name, "get", timeout=30)
        if done(reports):
            return reports
        assert time.monotonic() < deadline, f"gave up waiting; reports so far: {reports}"
        time.sleep(0.05)


@ag.remote
async def counting(ctx: ag.Context):
    count = 0
    async for report_to, what in ctx.mailbox:
        if count == 0 and what != "report":
            await ctx.send(report_to, ("activated", ctx.key, os.getpid()))
        if what == "report":
            await ctx.send(report_to, ("count", ctx.key, count))
        else:
            count += 1


@ag.remote
def send_many(target, report_to, n):
    for _ in range(n):
        ag.send(target, (report_to, "one"))
    return os.getpid()


def test_a_keyed_agent_is_activated_once_under_eight_racing_senders():
    name = unique("collector")
    collector.options(name=name).remote()
    key = counting.key(unique("k"))
    senders = [send_many.remote(key, name, 25) for _ in range(8)]
    assert len(set(ag.get(senders, timeout=120))) == 2  # from both workers
    # The senders' calls have returned, but a worker's messages to the agent may still be on
    # their way (its link to the agent's worker is not the one the driver's "report" takes,
    # and links keep order each, not between them): asked again until all 200 are in.
    counts: list[int] = []
    while not counts or counts[-1] < 200:
        ag.send(key, (name, "report"))
        seen = len(counts)
        reports = wait_reports(name, lambda r, seen=seen: sum(m[0] == "count" for m in r) > seen)
        counts = [m[2] for m in reports if m[0] == "count"]
        assert len(counts) < 200, f"the count never reached 200: {counts}"
    activations = [m for m in reports if m[0] == "activated"]
    assert len(activations) == 1, reports
    assert counts[-1] == 200, counts  # each message once: none lost, none counted twice


@ag.remote
async def store(ctx: ag.Context):
    saved = {}
    async for msg in ctx.mailbox:
        if msg[0] == "save":
            saved[msg[1]] = msg[2]
            await ctx.reply(True)
        else:
            await ctx.reply(saved.get(msg[1], 0))


@ag.remote(idle_timeout=0.5)
async def tally(ctx: ag.Context):
    total = None
    store_name = report_to = None
    async for store_name, report_to, n in ctx.mailbox:
        if total is None:  # activated: load the state the last activation saved
            total = await ctx.ask(store_name, ("load", ctx.key), timeout=30)
            await ctx.send(report_to, ("activated", total))
        total += n
        await ctx.send(report_to, ("total", total))
    # The mailbox ended: idle for idle_timeout. Save the state, then return.
    await ctx.ask(store_name, ("save", ctx.key, total), timeout=30)
    await ctx.send(report_to, ("deactivated", total))


def test_an_idle_agent_is_deactivated_saving_its_state_and_comes_back_with_it():
    name, store_name = unique("collector"), unique("store")
    collector.options(name=name).remote()
    store.options(name=store_name).remote()
    key = tally.key("alice")
    ag.send(key, (store_name, name, 1))
    ag.send(key, (store_name, name, 2))
    reports = wait_reports(name, lambda r: ("deactivated", 3) in r)
    assert reports == [("activated", 0), ("total", 1), ("total", 3), ("deactivated", 3)]
    ag.send(key, (store_name, name, 4))
    reports = wait_reports(name, lambda r: ("total", 7) in r)
    assert reports[4:] == [("activated", 3), ("total", 7)]


@ag.remote
async def where(ctx: ag.Context):
    async for report_to in ctx.mailbox:
        await ctx.send(report_to, ("at", os.getpid()))


def test_an_agent_whose_worker_was_killed_comes_back_on_a_live_worker(cluster):
    name = unique("collector")
    collector.options(name=name).remote()
    collector_pid = ag.ask(name, "pid", timeout=30)
    for i in range(100):  # a key whose agent is not on the collector's worker
        key = where.key(f"{name}-{i}")
        ag.send(key, name)
        first = wait_reports(name, lambda r, n=i: len(r) == n + 1)[-1][1]
        if first != collector_pid:
            break
    assert first in {w.pid for w in cluster.workers()} - {collector_pid}
    seen = len(ag.ask(name, "get", timeout=30))
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # sends go to the dead worker until the cluster notices it is gone
        try:
            ag.send(key, name)
        except ag.ActorgridError:
            pass
        reports = ag.ask(name, "get", timeout=30)[seen:]
        if any(pid != first for _, pid in reports):
            break
        assert time.monotonic() < deadline, "the agent never came back"
        time.sleep(0.1)
    assert {pid for _, pid in reports} - {first} <= {w.pid for w in cluster.workers()}


@ag.remote
async def account(ctx: ag.Context):
    balance = 0
    async for op, amount in ctx.mailbox:
        balance += amount if op == "deposit" else 0
        if ctx.request is not None:
            await ctx.reply((ctx.key, balance, os.getpid()))


@ag.remote
def ask_key(key, message):
    return ag.ask(key, message, timeout=30)


@ag.remote
async def asks_from_an_agent(ctx: ag.Context, key):
    return await ctx.ask(key, ("balance", 0), timeout=30)


def test_a_keyed_agent_answers_asks_by_key_from_a_driver_a_task_and_an_agent():
    key = account.key(unique("acct"))
    assert ag.ask(key, ("deposit", 5), timeout=30)[:2] == (key.key, 5)  # activates it
    results = ag.get([ask_key.remote(key, ("deposit", 1)) for _ in range(20)], timeout=120)
    assert sorted(balance for _, balance, _ in results) == list(range(6, 26))
    assert len({pid for _, _, pid in results}) == 1  # one activation answered them all
    assert ag.get(asks_from_an_agent.remote(key), timeout=60)[1] == 25


@ag.remote(idle_timeout=0.5)
async def saver(ctx: ag.Context):
    store_name, report_to = ctx.key.split("|")
    total = await ctx.ask(store_name, ("load", ctx.key), timeout=30)
    await ctx.send(report_to, ("activated", total))

    async def save():
        await ctx.ask(store_name, ("save", ctx.key, total), timeout=30)
        await ctx.send(report_to, ("saved", total))

    ctx.on_deactivate(save)
    async for n in ctx.mailbox:
        total += n
        await ctx.send(report_to, ("total", total))


def test_on_deactivate_saves_the_state_of_an_idle_keyed_agent_for_its_next_activation():
    name, store_name = unique("collector"), unique("store")
    collector.options(name=name).remote()
    store.options(name=store_name).remote()
    key = saver.key(f"{store_name}|{name}")
    ag.send(key, 1)
    ag.send(key, 2)
    reports = wait_reports(name, lambda r: ("saved", 3) in r)
    assert reports == [("activated", 0), ("total", 1), ("total", 3), ("saved", 3)]
    ag.send(key, 4)
    reports = wait_reports(name, lambda r: ("total", 7) in r)
    assert reports[4:] == [("activated", 3), ("total", 7)]


@ag.remote
async def on_deactivate_outside_a_key(ctx: ag.Context):
    with pytest.raises(TypeError, match="keyed agents"):
        ctx.on_deactivate(lambda: None)
    return "refused"


def test_on_deactivate_is_refused_to_an_agent_that_has_no_key():
    assert ag.get(on_deactivate_outside_a_key.remote(), timeout=60) == "refused"


@ag.remote
async def gate(ctx: ag.Context):
    """Holds every ask until it gets "open"."""
    waiting = []
    async for msg in ctx.mailbox:
        if msg == "open":
            for request in waiting:
                request.reply(True)
            waiting = None
        elif waiting is None:
            await ctx.reply(True)
        else:
            waiting.append(ctx.request)


@ag.remote(mailbox_size=2)
async def slow_consumer(ctx: ag.Context):
    gate_name, report_to = ctx.key.split("|")
    await ctx.ask(gate_name, "wait", timeout=300)  # consumes nothing until the gate opens
    capacity = ctx.mailbox.statistics().capacity
    got = []
    async for i in ctx.mailbox:
        got.append(i)
        if len(got) == 400:
            await ctx.send(report_to, (capacity, got == list(range(400))))


@ag.remote
def send_range(key, n):
    for i in range(n):
        ag.send(key, i)
    return "sent"


def test_a_keyed_mailbox_is_bounded_and_holds_its_senders_back_until_it_drains():
    name, gate_name = unique("collector"), unique("gate")
    collector.options(name=name).remote()
    gate.options(name=gate_name).remote()
    key = slow_consumer.key(f"{gate_name}|{name}")
    senders = [send_range.remote(key, 400)]  # from a worker
    # 400 messages are more than the mailbox (2) and the link's window (256) hold: the
    # sender cannot finish while the agent consumes nothing. 2 s is far more than 400 sends
    # take when nothing holds them back (a few ms).
    ready, _ = ag.wait(senders, timeout=2)
    assert ready == []
    ag.send(gate_name, "open")
    assert ag.get(senders, timeout=120) == ["sent"]
    assert wait_reports(name, lambda r: len(r) == 1) == [(2, True)]
