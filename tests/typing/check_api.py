"""The public API as users type it: checked by mypy (strict), never run.

A change that loses a type users rely on (ParamSpec'd ``.remote()``, typed refs, typed get)
fails ``nox -s typecheck``.
"""

from __future__ import annotations

from typing import Any, assert_type

import trio

import actorgrid as ag


@ag.remote
def square(x: int) -> int:
    return x * x


@ag.remote
async def fetch(url: str, *, retries: int = 3) -> bytes:
    await trio.sleep(0)
    return url.encode()


class _Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, k: int = 1) -> int:
        self.n += k
        return self.n


# Wrapping a class with a call types it without the mypy plugin too; with the plugin,
# ``@ag.remote`` on the class works as well (tests/typing/check_actors.py).
Counter = ag.remote(_Counter)


def sync_usage() -> None:
    ref = square.remote(3)
    assert_type(ref, ag.ObjectRef[int])
    assert_type(ag.get(ref), int)
    assert_type(ag.get([ref, ref]), list[Any])
    assert_type(fetch.remote("x", retries=1), ag.ObjectRef[bytes])
    square.remote("three")  # type: ignore[arg-type]
    fetch.remote("x", attempts=2)  # type: ignore[call-arg]
    counter = Counter.options(name="c").remote(5)
    assert_type(counter, ag.ActorHandle[_Counter])
    ready, not_ready = ag.wait([ref], num_returns=1, timeout=1.0)
    assert_type(not_ready, list[ag.ObjectRef[Any]])
    assert_type(ready, list[ag.ObjectRef[Any]])
    assert_type(ag.put([1, 2]), ag.ObjectRef[list[int]])
    with ag.init(num_workers=2) as cluster:
        assert_type(cluster, ag.Cluster)


async def trio_usage() -> None:
    async with ag.connect(num_workers=2):
        value = await square.remote(4)
        assert_type(value, int)
        handle = await Counter.options(name="c2").remote()
        assert_type(handle, ag.ActorHandle[_Counter])


@ag.remote
async def agent(ctx: ag.Context, peer: str) -> None:
    async for msg in ctx.mailbox:
        await ctx.send(peer, msg)
        answer = await ctx.ask(peer, msg, timeout=1.0)
        await ctx.reply(answer)


def agent_usage() -> None:
    assert_type(agent.remote("b"), ag.ObjectRef[None])
