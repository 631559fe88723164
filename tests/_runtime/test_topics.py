"""Topics on a live cluster: every subscriber gets every message, in order per publisher, from
a driver and from agents, plain and keyed; 10,000 subscribers are reached by one call."""

from __future__ import annotations

import time
import uuid

import pytest

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@ag.remote
async def counter(ctx: ag.Context):
    n = 0
    async for msg in ctx.mailbox:
        if msg == "count":
            await ctx.reply(n)
        else:
            n += 1


def wait_count(name, n, timeout=120.0):
    deadline = time.monotonic() + timeout
    while (got := ag.ask(name, "count", timeout=30)) < n:
        assert time.monotonic() < deadline, f"only {got} of {n} reported"
        time.sleep(0.05)


@ag.remote
async def listener(ctx: ag.Context, topic, ready, ticks):
    ctx.subscribe(topic)
    await ctx.send(ready, "subscribed")
    got = []
    async for msg in ctx.mailbox:
        got.append(msg)
        if len(got) == ticks:
            return got


def test_a_tick_reaches_ten_thousand_subscribers_in_order():
    topic, ready = unique("clock"), unique("ready")
    counter.options(name=ready).remote()
    n, ticks = 10_000, 3
    refs = []
    while len(refs) < n:  # in batches: a burst of 10,000 starts would starve the workers' loops
        refs += [listener.remote(topic, ready, ticks) for _ in range(1000)]
        wait_count(ready, len(refs))
    for tick in range(ticks):
        ag.publish(topic, tick)  # one call per tick, whatever the number of subscribers
    results = ag.get(refs, timeout=300)
    assert all(got == list(range(ticks)) for got in results)


@ag.remote
async def publisher(ctx: ag.Context, topic, tag, n):
    for i in range(n):
        await ctx.publish(topic, (tag, i))
    return tag


@ag.remote(idle_timeout=60)
async def keyed_listener(ctx: ag.Context):
    got = []
    async for msg in ctx.mailbox:
        if msg[0] == "subscribe":
            ctx.subscribe(msg[1])
            await ctx.send(msg[2], "subscribed")
        elif msg[0] == "get":
            await ctx.send(msg[1], got)
        else:
            got.append(msg)


@ag.remote
async def inbox(ctx: ag.Context):
    return await ctx.mailbox.receive()


def test_every_subscriber_gets_every_message_in_order_per_publisher():
    topic, ready = unique("news"), unique("ready")
    counter.options(name=ready).remote()
    plain = [listener.remote(topic, ready, 60) for _ in range(4)]
    keyed = [keyed_listener.key(f"{topic}-{i}") for i in range(4)]
    for key in keyed:
        ag.send(key, ("subscribe", topic, ready))
    wait_count(ready, 8)
    publishers = [publisher.remote(topic, tag, 20) for tag in ("a", "b")]
    for i in range(20):
        ag.publish(topic, ("driver", i))
    assert ag.get(publishers, timeout=60) == ["a", "b"]
    results = ag.get(plain, timeout=60)
    for key in keyed:
        box = inbox.remote()
        ag.send(key, ("get", box))
        results.append(ag.get(box, timeout=60))
    for got in results:
        assert len(got) == 60
        for tag in ("a", "b", "driver"):
            assert [i for t, i in got if t == tag] == list(range(20))


def test_a_driver_subscribes_and_gets_every_message_in_order():
    topic = unique("driver-news")
    with ag.subscribe(topic) as sub:
        publishers = [publisher.remote(topic, tag, 30) for tag in ("a", "b")]
        for i in range(30):
            ag.publish(topic, ("driver", i))
        got = [sub.get(timeout=60) for _ in range(90)]
        assert ag.get(publishers, timeout=60) == ["a", "b"]
        with pytest.raises(ag.GetTimeoutError):
            sub.get(timeout=0.5)  # nothing more was published
        ag.publish(topic, ("driver", 30))
        assert sub.get(timeout=60) == ("driver", 30)  # nothing lost to the timed-out pull
    for tag in ("a", "b", "driver"):
        assert [i for t, i in got if t == tag] == list(range(30))
