"""actorgrid.testing.simulate: a whole cluster in one trio.run on virtual time.

Each test runs user code (tasks, actors, named and keyed agents, topics, trio.sleep) as a
driver's ``main`` and checks what a user of the simulation checks: the results, the virtual
time they came at, and that the same seed gives the same run (trace hash) while another seed
gives another.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import actorgrid as ag
from actorgrid.testing import (
    DelayLink,
    KillWorker,
    PartitionNode,
    Sim,
    current_host,
    random_faults,
    simulate,
)

HERE = Path(__file__).resolve().parent
PULSE_S = 5.0  # the workloads below span minutes: fewer pulses, same behaviour


@ag.remote
async def square_later(x: int) -> tuple[int, str]:
    await trio.sleep(x)
    return x * x, current_host()


@ag.remote
def square_now(x: int) -> int:
    return x * x


@ag.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> tuple[int, str]:
        self.n += 1
        return self.n, current_host()


@ag.remote
async def account(ctx: ag.Context):
    balance = 0
    async for msg in ctx.mailbox:
        if msg[0] == "deposit":
            balance += msg[1]
        elif msg[0] == "follow":
            ctx.subscribe("ticks")
            await ctx.send(msg[1], (ctx.key, "following"))
        elif msg[0] == "tick":
            await ctx.send(msg[1], (ctx.key, balance, trio.current_time()))


@ag.remote
async def collect(ctx: ag.Context, n: int) -> list:
    return sorted([await ctx.mailbox.receive() for _ in range(n)])


@ag.remote
async def gossip(ctx: ag.Context, peers: list[str], rounds: int, seed: int) -> int:
    """Sends ``rounds`` messages to random peers by name, one every few virtual seconds,
    while counting what it receives; returns what it received by the end."""
    rng = random.Random(seed)
    got = 0

    async def talk() -> None:
        for _ in range(rounds):
            await trio.sleep(rng.uniform(1, 5))
            await ctx.send(rng.choice(peers), "hi")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(talk)
        async for msg in ctx.mailbox:
            if msg == "stop":
                nursery.cancel_scope.cancel()
                break
            got += 1
    return got


async def mixed_workload() -> dict:
    """A bit of everything a driver does, timed on the virtual clock."""
    out: dict = {}
    t0 = trio.current_time()
    later = await ag.get_async([square_later.remote(i) for i in range(5)])
    out["later"] = [value for value, _ in later]
    out["later_at"] = trio.current_time() - t0
    out["now"] = await ag.get_async([square_now.remote(i) for i in range(5)])
    counter = Counter.options(name="counter").remote()
    out["counts"] = [(await counter.incr.remote())[0] for _ in range(3)]
    for who in ("alice", "bob"):
        await ag.send_async(account.key(who), ("deposit", 10))
    inbox = collect.remote(2)
    for who in ("alice", "bob"):
        await ag.send_async(account.key(who), ("follow", inbox))
    out["following"] = await inbox
    await trio.sleep(60)
    inbox = collect.remote(2)
    await ag.publish_async("ticks", ("tick", inbox))
    out["ticks"] = await inbox
    names = [f"g{i}" for i in range(6)]
    agents = [gossip.options(name=n).remote(names, 20, i) for i, n in enumerate(names)]
    await trio.sleep(200)
    for n in names:
        await ag.send_async(n, "stop")
    out["gossip"] = sum(await ag.get_async(agents))
    return out


def test_tasks_actors_agents_and_topics_run_on_virtual_time() -> None:
    result = simulate(mixed_workload, seed=1, pulse_interval=PULSE_S)
    out = result.value
    assert out["later"] == [0, 1, 4, 9, 16]
    assert out["later_at"] == 4.0  # exactly the longest sleep: virtual time, no overhead
    assert out["now"] == [0, 1, 4, 9, 16]
    assert out["counts"] == [1, 2, 3]
    assert out["following"] == [("alice", "following"), ("bob", "following")]
    assert [t[:2] for t in out["ticks"]] == [("alice", 10), ("bob", 10)]
    assert out["gossip"] == 6 * 20  # every message sent by name arrived
    assert result.error is None and result.messages > 100
    assert result.time > 260  # the virtual minutes passed in well under a real one


def test_the_same_seed_gives_the_same_trace_in_other_processes() -> None:
    # Two processes with different PYTHONHASHSEEDs (set iteration order over strings). Both
    # import this module, so both ship its functions the same way (by reference): a payload
    # pickled otherwise has another size, which the trace records.
    program = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        "from test_simulate import PULSE_S, mixed_workload; "
        "from actorgrid.testing import simulate; "
        "print(simulate(mixed_workload, seed=5, pulse_interval=PULSE_S).trace_hash)"
    )
    outputs = []
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        outputs.append(run.stdout.strip())
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == 32


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    first = simulate(mixed_workload, seed=5, pulse_interval=PULSE_S)
    again = simulate(mixed_workload, seed=5, pulse_interval=PULSE_S)
    other = simulate(mixed_workload, seed=6, pulse_interval=PULSE_S)
    assert first.value == again.value
    assert first.trace_hash == again.trace_hash
    assert [str(e) for e in first.log] == [str(e) for e in again.log]
    assert other.trace_hash != first.trace_hash
    assert other.value["later"] == first.value["later"]  # the results do not depend on it


@ag.remote(max_retries=0)
async def fragile_sum(n: int) -> int:
    total = 0
    for i in range(n):
        await trio.sleep(1)
        total += i
    return total


async def sum_twenty_times() -> list[int]:
    """Twenty rounds of two sums at once: every worker is busy all the time."""
    sums = []
    for _ in range(20):
        sums += await ag.get_async([fragile_sum.remote(10), fragile_sum.remote(10)])
    return sums


def test_a_seeded_fault_schedule_reproduces_the_same_failure() -> None:
    faults = random_faults(11, within_s=150, kills=1)
    first = simulate(sum_twenty_times, seed=3, faults=faults)
    again = simulate(sum_twenty_times, seed=3, faults=faults)
    assert isinstance(first.error, ag.WorkerDiedError)
    assert type(again.error) is type(first.error)
    assert str(again.error) == str(first.error)
    assert again.time == first.time  # the same virtual instant
    assert again.trace_hash == first.trace_hash
    kill = faults[0]
    assert isinstance(kill, KillWorker)
    assert kill.at <= first.time <= kill.at + 10  # it failed in the round the worker died
    assert simulate(sum_twenty_times, seed=3).value == [45] * 40  # and only because of it


def test_faults_injected_from_main_at_a_chosen_moment() -> None:
    async def main(sim: Sim) -> tuple[str, float, list[str], list[str]]:
        refs = [square_later.options(max_retries=1).remote(10) for _ in range(2)]
        await trio.sleep(3)
        victim = sim.kill_worker(restart_after_s=None)  # drawn from the seed, for good
        done = await ag.get_async(refs)
        return victim, trio.current_time(), [host for _, host in done], sim.workers

    victim, at, hosts, live = simulate(main, seed=2).value
    survivor = ({"n0w0", "n0w1"} - {victim}).pop()
    assert hosts == [survivor, survivor]  # the killed one's task was retried on the other
    assert at == 13.0  # at once: 3 s lost, then 10 s again
    assert live == [survivor]


def test_a_delayed_link_slows_calls_by_exactly_its_delay() -> None:
    async def main() -> float:
        await ag.get_async([square_later.remote(1) for _ in range(2)])  # both links are up
        t0 = trio.current_time()
        await ag.get_async([square_now.remote(i) for i in range(4)])
        return trio.current_time() - t0

    assert simulate(main, seed=1).value == 0.0
    delays = [DelayLink(0, "driver", w, by_s=0.25) for w in ("n0w0", "n0w1")]
    assert simulate(main, seed=1, faults=delays).value == 0.5  # there and back


def test_a_timeout_ends_a_hung_simulation_with_an_error_that_says_so() -> None:
    async def main() -> None:
        await trio.Event().wait()

    result = simulate(main, seed=1, timeout=30)
    assert isinstance(result.error, TimeoutError)
    assert "30 virtual seconds" in str(result.error)
    assert result.time == 30.0
    with pytest.raises(TimeoutError):
        _ = result.value


def test_simulate_refuses_to_run_inside_trio() -> None:
    async def inside() -> None:
        async def main() -> None:
            pass

        with pytest.raises(RuntimeError, match=r"its own trio\.run"):
            simulate(main)

    trio.run(inside)


def test_a_partition_longer_than_the_zombie_window_drops_the_node() -> None:
    async def main(sim: Sim) -> tuple[int, str, float]:
        t0 = trio.current_time()
        refs = [square_later.options(max_retries=2).remote(20) for _ in range(2)]
        done = await ag.get_async(refs)
        hosts = {host for _, host in done}
        return len(hosts), sorted(hosts)[0], trio.current_time() - t0

    partition = PartitionNode(5.0, node=1, until=60.0)
    result = simulate(main, seed=4, nodes=2, workers_per_node=1, faults=[partition])
    n_hosts, host, took = result.value
    # Node 1's task was lost with it: rerun on node 0 once node 1 was found silent.
    assert (n_hosts, host) == (1, "n0w0")
    assert 20 + 5 < took < 20 + 5 + 20
    assert result.dropped > 0
