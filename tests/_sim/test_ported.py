"""The runtime's own retry, restart, zombie and backpressure tests, on the simulation.

Each is a logic test first written against real processes (named in its docstring; those stay,
for what processes add: signals, pipes, real sockets). Here the same behaviour is checked on
virtual time, so timings are exact and a run is replayable by its seed, and a kill or a
silent worker costs nothing real.
"""

from __future__ import annotations

import trio

import actorgrid as ag
from actorgrid.testing import DropLink, Sim, current_host, simulate

PULSE_S = 1.0  # the default pulse interval: a peer silent for 5 of them is a zombie
ZOMBIE_WINDOW_S = 5 * PULSE_S
SMALL = 4  # mailbox_size of the agents under pressure


@ag.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self) -> tuple[int, str]:
        self.n += 1
        return self.n, current_host()


def test_a_named_actor_is_restarted_when_its_worker_is_killed() -> None:
    """tests/_node/test_supervision.py::test_a_named_actor_is_restarted_when_its_worker_is_killed"""

    async def main(sim: Sim) -> str:
        c = Counter.options(name="survivor", max_restarts=1, max_task_retries=1).remote(10)
        n, host = await c.incr.remote()
        assert n == 11
        sim.kill_worker(host)
        # The same handle reaches the new incarnation, whose constructor ran again.
        n2, host2 = await c.incr.remote()
        assert n2 == 11
        same = await ag.get_actor_async("survivor")
        assert (await same.incr.remote())[0] == 12
        assert "actor_restarted" in [e.kind for e in await sim.recent_events()]
        # Its restarts are used up: the next death is final.
        sim.kill_worker(host2)
        try:
            await c.incr.remote()
        except ag.ActorDiedError:
            return "died for good"
        return "still alive"

    assert simulate(main, seed=1).value == "died for good"


@ag.remote(max_restarts=2)
async def fragile(ctx: ag.Context) -> list[str]:
    seen: list[str] = []
    async for msg in ctx.mailbox:
        if msg == "boom":
            raise RuntimeError("boom")
        if msg == "stop":
            return seen
        seen.append(msg)
    return seen


def test_a_coroutine_actor_that_raises_restarts_with_its_mailbox() -> None:
    """tests/_node/test_supervision.py::test_a_coroutine_actor_that_raises_restarts_with_its_mailbox"""

    async def main(sim: Sim) -> tuple[list[str], int]:
        ref = fragile.options(name="fragile").remote()
        for msg in ["a", "boom", "b", "boom", "c", "stop"]:
            await ag.send_async("fragile", msg)
        seen = await ref
        kinds = [e.kind for e in await sim.recent_events()]
        return seen, kinds.count("actor_restarted")

    # Restarted twice; the messages queued behind each crash were kept for the next run.
    assert simulate(main, seed=1).value == (["c"], 2)


@ag.remote
def flaky(runs: ag.ActorHandle, key: str) -> str:
    raise ValueError(f"run {key} fails")


@ag.remote
async def flaky_async(runs: ag.ActorHandle, key: str) -> str:
    n, _ = await runs.incr.remote()
    if n < 3:
        raise ValueError(f"run {n} fails")
    return f"ok after {n}"


def test_application_errors_retry_only_when_asked() -> None:
    """tests/_node/test_supervision.py::test_application_errors_retry_only_when_asked"""

    async def attempt(**options: object) -> str:
        runs = Counter.remote()
        try:
            return await flaky_async.options(**options).remote(runs, "x")
        except ValueError as exc:
            return str(exc.args[0])

    async def main() -> list[str]:
        return [
            await attempt(),
            await attempt(retry_exceptions=[ValueError]),
            await attempt(retry_exceptions=True, max_retries=1),
            await attempt(retry_exceptions=[KeyError]),
        ]

    expected = ["run 1 fails", "ok after 3", "run 2 fails", "run 1 fails"]
    assert simulate(main, seed=1).value == expected


@ag.remote
async def where_after(seconds: float) -> tuple[str, float]:
    await trio.sleep(seconds)
    return current_host(), trio.current_time()


