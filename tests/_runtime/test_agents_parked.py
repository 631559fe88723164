"""Parked agents (parking.py): an idle agent has no Trio task; its next message resumes it
where it waited, with its local state and its contextvars, and stopping it runs its
``finally`` blocks. An agent that holds a cancel scope, a deadline or a nursery across its wait
never parks.

On real workers: one 1-worker cluster for the module, started with ``ACTORGRID_PARK_FROM`` at
FILLERS and that many idle agents on it, so that its busy agents are resumed at each message
and never given a Trio task of their own (test_agents_idle.py has the smaller worker's). What
a user sees of a park is that its code runs in another task after it (the worker's resumer,
whose name says so); that is what these agents report (from their second message: an agent
may park before its first, or not, as its first message comes). The stop of a worker whose
agents are parked (every ref resolved, ``finally`` run) is test_agents_stop.py's.
"""

from __future__ import annotations

import contextvars
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from conftest import ProcessWatch

import actorgrid as ag
from actorgrid._runtime.agentpools import _STEPPERS_MAX

pytestmark = pytest.mark.timeout(240)

# Idle agents a worker hosts before its agents park (below the default, to keep the test short).
FILLERS = 1000
# Agents that await at their start (test_agents_that_await_at_their_start_...).
EAGER = 200
# More agents awaiting at their start than a worker's steppers carry before a stall (and
# awaiting once woken than its resumers carry).
STALLERS = _STEPPERS_MAX + 100


def _resumed() -> bool:
    """Whether the agent runs resumed after a park: in its worker's resumer task
    (agenthost.py), not a task of its own."""
    return "_resume_inline" in trio.lowlevel.current_task().name


@ag.remote
async def filler(ctx: ag.Context) -> None:
    async for _ in ctx.mailbox:
        pass


@ag.remote
async def pid_of(ctx: ag.Context) -> None:
    import os

    async for _ in ctx.mailbox:
        await ctx.reply(os.getpid())


@ag.remote(max_restarts=1)
async def keeper(ctx: ag.Context, path: str) -> None:
    """Counts what it receives, in a local and in a contextvar of its own; answers each ask
    with both and whether it runs in the task that took the message before. "boom" makes it
    raise (it has a restart). Its ``finally`` writes its count to ``path``."""
    var: contextvars.ContextVar[int] = contextvars.ContextVar("seen")
    var.set(0)
    count = 0
    try:
        async for msg in ctx.mailbox:
            if msg == "boom":
                raise ValueError("boom")
            count += 1
            var.set(var.get() + 1)
            await ctx.reply((count, var.get(), _resumed()))
    finally:
        Path(path).write_text(f"finally after {count}")


@ag.remote
async def holder(ctx: ag.Context, hold: str) -> None:
    """Waits on its mailbox while holding ``hold`` (a cancel scope, a deadline, a nursery, or
    nothing; "receive": nothing, waiting in ``receive()``); answers whether it runs in the task that took the message before."""

    async def serve() -> None:
        async for _ in ctx.mailbox:
            await ctx.reply(_resumed())

    if hold == "receive":  # nothing held, and receive() rather than async for
        while True:
            await ctx.mailbox.receive()
            await ctx.reply(_resumed())

    if hold == "scope":
        with trio.CancelScope():
            await serve()
    elif hold == "deadline":
        with trio.move_on_after(3600):
            await serve()
    elif hold == "nursery":
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await serve()
            nursery.cancel_scope.cancel()
    else:
        await serve()


@ag.remote
async def awaits_file(ctx: ag.Context, path: str) -> None:
    """Awaits at its start, before its first mailbox wait, until ``path`` exists; then
    answers each message."""
    while not os.path.exists(path):
        await trio.sleep(0.05)
    async for _ in ctx.mailbox:
        await ctx.reply(True)


@ag.remote
async def makes_file(ctx: ag.Context, path: str) -> None:
    Path(path).write_text("")
    async for _ in ctx.mailbox:
        pass


@ag.remote
async def awaits_file_when_told(ctx: ag.Context, path: str) -> None:
    """Answers each ask with whether it runs resumed; "wait" (sent, not asked) makes it
    await, where it was woken, until ``path`` exists."""
    async for msg in ctx.mailbox:
        if msg == "wait":
            while not os.path.exists(path):
                await trio.sleep(0.05)
        else:
            await ctx.reply(_resumed())


