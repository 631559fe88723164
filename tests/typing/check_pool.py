"""ag.Pool and ag.ActorPool as users type them: checked by mypy (strict), never run."""

from __future__ import annotations

from typing import Any, assert_type

import actorgrid as ag


def square(x: int) -> int:
    return x * x


def pair(a: int, b: str) -> tuple[int, str]:
    return a, b


def sync_use(pool: ag.Pool) -> None:
    assert_type(pool.map(square, range(3)), list[int])
    assert_type(pool.apply(square, (3,)), int)
    assert_type(pool.starmap(pair, [(1, "a")]), list[tuple[int, str]])
    result = pool.apply_async(square, (3,))
    assert_type(result, ag.AsyncResult[int])
    assert_type(result.get(timeout=1.0), int)
    assert_type(pool.map_async(square, [1]).get(), list[int])
    for x in pool.imap(square, range(3), chunksize=2):
        assert_type(x, int)
    assert_type(pool.processes, int)


async def trio_use(pool: ag.Pool) -> None:
    assert_type(await pool.map_async(square, range(3)), list[int])
    assert_type(await pool.apply_async(square, (2,)), int)
    async for x in pool.imap_unordered(square, range(3)):
        assert_type(x, int)


def actor_pool_use(pool: ag.ActorPool[Any]) -> None:
    assert_type(pool.submit(1), Any)
    assert_type(pool.workers_count(), int)
    pool.update_workers({"result": 1})
