"""Mailbox flow control on real processes: a full mailbox holds back only its own senders.

The embedded cluster pulses every 0.2 s, so a peer silent for 1 s is a zombie: a link held
back by flow control for many zombie windows must stay up, and every message must arrive.
"""

import os
import threading
import time
import uuid

import pytest
import trio

import actorgrid as ag

PULSE_S = 0.2
CLUSTER_OPTIONS = {"num_workers": 2, "pulse_interval": PULSE_S}
SMALL = 4  # mailbox_size of the agents under pressure

pytestmark = pytest.mark.usefixtures("cluster")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@ag.remote
async def gate(ctx: ag.Context):
    """Answers "open?" with whether "open" was sent to it."""
    is_open = False
    async for msg in ctx.mailbox:
        if msg == "open":
            is_open = True
        elif msg == "open?":
            await ctx.reply(is_open)
        elif msg == "stop":
            return None


@ag.remote
async def holder(ctx: ag.Context, gate_name, stops=1):
    """On "hold", reads nothing until the gate opens; collects the numbers it is sent and
    returns them at the ``stops``-th "stop" (one from each sender: there is no order across
    senders, so one sender's "stop" may overtake another's last numbers); answers "pid"."""
    got = []
    async for msg in ctx.mailbox:
        if msg == "pid":
            await ctx.reply(os.getpid())
        elif msg == "hold":
            while not await ctx.ask(gate_name, "open?"):
                await trio.sleep(0.05)
        elif msg == "stop":
            stops -= 1
            if not stops:
                return got
        else:
            got.append(msg)


@ag.remote
async def flooder(ctx: ag.Context, target, first, count):
    """Sends first..first+count-1 to target, then "stop"; returns how long it took."""
    start = trio.current_time()
    for i in range(first, first + count):
        await ctx.send(target, i)
    took = trio.current_time() - start
    await ctx.send(target, "stop")
    return took


def _held_back_link(hold_s):
    """A holder on one worker, its mailbox full; the driver and an agent on the other worker
    keep sending to it for ``hold_s``; then the gate opens. Returns what the holder got and
    what the driver's sender saw."""
    gate_name, holder_name = unique("gate"), unique("holder")
    g = gate.options(name=gate_name).remote()
    h = holder.options(name=holder_name, mailbox_size=SMALL).remote(gate_name, stops=2)
    holder_pid = ag.ask(holder_name, "pid", timeout=60)
    ag.send(holder_name, "hold")
    count = SMALL + 300  # more than the mailbox and the link's credit window
    sent = []
    errors = []

    def flood():
        try:
            for i in range(count):
                ag.send(holder_name, ("driver", i))
                sent.append(i)
        except Exception as exc:  # reported by the assertions below
            errors.append(exc)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    other = flooder.remote(holder_name, 0, count)
    time.sleep(hold_s)
    held = len(sent)
    ag.send(gate_name, "open")
    sender.join(timeout=120)
    took = ag.get(other, timeout=120)
    ag.send(holder_name, "stop")  # after the driver's numbers; the flooder sent its own
    got = ag.get(h, timeout=60)
    ag.send(gate_name, "stop")
    ag.get(g, timeout=60)
    return {
        "got": got,
        "count": count,
        "held": held,
        "errors": errors,
        "flooder_took": took,
        "holder_pid": holder_pid,
    }


def test_a_link_held_back_for_30_pulse_intervals_stays_up_and_delivers_everything(cluster):
    pids = {w.pid for w in cluster.workers()}
    # 40 intervals: eight zombie windows of silence, had the reader stopped reading.
    result = _held_back_link(40 * PULSE_S)
    assert result["errors"] == []
    # The sender really was held back: it could not send everything while the gate was shut.
    assert result["held"] < result["count"]
    got, count = result["got"], result["count"]
    from_driver = [m[1] for m in got if isinstance(m, tuple)]
    from_agent = [m for m in got if isinstance(m, int)]
    assert from_driver == list(range(count))  # all of them, once, in the order sent
    assert from_agent == list(range(count))
    assert result["flooder_took"] >= 30 * PULSE_S  # it waited for credit, not for a new link
    assert {w.pid for w in cluster.workers()} == pids  # no worker was declared a zombie
    kinds = {e.kind for e in cluster.recent_events()}
    assert not kinds & {"worker_zombie", "node_zombie", "worker_died"}


@ag.remote
async def echo_pid(ctx: ag.Context):
    async for msg in ctx.mailbox:
        if msg == "stop":
            return None
        await ctx.reply((msg, os.getpid()))