@ag.remote
async def makes_file_when_told(ctx: ag.Context, path: str) -> None:
    """Answers each ask with whether it runs resumed; "make" makes ``path``."""
    async for msg in ctx.mailbox:
        if msg == "make":
            Path(path).write_text("")
        else:
            await ctx.reply(_resumed())


@ag.remote
async def string_id(ctx: ag.Context, s: str) -> None:
    async for _ in ctx.mailbox:
        await ctx.reply(id(s))


@ag.remote
async def late_sink(ctx: ag.Context) -> None:
    """Reads nothing for a second (its small mailbox fills and its senders wait), then keeps
    what each sender sent, in order; asked "log", replies with it."""
    await trio.sleep(1.0)  # not a bound: what it makes likely (senders waiting) is not asserted
    got: dict[int, list[int]] = {}
    async for msg in ctx.mailbox:
        if msg == "log":
            await ctx.reply(got)
        else:
            sender, k = msg
            got.setdefault(sender, []).append(k)


@ag.remote
async def eager(ctx: ag.Context, i: int, sink: str) -> None:
    """Sends to ``sink`` before its first wait (awaiting while its mailbox is full), keeps a
    local and a contextvar; each message makes it send three more in order, then reply with
    its state, where its start ran and whether it runs resumed."""
    var: contextvars.ContextVar[int] = contextvars.ContextVar("mine")
    var.set(i)
    await ctx.send(sink, (i, 0))
    started_in = trio.lowlevel.current_task().name
    seen = 0
    async for _ in ctx.mailbox:
        seen += 1
        for k in range(1, 4):
            await ctx.send(sink, (i, seen * 10 + k))
        var.set(var.get() + 1000)
        await ctx.reply((seen, var.get(), "_start_inline" in started_in, _resumed()))


@ag.remote
async def tally(ctx: ag.Context) -> None:
    """Keeps what each sender sent, in order; asked ("log", n), replies with it once it holds
    n messages."""
    got: dict[int, list[int]] = {}
    held = 0
    waiting: list[tuple[int, ag.Request]] = []
    async for msg in ctx.mailbox:
        if msg[0] == "log":
            assert ctx.request is not None
            waiting.append((msg[1], ctx.request))
        else:
            sender, k = msg
            got.setdefault(sender, []).append(k)
            held += 1
        for item in [w for w in waiting if held >= w[0]]:
            waiting.remove(item)
            item[1].reply(got)


@ag.remote
async def relay(ctx: ag.Context, i: int, sink: str) -> None:
    """Subscribed to "relay-go": each publish makes it send three messages to ``sink`` by
    name (its first a lookup, then into a small mailbox: it awaits while resumed);
    "state" answers how many it got and whether it runs resumed."""
    ctx.subscribe("relay-go")
    seen = 0
    async for msg in ctx.mailbox:
        if msg == "state":
            await ctx.reply((seen, _resumed()))
            continue
        seen += 1
        for k in range(1, 4):
            await ctx.send(sink, (i, seen * 10 + k))


@pytest.fixture(scope="module")
def parking_cluster() -> Iterator[None]:
    watch = ProcessWatch()
    before = os.environ.get("ACTORGRID_PARK_FROM")
    os.environ["ACTORGRID_PARK_FROM"] = str(FILLERS)  # read by the workers ag.init starts
    try:
        with ag.init(num_workers=1):
            watch.add([ag.ask(pid_of.remote(), "pid", timeout=60)])
            fillers = [filler.remote() for _ in range(FILLERS)]
            _ask(holder.remote("nothing"), 0)  # started after the fillers: they are all up
            yield
            del fillers
        watch.wait_gone()
    finally:
        if before is None:
            os.environ.pop("ACTORGRID_PARK_FROM", None)
        else:
            os.environ["ACTORGRID_PARK_FROM"] = before
        watch.kill_leftovers()


def _ask(target: object, msg: object) -> object:
    return ag.ask(target, msg, timeout=60)


def test_a_parked_agent_resumes_with_its_state_and_contextvars(
    parking_cluster: None, tmp_path: Path
) -> None:
    path = tmp_path / "keeper"
    agent = keeper.remote(str(path))
    assert _ask(agent, "a")[:2] == (1, 1)  # parked before it came, or not: a race
    assert _ask(agent, "b") == (2, 2, True)  # parked, resumed: its state and var kept
    assert _ask(agent, "c") == (3, 3, True)
    # Its code raised while it ran resumed: its finally ran, and it runs again on its mailbox
    # (parked or not before "d" comes: that is a race).
    ag.send(agent, "boom")
    assert _ask(agent, "d")[:2] == (1, 1)
    assert path.read_text() == "finally after 3"
    assert _ask(agent, "e") == (2, 2, True)

    receiving = holder.remote("receive")
    assert [_ask(receiving, i) for i in range(3)][1:] == [True, True]

    ag.kill(agent)  # parked: stopped with no task of its own, its finally run
    with pytest.raises(ag.ActorDiedError, match="was killed"):
        ag.get(agent, timeout=60)
    assert path.read_text() == "finally after 2"


