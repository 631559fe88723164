"""``ag.Pool`` inside ``trio.run`` with the Trio-native runtime (``async with ag.connect()``):
results are awaited and iterated on the runtime's own loop, and leaving ``async with`` ends
a map that is still running."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import trio

import actorgrid as ag

DEADLINE_S = 60.0


def square(x: int) -> int:
    return x * x


def tick_forever(folder: str, i: int) -> None:
    (Path(folder) / f"started-{i}").touch()
    for _ in range(int(DEADLINE_S / 0.01)):
        time.sleep(0.01)


def test_pool_on_the_trio_native_runtime(tmp_path: Path) -> None:
    async def main() -> tuple[list[int], list[int], int, float, list[int]]:
        async with ag.connect(num_workers=2) as cluster:
            pids = [w.pid for w in cluster.workers()]
            async with ag.Pool() as pool:
                squares = await pool.map_async(square, range(10))
                unordered = [x async for x in pool.imap_unordered(square, range(10))]
                one = await pool.apply_async(square, (9,))
            # Leaving the block terminates the pool: a running map stops.
            async with ag.Pool() as pool:
                pending = pool.starmap_async(tick_forever, [(str(tmp_path), i) for i in range(4)])
                while not list(tmp_path.glob("started-*")):
                    await trio.sleep(0.01)
                start = time.monotonic()
            took = time.monotonic() - start
            assert pending.ready() and not pending.successful()
            return squares, unordered, one, took, pids

    squares, unordered, one, took, pids = trio.run(main)
    assert squares == [x * x for x in range(10)]
    assert sorted(unordered) == squares
    assert one == 81
    assert took < DEADLINE_S / 2
    _, alive = psutil.wait_procs(
        [psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10
    )
    assert not alive, f"worker processes left behind: {alive}"