def test_a_full_mailbox_does_not_delay_another_actor_on_the_same_worker():
    gate_name, holder_name = unique("gate"), unique("holder")
    g = gate.options(name=gate_name).remote()
    h = holder.options(name=holder_name, mailbox_size=SMALL).remote(gate_name)
    holder_pid = ag.ask(holder_name, "pid", timeout=60)
    fast = None
    others = []
    for _ in range(12):  # two workers: one of these lands beside the holder
        ref = echo_pid.remote()
        others.append(ref)
        if ag.ask(ref, "where?", timeout=60)[1] == holder_pid:
            fast = ref
            break
    assert fast is not None, "no actor was placed on the holder's worker"
    ag.send(holder_name, "hold")
    count = SMALL + 300
    sent = []

    def flood():
        for i in range(count):
            ag.send(holder_name, i)
            sent.append(i)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    deadline = time.monotonic() + 60
    while len(sent) < SMALL + 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The holder's mailbox is full and more wait behind it; the actor beside it answers anyway.
    for i in range(50):
        assert ag.ask(fast, i, timeout=30) == (i, holder_pid)
    assert len(sent) < count  # the holder's sender is still held back meanwhile
    ag.send(gate_name, "open")
    sender.join(timeout=120)
    ag.send(holder_name, "stop")
    assert ag.get(h, timeout=60) == list(range(count))
    for ref in others:
        ag.send(ref, "stop")
    ag.send(gate_name, "stop")
    ag.get([g, *others], timeout=60)


@ag.remote
async def ring_member(ctx: ag.Context, next_name, delay_s):
    """Forwards every message to the next member, taking ``delay_s`` over each."""
    async for msg in ctx.mailbox:
        if msg == "stop":
            return None
        await trio.sleep(delay_s)
        await ctx.send(next_name, msg)


@ag.remote
async def ring_head(ctx: ag.Context, next_name, count):
    """Sends 0..count-1 round the ring as fast as it may while collecting what comes back."""
    got = []

    async def produce():
        for i in range(count):
            await ctx.send(next_name, i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for msg in ctx.mailbox:
            got.append(msg)
            if len(got) == count:
                break
    return got


def test_a_ring_where_each_sends_faster_than_the_next_consumes_delivers_all_in_order():
    size, count = 8, 3000
    names = [unique(f"ring{i}") for i in range(size)]
    members = [
        ring_member.options(name=names[i], mailbox_size=SMALL).remote(
            names[(i + 1) % size], 0.0001 * i
        )
        for i in range(1, size)
    ]
    head = ring_head.options(name=names[0], mailbox_size=SMALL).remote(names[1], count)
    assert ag.get(head, timeout=240) == list(range(count))
    for name in names[1:]:
        ag.send(name, "stop")
    ag.get(members, timeout=60)


@ag.remote
async def ends_at_once(ctx: ag.Context):
    return ctx.handle


def test_a_message_to_an_agent_that_has_ended_is_counted_and_reported(cluster):
    # Sent by handle: the sender cannot know the actor has ended (by its own ref, which has
    # resolved, the send raises at once: tests/_runtime/test_named_agents.py).
    handle = ag.get(ends_at_once.remote(), timeout=60)
    before = cluster.undelivered_messages
    ag.send(handle, "too late")
    deadline = time.monotonic() + 30
    while cluster.undelivered_messages == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cluster.undelivered_messages == before + 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = [e for e in cluster.recent_events() if e.kind == "message_undelivered"]
        if events:
            break
        time.sleep(0.05)
    assert events and "not delivered" in events[-1].detail


@ag.remote
async def capacity(ctx: ag.Context):
    return ctx.mailbox.statistics().capacity


def test_mailbox_size_is_an_option_and_a_bad_one_is_refused_with_the_reason():
    assert ag.get(capacity.options(mailbox_size=3).remote(), timeout=60) == 3
    assert ag.get(capacity.remote(), timeout=60) == 1024
    with pytest.raises(ValueError, match="mailbox_size must be an int >= 1"):
        capacity.options(mailbox_size=-1)


@ag.remote
def full_collection_of_many_survivors(n: int) -> tuple[int, int]:
    """In a worker: a full collection over ``n`` long-lived objects (the state of agents by the
    thousand); how many were frozen before and after it."""
    import gc

    before = gc.get_freeze_count()
    survivors = [{"state": [i]} for i in range(n)]  # two objects each, all tracked
    gc.collect()
    after = gc.get_freeze_count()
    del survivors
    return before, after


def test_a_worker_freezes_the_survivors_of_a_slow_full_collection():
    """A full collection over a worker's long-lived objects stops its loop; at 100,000 agents
    it stopped it for seconds on a loaded machine and the worker was taken for a zombie
    (_runtime/gcpause.py). The survivors of a slow one are frozen, so the next walks only
    what came since. 300,000 survivors take ~80 ms of CPU to walk, four times the threshold."""
    before, after = ag.get(full_collection_of_many_survivors.remote(300_000), timeout=120)
    assert after - before >= 600_000
