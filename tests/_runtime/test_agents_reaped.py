"""The stop of a worker whose agents are parked (agenthost.py ``_reap``/``_end_reaped``): each
agent whose code ends at once on the Cancelled thrown in is ended inline, one Cancelled reused
from one to the next; one whose code does something else as it ends (awaits in its
``finally``, catches the Cancelled and returns, raises) goes on where ``_live`` would, and the
agents after it are still ended. Every ``finally`` runs, in the agent's own contextvars, and
every ref resolves with the stop's TaskCancelledError.

On a real 1-worker cluster started with ``ACTORGRID_PARK_FROM=1`` (every idle agent parks),
stopped by SIGTERM as its node stops it. ~3 s.
"""

from __future__ import annotations

import contextvars
import os
import signal
from pathlib import Path

import pytest
import trio
from conftest import ProcessWatch

import actorgrid as ag

pytestmark = pytest.mark.timeout(240)

# Plain agents between the unusual ones: those after each must be ended too.
PLAIN_BETWEEN = 20


@ag.remote
async def ending(ctx: ag.Context, path: str, how: str) -> str:
    """Answers "?" and waits (parked); as it ends, writes its own contextvar's value to
    ``path``, after doing what ``how`` says."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set(f"{how} {path[-3:]}")
    try:
        async for _ in ctx.mailbox:
            await ctx.reply(os.getpid())
    except trio.Cancelled:
        if how == "returns":
            return "swallowed"  # its ref still says the worker stopped
        raise
    finally:
        if how == "awaits":
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)
        Path(path).write_text(var.get())
        if how == "raises":
            raise ValueError("raised in finally")
    return "unreachable"


def test_a_stopping_worker_ends_parked_agents_whatever_their_finally_does(
    processes: ProcessWatch, tmp_path: Path
) -> None:
    hows = []
    for unusual in ["awaits", "returns", "raises", "awaits"]:
        hows += ["plain"] * PLAIN_BETWEEN + [unusual]
    hows += ["plain"] * PLAIN_BETWEEN
    paths = [tmp_path / f"{i:03d}" for i in range(len(hows))]
    before = os.environ.get("ACTORGRID_PARK_FROM")
    os.environ["ACTORGRID_PARK_FROM"] = "1"  # read by the workers ag.init starts
    try:
        with ag.init(num_workers=1):
            agents = [ending.remote(str(p), how) for p, how in zip(paths, hows, strict=True)]
            (pid,) = {ag.ask(a, "?", timeout=60) for a in agents}
            processes.add([pid])
            # Each answered, so each waits in its mailbox again: parked (or, had the stop come
            # before its park, cancelled in its task: its finally runs the same).
            os.kill(pid, signal.SIGTERM)  # as its node does when it stops
            processes.wait_gone([pid], timeout=120)
            for agent in agents:
                with pytest.raises(ag.TaskCancelledError, match=r"its worker .* stopped"):
                    ag.get(agent, timeout=60)
    finally:
        if before is None:
            os.environ.pop("ACTORGRID_PARK_FROM", None)
        else:
            os.environ["ACTORGRID_PARK_FROM"] = before
    assert [p.read_text() for p in paths] == [
        f"{how} {str(p)[-3:]}" for p, how in zip(paths, hows, strict=True)
    ]