def test_a_silent_worker_is_found_within_the_zombie_window_and_its_task_reruns() -> None:
    """tests/_node/test_supervision.py::test_a_stopped_worker_is_found_fenced_and_its_task_reruns
    (a stopped process is silent: here, every frame to and from it vanishes)."""

    async def main(sim: Sim) -> tuple[str, str, float]:
        ref = where_after.remote(10)
        await trio.sleep(1)
        busy = [w for w in sim.workers]
        # The task is on one of the two workers; cut that one off from everybody.
        victim = await _host_running_a_task(sim, busy)
        for other in ["head", "driver", *[w for w in busy if w != victim]]:
            sim.apply(DropLink(0, victim, other))
        host, finished_at = await ref
        return victim, host, finished_at

    victim, host, finished_at = simulate(main, seed=3).value
    assert host != victim  # it ran again elsewhere
    # Cut at 1 s; silent for the zombie window (checked once a pulse), its link dropped by
    # the driver a pulse after the head says so; then run again for 10 s.
    assert 1 + ZOMBIE_WINDOW_S + 10 < finished_at <= 1 + ZOMBIE_WINDOW_S + 2 * PULSE_S + 10


async def _host_running_a_task(sim: Sim, hosts: list[str]) -> str:
    # The other worker is idle: a probe lands there (placement prefers the less loaded one).
    probe, _ = await where_after.remote(0)
    (running,) = [h for h in hosts if h != probe]
    return running


@ag.remote
async def ring_member(ctx: ag.Context, next_name: str, delay_s: float) -> None:
    """Forwards every message to the next member, taking ``delay_s`` over each."""
    async for msg in ctx.mailbox:
        if msg == "stop":
            return None
        await trio.sleep(delay_s)
        await ctx.send(next_name, msg)
    return None


@ag.remote
async def ring_head(ctx: ag.Context, next_name: str, count: int) -> list[int]:
    """Sends 0..count-1 round the ring as fast as it may while collecting what comes back."""
    got: list[int] = []

    async def produce() -> None:
        for i in range(count):
            await ctx.send(next_name, i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for msg in ctx.mailbox:
            got.append(msg)
            if len(got) == count:
                break
    return got


def test_a_ring_where_each_sends_faster_than_the_next_consumes_delivers_all_in_order() -> None:
    """tests/_runtime/test_flow_control.py::test_a_ring_where_each_sends_faster_than_the_next_consumes_delivers_all_in_order"""
    size, count = 8, 300
    names = [f"ring{i}" for i in range(size)]

    async def main() -> tuple[list[int], float]:
        members = [
            ring_member.options(name=names[i], mailbox_size=SMALL).remote(
                names[(i + 1) % size], 0.01 * i
            )
            for i in range(1, size)
        ]
        head = ring_head.options(name=names[0], mailbox_size=SMALL).remote(names[1], count)
        got = await head
        for name in names[1:]:
            await ag.send_async(name, "stop")
        await ag.get_async(members)
        return got, trio.current_time()

    got, took = simulate(main, seed=1).value
    assert got == list(range(count))
    # The slowest member (0.07 s a message) paces the ring: the others wait for it.
    assert took >= count * 0.01 * (size - 1)


@ag.remote
async def holder(ctx: ag.Context, hold_s: float, count: int) -> list[object]:
    """On "hold", reads nothing for ``hold_s``; returns the first ``count`` messages after."""
    got: list[object] = []
    async for msg in ctx.mailbox:
        if msg == "hold":
            await trio.sleep(hold_s)
        else:
            got.append(msg)
            if len(got) == count:
                break
    return got


@ag.remote
async def flooder(ctx: ag.Context, target: str, count: int) -> float:
    """Sends 0..count-1 to target; returns how long it took."""
    start = trio.current_time()
    for i in range(count):
        await ctx.send(target, i)
    return trio.current_time() - start


def test_a_link_held_back_for_40_pulse_intervals_stays_up_and_delivers_everything() -> None:
    """tests/_runtime/test_flow_control.py::test_a_link_held_back_for_30_pulse_intervals_stays_up_and_delivers_everything"""
    hold_s = 40 * PULSE_S  # eight zombie windows of silence, had the reader stopped reading
    count = SMALL + 300  # more than the mailbox and the link's credit window

    async def main(sim: Sim) -> tuple[list[object], float, list[str], list[str]]:
        workers = sorted(sim.workers)
        h = holder.options(name="holder", mailbox_size=SMALL).remote(hold_s, count)
        await ag.send_async("holder", "hold")
        took = await flooder.remote("holder", count)
        got = await h
        kinds = [e.kind for e in await sim.recent_events()]
        return got, took, kinds, [w for w in workers if w not in sim.workers]

    got, took, kinds, lost = simulate(main, seed=2).value
    assert got == list(range(count))  # all of them, once, in the order sent
    assert took >= hold_s - 1  # it waited for credit while the holder held, not for a new link
    assert lost == []  # no worker was declared a zombie
    assert not set(kinds) & {"worker_zombie", "worker_died", "worker_left"}
