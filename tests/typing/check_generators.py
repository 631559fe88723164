"""Remote generators as users type them: checked by mypy (strict, with the actorgrid plugin),
never run. ``.remote()`` of a generator function or generator method is an
``ObjectRefGenerator[Y]`` whose items are ``ObjectRef[Y]``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import assert_type

import trio

import actorgrid as ag


@ag.remote
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@ag.remote
async def words(n: int) -> AsyncIterator[str]:
    for i in range(n):
        await trio.sleep(0)
        yield str(i)


@ag.remote
class Source:
    def __init__(self, base: int) -> None:
        self.base = base

    def count(self, n: int) -> Iterator[int]:
        for i in range(n):
            yield self.base + i

    async def names(self) -> AsyncIterator[str]:
        yield "a"

    def total(self) -> int:
        return self.base


def sync_usage() -> None:
    gen = numbers.remote(3)
    assert_type(gen, ag.ObjectRefGenerator[int])
    for ref in gen:
        assert_type(ref, ag.ObjectRef[int])
        assert_type(ag.get(ref), int)
    assert_type(numbers.options(generator_backpressure=8).remote(2), ag.ObjectRefGenerator[int])
    assert_type(words.remote(2), ag.ObjectRefGenerator[str])
    numbers.remote("three")  # type: ignore[arg-type]
    source = Source.remote(1)
    assert_type(source.count.remote(4), ag.ObjectRefGenerator[int])
    assert_type(source.names.remote(), ag.ObjectRefGenerator[str])
    assert_type(source.total.remote(), ag.ObjectRef[int])  # a plain method is unchanged
    ag.cancel(numbers.remote(1))


async def trio_usage() -> None:
    async for ref in numbers.remote(3):
        assert_type(ref, ag.ObjectRef[int])
        assert_type(await ref, int)