def test_agents_started_with_equal_strings_share_one_copy(parking_cluster: None) -> None:
    """A worker hosting 100,000 agents keeps one copy of a string many were started with
    (their name prefix, the agent they report to), not one each (agentruns._shared_args)."""
    prefix = "".join(["shared-", "prefix-", str(os.getpid())])  # made here, not a constant
    agents = [string_id.remote(prefix) for _ in range(3)]
    assert len({_ask(agent, "id") for agent in agents}) == 1
    for agent in agents:
        ag.kill(agent)


def test_agents_that_await_at_their_start_all_start_park_and_keep_their_state(
    parking_cluster: None,
) -> None:
    """EAGER agents that each send to one agent whose small mailbox is full: each waits at its
    start in one of the worker's steppers (no Trio task made for each, agenthost.py), parks
    once it got through, and its later messages find its state and contextvars; what each
    sends arrives in order."""
    sink = late_sink.options(name="late-sink", mailbox_size=2).remote()
    agents = [eager.remote(i, "late-sink") for i in range(EAGER)]
    # Parked before its first message came, or not (a race); before its second, parked.
    replies = [_ask(agent, "go")[:3] for agent in agents]
    assert replies == [(1, i + 1000, True) for i in range(EAGER)]
    replies = [_ask(agent, "go") for agent in agents]
    assert replies == [(2, i + 2000, True, True) for i in range(EAGER)]
    log = _ask("late-sink", "log")
    assert log == {i: [0, 11, 12, 13, 21, 22, 23] for i in range(EAGER)}
    for handle in [sink, *agents]:
        ag.kill(handle)
    for handle in [sink, *agents]:
        with pytest.raises(ag.ActorDiedError, match="was killed"):
            ag.get(handle, timeout=60)


def test_more_agents_awaiting_at_their_start_than_steppers_all_start(
    parking_cluster: None, tmp_path: Path
) -> None:
    """STALLERS agents each await at their start what only an agent started after them
    gives (the file it makes): more than the steppers a worker lets carry agents that await
    (agentpools._STEPPERS_MAX, so that agents waiting on one busy mailbox do not hold a Trio
    task each), yet the later one starts, and then every one of them gets through."""
    path = str(tmp_path / "made")
    agents = [awaits_file.remote(path) for _ in range(STALLERS)]
    maker = makes_file.remote(path)
    assert [_ask(agent, "go") for agent in agents] == [True] * STALLERS
    for handle in [maker, *agents]:
        ag.kill(handle)


@pytest.mark.slow
def test_more_parked_agents_awaiting_once_woken_than_resumers_all_get_through(
    parking_cluster: None, tmp_path: Path
) -> None:
    """STALLERS parked agents are woken in a burst and each awaits, in the resumer that woke
    it, what only an agent woken after them all gives (the file it makes): more than the
    resumers a worker lets carry agents that await (agentpools._STEPPERS_MAX, so that a
    burst of wakes that await a name's lookup or one full mailbox does not hold a Trio task
    each), yet the later one is woken, and then every one of them gets through."""
    path = str(tmp_path / "made")
    agents = [awaits_file_when_told.remote(path) for _ in range(STALLERS)]
    maker = makes_file_when_told.remote(path)
    for handle in [*agents, maker]:  # each parks at its wait after it answers
        _ask(handle, "up")
    for handle in agents:
        ag.send(handle, "wait")
    ag.send(maker, "make")  # on the same link, after them: its wake comes last
    assert [_ask(handle, "go") for handle in [*agents, maker]] == [True] * (STALLERS + 1)
    assert os.path.exists(path)
    for handle in [maker, *agents]:
        ag.kill(handle)


