"""The Trio-native API: ``async with ag.connect()``, awaiting refs and handles, the ``*_async``
functions, and blocking calls refused inside a Trio loop.

Each test starts its own embedded cluster in the test's Trio loop, so this module must not use
the sync ``cluster`` fixture (one cluster per process at a time).
"""

from __future__ import annotations

import time
import uuid

import psutil
import pytest
import trio

import actorgrid as ag

LONG_S = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@ag.remote
def square(x):
    return x * x


@ag.remote
async def nap(value, seconds):
    await trio.sleep(seconds)
    return value


@ag.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self):
        self.value += 1
        return self.value


@ag.remote
class AsyncCounter:
    def __init__(self):
        self.value = 0

    async def incr(self):
        await trio.sleep(0)
        self.value += 1
        return self.value


@ag.remote
async def echo(ctx: ag.Context):
    notes = []
    async for msg in ctx.mailbox:
        if msg == "stop":
            return notes
        if ctx.request is not None:
            await ctx.reply(("echo", msg))
        else:
            notes.append(msg)


async def _wait_gone(processes) -> None:
    await trio.to_thread.run_sync(processes.wait_gone)


async def test_connect_runs_tasks_and_actors(processes) -> None:
    assert not ag.is_initialized()
    async with ag.connect(num_workers=2) as cluster:
        processes.add(w.pid for w in cluster.workers())
        assert ag.is_initialized()
        assert cluster.embedded
        assert len(cluster.workers()) == 2
        # Its descendants: workers fork from a template process where they can.
        children = {p.pid for p in psutil.Process().children(recursive=True)}
        assert {w.pid for w in cluster.workers()} <= children

        assert await square.remote(7) == 49
        assert await ag.get_async([square.remote(i) for i in range(5)]) == [0, 1, 4, 9, 16]
        assert await nap.remote("async task", 0) == "async task"

        counter = Counter.remote()
        assert await counter.incr.remote() == 1
        assert await ag.get_async([counter.incr.remote() for _ in range(3)]) == [2, 3, 4]
        acounter = AsyncCounter.remote()
        assert await acounter.incr.remote() == 1

        # Nested work from inside tasks still uses the sync API on worker threads.
        @ag.remote
        def nested(n):
            return sum(ag.get([square.remote(i) for i in range(n)]))

        assert await nested.remote(4) == 14
    assert not ag.is_initialized()
    await _wait_gone(processes)


async def test_get_async_timeout_and_wait_async(processes) -> None:
    async with ag.connect(num_workers=2) as cluster:
        processes.add(w.pid for w in cluster.workers())
        slow = nap.remote("slow", LONG_S)
        fast = ag.put("fast")
        done = square.remote(3)
        try:
            with pytest.raises(ag.GetTimeoutError) as info:
                await ag.get_async(slow, timeout=0.2)
            assert isinstance(info.value, TimeoutError)

            assert await done == 9
            ready, not_ready = await ag.wait_async([slow, done, fast], num_returns=2, timeout=30)
            assert ready == [done, fast]
            assert not_ready == [slow]
            start = time.monotonic()
            ready, not_ready = await ag.wait_async([slow, fast], num_returns=2, timeout=0.2)
            assert (ready, not_ready) == ([fast], [slow])
            assert time.monotonic() - start < 10

            # A Trio cancel scope around an await leaves the ref and the runtime usable.
            with trio.move_on_after(0.1) as scope:
                await slow
            assert scope.cancelled_caught
            ag.cancel(slow)
            with pytest.raises(ag.TaskCancelledError):
                await ag.get_async(slow, timeout=30)
            assert await square.remote(5) == 25
        finally:
            ag.cancel(slow)
    await _wait_gone(processes)


async def test_named_actors_and_messages_in_trio(processes) -> None:
    async with ag.connect(num_workers=2) as cluster:
        processes.add(w.pid for w in cluster.workers())
        name = unique("counter")
        handle = await Counter.options(name=name).remote(10)
        assert isinstance(handle, ag.ActorHandle)
        assert handle.name == name
        assert await handle.incr.remote() == 11
        found = await ag.get_actor_async(name)
        assert found.actor_id == handle.actor_id
        same = await Counter.options(name=name, get_if_exists=True).remote()
        assert same.actor_id == handle.actor_id
        with pytest.raises(ValueError, match=name):
            await Counter.options(name=name).remote()

        # Calls made on a named handle before it is registered go out in order once it is.
        other = Counter.options(name=unique("early")).remote()
        refs = [other.incr.remote() for _ in range(5)]
        assert await ag.get_async(refs) == [1, 2, 3, 4, 5]

        await ag.kill_async(handle)
        with pytest.raises(ag.ActorDiedError):
            await handle.incr.remote()
        with pytest.raises(ag.NameNotFoundError, match=name):
            await ag.get_actor_async(name)
        replacement = await Counter.options(name=name).remote(0)
        assert await replacement.incr.remote() == 1

        agent_name = unique("echo")
        agent = echo.options(name=agent_name).remote()
        assert await ag.ask_async(agent, "hi", timeout=30) == ("echo", "hi")
        assert await ag.ask_async(agent_name, "by name", timeout=30) == ("echo", "by name")
        await ag.send_async(agent_name, "note")
        await ag.send_async(agent, "stop")
        assert await agent == ["note"]
        with pytest.raises(ag.NameNotFoundError, match="nobody-here"):
            await ag.send_async("nobody-here", "hello?")
    await _wait_gone(processes)


async def test_blocking_calls_inside_trio_say_to_await(processes) -> None:
    with pytest.raises(RuntimeError, match="connect"):
        ag.init(num_workers=1)
    async with ag.connect(num_workers=1) as cluster:
        processes.add(w.pid for w in cluster.workers())
        ref = square.remote(2)
        with pytest.raises(RuntimeError, match="await") as info:
            ag.get(ref)
        assert not isinstance(info.value, ag.GetTimeoutError)
        with pytest.raises(RuntimeError, match="await"):
            ag.wait([ref])
        name = unique("counter")
        handle = await Counter.options(name=name).remote()
        with pytest.raises(RuntimeError, match="await"):
            ag.get_actor(name)
        with pytest.raises(RuntimeError, match="await"):
            ag.kill(handle)
        agent = echo.remote()
        with pytest.raises(RuntimeError, match="await"):
            ag.send(agent, "hi")
        with pytest.raises(RuntimeError, match="await"):
            ag.ask(agent, "hi")
        # None of the refused calls disturbed anything.
        assert await ref == 4
        assert await handle.incr.remote() == 1
        await ag.send_async(agent, "stop")
        assert await agent == []
        # A second cluster cannot be opened while this one is up.
        with pytest.raises(RuntimeError, match="already initialized"):
            async with ag.connect(num_workers=1):
                pass
    await _wait_gone(processes)


async def test_connect_block_that_raises_still_stops_the_workers(processes) -> None:
    with pytest.raises(ZeroDivisionError):
        async with ag.connect(num_workers=1) as cluster:
            processes.add(w.pid for w in cluster.workers())
            assert await square.remote(3) == 9
            raise ZeroDivisionError("from the body")
    assert not ag.is_initialized()
    await _wait_gone(processes)
