"""ag.ask by name to a remote coroutine actor whose worker was just SIGKILLed: it waits for
the restarted actor (``max_restarts``) instead of failing (``_runtime/restartwait.py``); an
actor with no restarts left fails at once, saying so. Real worker processes."""

from __future__ import annotations

import os
import signal

import pytest

import actorgrid as ag

TIMEOUT_S = 60.0


@ag.remote(max_restarts=1)
async def pinger(ctx: ag.Context) -> None:
    seen = 0
    async for msg in ctx.mailbox:
        seen += 1
        if ctx.request is not None:
            await ctx.reply((os.getpid(), seen, msg))


def test_an_ask_by_name_during_a_restart_reaches_the_restarted_actor(cluster: ag.Cluster) -> None:
    pinger.options(name="pinger").remote()
    first, seen, _ = ag.ask("pinger", "hello", timeout=TIMEOUT_S)
    assert seen == 1
    os.kill(first, signal.SIGKILL)
    # Asked at once: its old worker is gone, the new incarnation not placed yet.
    pid, seen, msg = ag.ask("pinger", "again", timeout=TIMEOUT_S)
    assert (seen, msg) == (1, "again")  # a new incarnation, which got the message
    assert pid != first

    # Its one restart is used up: the next death is the last, and an ask says so at once.
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ag.ActorDiedError, match="no restarts left") as info:
        ag.ask("pinger", "once more", timeout=TIMEOUT_S)
    assert "'pinger'" in str(info.value)
