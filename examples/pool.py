"""multiprocessing.Pool over the cluster: swap the class, keep the program.

python examples/pool.py
"""

from __future__ import annotations

import time

import trio

import actorgrid as ag

OFFSET = 0


def set_offset(offset: int) -> None:
    """The pool's initializer: runs once in each worker process, before its first item."""
    global OFFSET
    OFFSET = offset


def shifted(x: int) -> int:
    return x + OFFSET


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def noop(x: int) -> int:
    return x


async def from_trio(pool: ag.Pool) -> None:
    squares = await pool.starmap_async(pow, [(2, 2), (3, 2)])  # never blocks the loop
    async for x in pool.imap_unordered(collatz_steps, [27, 97], chunksize=1):
        squares.append(x)
    print(f"from Trio: {sorted(squares)}")


def main() -> None:
    with ag.init(num_workers=2):
        with ag.Pool(initializer=set_offset, initargs=(1000,)) as pool:
            print(f"pool: {pool.processes} processes")
            steps = pool.map(collatz_steps, range(1, 10_000))
            longest = max(steps)
            print(
                f"longest Collatz run below 10000: {longest} steps, from {steps.index(longest) + 1}"
            )
            print(f"imap: {list(pool.imap(shifted, range(5), chunksize=2))}")
            print(f"starmap: {pool.starmap(divmod, [(17, 5), (9, 2)])}")
            seen: list[int] = []
            result = pool.apply_async(collatz_steps, (27,), callback=seen.append)
            print(f"apply_async: {result.get(timeout=60)}, callback got {seen}")
            try:
                pool.apply(int, ("not a number",))
            except ValueError as exc:
                print(f"error: ValueError {exc.args[0]}")
            trio.run(from_trio, pool)
            start = time.perf_counter()
            done = pool.map(noop, range(100_000))
            elapsed = time.perf_counter() - start
            print(
                f"{len(done)} no-op items in {elapsed:.3f} s ({len(done) / elapsed:,.0f} items/s)"
            )
        print("pool terminated")


if __name__ == "__main__":
    main()
