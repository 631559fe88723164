"""Quickstart: tasks, an actor, a name, on an embedded local cluster.

pip install -e '.[examples]' && python examples/quickstart.py
"""

from __future__ import annotations

import time

import psutil

import actorgrid as ag


@ag.remote
def square(x: int) -> int:
    return x * x


@ag.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, k: int = 1) -> int:
        self.n += k
        return self.n


@ag.remote
async def greeter(ctx: ag.Context, greeting: str) -> int:
    """A remote coroutine with a mailbox: answers asks until told to stop."""
    served = 0
    async for msg in ctx.mailbox:
        if msg == "stop":
            return served
        served += 1
        await ctx.reply(f"{greeting}, {msg}!")
    return served


def main() -> None:
    started = time.perf_counter()
    with ag.init(num_workers=2) as cluster:
        print(f"cluster up in {time.perf_counter() - started:.2f} s: {cluster}")
        workers = [psutil.Process(pid) for pid in cluster.node_pids]

        squares = ag.get([square.remote(i) for i in range(10)])
        print("squares:", squares)
        assert squares == [i * i for i in range(10)]

        counter = Counter.options(name="counter").remote(5)
        print("counter:", ag.get(counter.incr.remote()), ag.get(counter.incr.remote(10)))
        same = ag.get_actor("counter")
        assert ag.get(same.incr.remote()) == 17

        done = greeter.options(name="greeter").remote("Hello")
        print(ag.ask("greeter", "actorgrid", timeout=10))
        ag.send("greeter", "stop")
        print("greeter served", ag.get(done, timeout=10), "ask(s)")
    _, alive = psutil.wait_procs(workers, timeout=10)
    print(f"done in {time.perf_counter() - started:.2f} s; worker processes left: {len(alive)}")


if __name__ == "__main__":
    main()
