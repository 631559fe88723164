"""Named coroutine agents on a live cluster: targets in a namespace, get_if_exists, sends to
an agent that has ended, and forgetting ended agents without walking the name cache."""

from __future__ import annotations

import time
import uuid

import pytest

import actorgrid as ag
from actorgrid._protocol.ids import ActorId
from actorgrid._protocol.messages import ActorInfo
from actorgrid._scheduler.names import NameCache

pytestmark = pytest.mark.usefixtures("cluster")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@ag.remote
async def echo(ctx: ag.Context, tag):
    async for msg in ctx.mailbox:
        if msg == "stop":
            return tag
        if ctx.request is not None:
            await ctx.reply((tag, msg))


@ag.remote
async def relay(ctx: ag.Context, name, namespace):
    # Sends by name from inside an agent: with no namespace=, its own namespace is used.
    msg = await ctx.mailbox.receive()
    mine = await ctx.ask(name, msg, timeout=30)
    other = await ctx.ask(name, msg, timeout=30, namespace=namespace)
    return mine, other


def test_a_name_is_looked_up_in_the_namespace_the_sender_names():
    name = unique("twin")
    a = echo.options(name=name, namespace="ns-a").remote("a")
    b = echo.options(name=name, namespace="ns-b").remote("b")
    assert ag.ask(name, 1, namespace="ns-a", timeout=30) == ("a", 1)
    assert ag.ask(name, 2, namespace="ns-b", timeout=30) == ("b", 2)
    with pytest.raises(ag.NameNotFoundError, match="namespace 'default'"):
        ag.ask(name, 3, timeout=30)
    r = relay.options(namespace="ns-a").remote(name, "ns-b")
    ag.send(r, 7)
    assert ag.get(r, timeout=60) == (("a", 7), ("b", 7))
    ag.send(name, "stop", namespace="ns-a")
    ag.send(name, "stop", namespace="ns-b")
    assert ag.get([a, b], timeout=60) == ["a", "b"]


@ag.remote
async def collect(ctx: ag.Context, tag):
    got = []
    async for msg in ctx.mailbox:
        if msg == "stop":
            return tag, got
        got.append(msg)


@ag.remote
async def fan(ctx: ag.Context, name, namespace):
    # ctx.send by name: with no namespace=, the agent's own; with one, that one.
    msg = await ctx.mailbox.receive()
    await ctx.send(name, ("own", msg))
    await ctx.send(name, ("other", msg), namespace=namespace)
    await ctx.send(name, "stop")
    await ctx.send(name, "stop", namespace=namespace)


def test_ctx_send_looks_a_name_up_in_the_namespace_it_names_or_the_agents_own():
    name = unique("sink")
    a = collect.options(name=name, namespace="ns-a").remote("a")
    b = collect.options(name=name, namespace="ns-b").remote("b")
    f = fan.options(namespace="ns-a").remote(name, "ns-b")
    ag.send(f, 5)
    assert ag.get([a, b, f], timeout=60) == [("a", [("own", 5)]), ("b", [("other", 5)]), None]


def test_get_if_exists_on_a_coroutine_actor_reaches_it_and_resolves_when_it_ends():
    name = unique("shared")
    first = echo.options(name=name).remote("first")
    again = echo.options(name=name, get_if_exists=True).remote("second")
    assert ag.ask(again, "hi", timeout=30) == ("first", "hi")  # the same, existing actor
    ready, _ = ag.wait([again], timeout=0.2)
    assert ready == []  # still running: nothing to resolve yet
    ag.send(again, "stop")
    assert ag.get(first, timeout=60) == "first"  # its result goes to its creator's ref
    assert ag.get(again, timeout=60) is None  # and this ref resolves when it ends


@ag.remote
async def returns_at_once(ctx: ag.Context):
    return "done"


def test_a_send_to_an_agent_whose_ref_has_resolved_raises_at_the_sender():
    ref = returns_at_once.remote()
    assert ag.get(ref, timeout=60) == "done"
    with pytest.raises(ag.ActorDiedError, match="already returned"):
        ag.send(ref, "too late")
    with pytest.raises(ag.ActorDiedError, match="already returned"):
        ag.ask(ref, "too late", timeout=30)


def wait_name_freed(name: str) -> None:
    deadline = time.monotonic() + 30
    while True:  # the head tells this process the name is free; then lookups fail
        try:
            ag.send(name, "late")
        except ag.NameNotFoundError:
            return
        assert time.monotonic() < deadline, "the ended agent's name was never forgotten"
        time.sleep(0.05)


def test_a_send_by_name_to_an_agent_that_has_ended_raises_at_the_sender():
    name = unique("gone")
    ref = echo.options(name=name).remote("x")
    assert ag.ask(name, 1, timeout=30) == ("x", 1)  # the name is cached here now
    ag.send(name, "stop")
    assert ag.get(ref, timeout=60) == "x"
    wait_name_freed(name)