def test_parked_agents_woken_at_once_that_await_all_get_through_in_order(
    parking_cluster: None,
) -> None:
    """A publish wakes EAGER parked agents in one go; each awaits while resumed (a name's
    first lookup, a full mailbox), so each keeps a resumer task while the rest go on in
    others (agentpools.py); the resumers then wait for the next round, which reuses them.
    Every message arrives, in order per sender, and each agent kept its state."""
    sink = tally.options(name="tally", mailbox_size=4).remote()
    agents = [relay.remote(i, "tally") for i in range(EAGER)]
    # Each has subscribed once it answers (its mailbox takes the publish after this).
    assert [_ask(agent, "state")[0] for agent in agents] == [0] * EAGER
    for round_ in (1, 2):
        ag.publish("relay-go", round_)
        log = _ask("tally", ("log", 3 * EAGER * round_))
        expected = [k for r in range(1, round_ + 1) for k in (r * 10 + 1, r * 10 + 2, r * 10 + 3)]
        assert log == {i: expected for i in range(EAGER)}
    assert [_ask(agent, "state") for agent in agents] == [(2, True)] * EAGER
    for handle in [sink, *agents]:
        ag.kill(handle)
    for handle in [sink, *agents]:
        with pytest.raises(ag.ActorDiedError, match="was killed"):
            ag.get(handle, timeout=60)


@pytest.mark.parametrize("hold", ["scope", "deadline", "nursery"])
def test_an_agent_holding_trio_state_across_its_wait_never_parks(
    parking_cluster: None, hold: str
) -> None:
    plain, holding = holder.remote("nothing"), holder.remote(hold)
    # The plain one shows that agents park here (else this test could not fail).
    assert [_ask(plain, i) for i in range(3)][1:] == [True, True]
    assert [_ask(holding, i) for i in range(3)] == [False, False, False]
    ag.kill(holding)
    with pytest.raises(ag.ActorDiedError, match="was killed"):
        ag.get(holding, timeout=60)


def test_parking_logic_in_one_trio_run() -> None:
    """drive and may_park (no processes): a coroutine parked by its mailbox is resumed in
    another task in its own contextvars Context, and Cancelled thrown in runs its finally."""
    from actorgrid._runtime.inbox import open_inbox
    from actorgrid._runtime.parking import PARKED, cancelled_error, drive, may_park, park

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    log: list[object] = []

    class Run:
        coro = None
        context = None
        driver = None
        status = None
        scope = trio.CancelScope()
        woken = 0

        def parks(self) -> bool:
            return True

        def wake(self) -> None:
            self.woken += 1

    async def agent(run: Run, receive: object) -> None:
        var.set("mine")
        try:
            while True:
                assert isinstance(receive, type(open_inbox(1)[1]))
                item = receive.take(None)
                if item is None:
                    assert may_park(run)
                    assert receive.park_run(run)
                    await park
                    continue
                log.append((item, var.get()))
        finally:
            log.append(("finally", var.get()))

    async def main() -> None:
        send, receive = open_inbox(4)
        run = Run()
        run.coro = agent(run, receive)  # type: ignore[assignment]

        async def step() -> None:  # a task of the agent: it ends when the agent parks
            run.scope = trio.CancelScope()
            with run.scope:
                assert await drive(run) is PARKED  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(step)
        send.send_nowait(1)  # queued for it, and it is woken
        assert run.woken == 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(step)  # another task: the agent's own Context goes with it
        assert log == [(1, "mine")]
        assert var.get() == "unset"
        with pytest.raises(trio.Cancelled):
            await drive(run, cancelled_error())  # type: ignore[arg-type]
        assert log[-1] == ("finally", "mine")

        # Holding a cancel scope or a nursery, or under a deadline: no park.
        run.scope = trio.CancelScope()
        with run.scope:
            run.driver, run.status = trio.lowlevel.current_task(), None
            assert not may_park(run)  # no status: it did not start under drive

        async def check(hold: str) -> bool:
            outer = trio.lowlevel.current_task()
            run.driver = outer
            run.status = outer._cancel_status
            if hold == "scope":
                with trio.CancelScope():
                    return may_park(run)
            if hold == "deadline":
                run.scope = trio.CancelScope(deadline=trio.current_time() + 3600)
                with run.scope:
                    run.status = outer._cancel_status
                    assert trio.current_effective_deadline() != math.inf
                    return may_park(run)
            if hold == "nursery":
                async with trio.open_nursery():
                    return may_park(run)
            return may_park(run)

        run.scope = trio.CancelScope()
        assert await check("nothing")
        for hold in ("scope", "deadline", "nursery"):
            assert not await check(hold), hold

    trio.run(main)
