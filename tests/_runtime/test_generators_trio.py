"""Remote generators consumed on the Trio-native runtime (``async with ag.connect()``): the
consumer is a Trio task on the runtime's own loop, and a cancel scope around it works."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import trio

import actorgrid as ag

DEADLINE_S = 60.0


def numbers(n: int) -> Iterator[int]:
    yield from range(n)


async def ticks(n: int) -> AsyncIterator[str]:
    for i in range(n):
        await trio.sleep(0)
        yield f"tick {i}"


class Source:
    def lines(self, n: int) -> Iterator[str]:
        for i in range(n):
            yield f"line {i}"


def test_async_for_on_the_runtime_loop() -> None:
    async def main() -> tuple[list[int], list[str], list[str], list[int]]:
        with trio.fail_after(DEADLINE_S):
            async with ag.connect(num_workers=2):
                gen = ag.remote(numbers).options(generator_backpressure=4).remote(50)
                got = [await ref async for ref in gen]
                async_got = [await ref async for ref in ag.remote(ticks).remote(3)]
                source = ag.remote(Source).remote()
                lines = [await ref async for ref in source.lines.remote(3)]
                # Two consumers at once on the loop, interleaved by Trio.
                both: list[int] = []

                async def consume(n: int) -> None:
                    async for ref in ag.remote(numbers).remote(n):
                        both.append(await ref)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, 20)
                    nursery.start_soon(consume, 30)
                return got, async_got, lines, both

    got, async_got, lines, both = trio.run(main)
    assert got == list(range(50))
    assert async_got == ["tick 0", "tick 1", "tick 2"]
    assert lines == ["line 0", "line 1", "line 2"]
    assert sorted(both) == sorted([*range(20), *range(30)])
