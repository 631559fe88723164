"""Agents by the hundred thousand on a 2-worker embedded cluster (issue 13): each of 100,000
named agents reached by name once, and the wealth model with a broadcasting clock at 100,000
keyed agents finishing every step with every coin conserved. Slow: minutes on 2 cores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}
AGENTS = 100_000

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cluster")]

WEALTH = Path(__file__).resolve().parents[2] / "examples" / "wealth.py"


@ag.remote
async def first_letter(ctx: ag.Context, counter: str) -> None:
    await ctx.send(counter, await ctx.mailbox.receive())


@ag.remote
async def count_letters(ctx: ag.Context, n: int) -> tuple[int, int]:
    seen: set[int] = set()
    async for i in ctx.mailbox:
        seen.add(i)
        if len(seen) == n:
            break
    return len(seen), sum(seen)


def test_a_hundred_thousand_named_agents_are_created_and_each_reached_by_name_once():
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    counter = f"{prefix}-counter"
    total = count_letters.options(name=counter).remote(AGENTS)
    refs = [first_letter.options(name=f"{prefix}-{i}").remote(counter) for i in range(AGENTS)]
    for i in range(AGENTS):
        ag.send(f"{prefix}-{i}", i)  # by name, once each
    assert ag.get(total, timeout=1800) == (AGENTS, AGENTS * (AGENTS - 1) // 2)
    assert ag.get(refs, timeout=600) == [None] * AGENTS  # every agent has ended


def test_the_wealth_model_at_a_hundred_thousand_agents_finishes_every_step_and_keeps_every_coin():
    # The example as a user runs it, in its own cluster (a process group, so that nothing
    # it started can outlive a failure here).
    proc = subprocess.Popen(
        [sys.executable, str(WEALTH), "--agents", str(AGENTS), "--steps", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=3000)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert f"{AGENTS} agents, 3 steps in" in out  # every step finished
    assert f"coins conserved: {AGENTS} of {AGENTS}" in out
