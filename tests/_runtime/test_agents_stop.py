"""A worker that stops while it hosts many agents (issue 13): it keeps pulsing, ends every
agent (parked ones too, parking.py: their ``finally`` blocks run), and every agent's ref
resolves with the cancellation error.

The size is ``ACTORGRID_STOP_AGENTS`` (default STOP_AGENTS_DEFAULT, which keeps the test inside
the suite's time budget: creating the agents is most of it). Nothing is timed but the zombie
window, which a worker whose loop starves while it ends its agents overruns. By hand
(SIGTERM to the worker, ``perf stat -e task-clock -p PID`` until it exits), on a 2-core
machine at a load average of ~7-9: 20,000 agents took 3.4 s of the worker's CPU to stop before
(a pickled error, a TaskResult and a shielded await per agent) and 1.5 s after (one shared
payload, one TasksCancelled per owner and loop turn, no await); 100,000 took 9.0 s of CPU
(28 s of wall clock: the worker got a third of a CPU), with no zombie. Most of what is left is
Trio's own cost of cancelling and unwinding one task (~30-50 us each here).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
from pathlib import Path

import pytest
import trio
from conftest import ProcessWatch

import actorgrid as ag

STOP_AGENTS_DEFAULT = 10_000
AGENTS = int(os.environ.get("ACTORGRID_STOP_AGENTS", STOP_AGENTS_DEFAULT))
# Generous: creation runs at ~400-1,000 agents/s on a 2-core machine shared with other runs.
DEADLINE_S = 60 + AGENTS / 150

pytestmark = [pytest.mark.slow, pytest.mark.timeout(DEADLINE_S + 60)]


@ag.remote
async def idle(ctx: ag.Context, tally: str) -> None:
    await ctx.send(tally, "up")
    async for _ in ctx.mailbox:
        pass  # never returns: only its worker's stop ends it


@ag.remote
async def witness(ctx: ag.Context, path: str, hold: bool) -> None:
    """Idle, with a ``finally`` that writes the value of its contextvar to ``path``: parked
    (``hold`` False), or holding a cancel scope (then it never parks, parking.py)."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set(f"ended {'holding' if hold else 'parked'}")
    try:
        with trio.CancelScope() if hold else contextlib.nullcontext():
            async for _ in ctx.mailbox:
                await ctx.reply("here")
    finally:
        Path(path).write_text(var.get())


@ag.remote
async def tally(ctx: ag.Context) -> None:
    """Counts "up"s; asked for ``k``, answers once ``k`` came. Also answers "pid"."""
    up = 0
    waiting: tuple[int, ag.Request] | None = None
    async for msg in ctx.mailbox:
        if msg == "pid":
            await ctx.reply(os.getpid())
        elif msg == "up":
            up += 1
        else:
            assert ctx.request is not None
            waiting = (msg, ctx.request)
        if waiting is not None and up >= waiting[0]:
            waiting[1].reply(up)
            waiting = None


def test_a_stopping_worker_ends_every_agent_and_keeps_pulsing(
    caplog: pytest.LogCaptureFixture, processes: ProcessWatch, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    with ag.init(num_workers=1) as cluster:
        counter = tally.options(name="stop-tally").remote()
        pid = ag.ask(counter, "pid", timeout=60)
        processes.add([pid])
        refs = [idle.remote("stop-tally") for _ in range(AGENTS)]
        assert ag.ask(counter, AGENTS, timeout=DEADLINE_S) == AGENTS  # all of them are up
        paths = [tmp_path / "parked", tmp_path / "holding"]
        witnesses = [
            witness.remote(str(p), hold) for p, hold in zip(paths, [False, True], strict=True)
        ]
        assert [ag.ask(w, "?", timeout=60) for w in witnesses] == ["here", "here"]

        os.kill(pid, signal.SIGTERM)  # as its node does when it stops
        processes.wait_gone([pid], timeout=DEADLINE_S)

        errors: dict[str, int] = {}
        for ref in [*refs, *witnesses, counter]:
            with pytest.raises(ag.TaskCancelledError) as caught:
                ag.get(ref, timeout=60)
            text = str(caught.value)
            errors[text] = errors.get(text, 0) + 1
        # One answer for all (pickled once), saying what happened.
        ((text, count),) = errors.items()
        assert count == AGENTS + 3
        # Their finally blocks ran, in their own contextvars Context.
        assert [p.read_text() for p in paths] == ["ended parked", "ended holding"]
        assert "cancelled" in text and "its worker" in text and "stopped" in text
        kinds = {e.kind for e in cluster.recent_events()}
    assert "worker_zombie" not in kinds
    lines = [r.getMessage() for r in caplog.records]
    assert not [line for line in lines if "zombie" in line]
    # It ended by itself, within its grace period: not killed when that ran out.
    assert any(f"pid {pid} exited with code 0" in line for line in lines), lines[-20:]