@ag.remote
async def asker(ctx: ag.Context):
    # Asks by name from a worker, whose name cache keeps what it looked up.
    async for msg in ctx.mailbox:
        if msg == "stop":
            return
        assert ctx.request is not None
        await ctx.reply(await ctx.ask(msg[0], msg[1], timeout=30))


def test_a_name_a_worker_cached_reaches_the_agent_created_again_under_it():
    name = unique("again")
    first = echo.options(name=name).remote("first")
    ask_from_worker = asker.remote()
    for i in range(3):  # looked up once, then read from the worker's cache
        assert ag.ask(ask_from_worker, (name, i), timeout=30) == ("first", i)
    ag.send(name, "stop")
    assert ag.get(first, timeout=60) == "first"
    wait_name_freed(name)
    second = echo.options(name=name).remote("second")
    for i in range(3):  # not the ended agent the worker cached: the new one
        assert ag.ask(ask_from_worker, (name, i), timeout=30) == ("second", i)
    ag.send(name, "stop")
    ag.send(ask_from_worker, "stop")
    assert ag.get([second, ask_from_worker], timeout=60) == ["second", None]


def _info(i: int, address: str) -> ActorInfo:
    return ActorInfo(ActorId(i.to_bytes(4, "big")), address, "coroutine", "a", f"n{i}")


class _Unwalkable(dict):  # type: ignore[type-arg]
    """A dict whose walks over all its entries fail the test until ``walks_allowed``."""

    walks_allowed = False

    def _check(self) -> None:
        assert self.walks_allowed, "the name cache walked every name"

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._check()
        return dict.__iter__(self)

    def keys(self):  # type: ignore[no-untyped-def]
        self._check()
        return dict.keys(self)

    def values(self):  # type: ignore[no-untyped-def]
        self._check()
        return dict.values(self)

    def items(self):  # type: ignore[no-untyped-def]
        self._check()
        return dict.items(self)


def test_the_name_cache_forgets_an_actor_without_walking_every_name():
    cache = NameCache()
    for i in range(100_000):
        cache[("default", f"n{i}")] = _info(i, f"w{i % 2}")
    # Forgetting an actor must not walk the names: the table of names refuses to be walked
    # while 1,000 actors are forgotten (a scan per forget would walk 100,000 names each).
    guarded = cache._by_key = _Unwalkable(cache._by_key)
    for i in range(1000):
        cache.forget_actor(ActorId(i.to_bytes(4, "big")))
    guarded.walks_allowed = True
    assert len(cache) == 99_000
    assert ("default", "n5") not in cache and cache.get(("default", "n1000")) is not None
    cache.forget_address("w0")
    assert len(cache) == 49_500
    assert all(cache[("default", f"n{i}")].address == "w1" for i in range(1001, 1100, 2))


@ag.remote
async def first_letter(ctx: ag.Context):
    return await ctx.mailbox.receive()


def test_named_agents_are_created_without_waiting_for_the_head_and_usable_at_once():
    prefix = unique("many")
    refs = [first_letter.options(name=f"{prefix}-{i}").remote() for i in range(200)]
    for i in range(200):
        ag.send(f"{prefix}-{i}", i)  # the creator uses each name at once
    assert ag.get(refs, timeout=120) == list(range(200))
    # Other processes find them at the head (the claims went out before these sends).
    again = first_letter.options(name=f"{prefix}-late").remote()
    assert ag.get(send_by_name.remote(f"{prefix}-late", "from a task"), timeout=60) == "sent"
    assert ag.get(again, timeout=60) == "from a task"


@ag.remote
def send_by_name(name, message):
    ag.send(name, message)
    return "sent"


@ag.remote
class Tally:
    def __init__(self, start: int) -> None:
        self.n = start

    def incr(self) -> int:
        self.n += 1
        return self.n


def test_named_class_actors_are_usable_by_handle_and_by_name_as_soon_as_remote_returns():
    prefix = unique("tally")
    handles = [Tally.options(name=f"{prefix}-{i}").remote(i) for i in range(100)]
    # .remote() did not wait for the head; calls by handle and by name work at once.
    by_handle = [h.incr.remote() for h in handles]
    by_name = [ag.get_actor(f"{prefix}-{i}").incr.remote() for i in range(100)]
    assert sorted(ag.get(by_handle + by_name, timeout=120)) == sorted(
        [i + 1 for i in range(100)] + [i + 2 for i in range(100)]
    )
    # And other processes find them at the head.
    assert ag.get(incr_by_name.remote(f"{prefix}-7"), timeout=60) == 10


@ag.remote
def incr_by_name(name):
    return ag.get(ag.get_actor(name).incr.remote())
