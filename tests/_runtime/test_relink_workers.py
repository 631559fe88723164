"""A dropped link between two workers is dialled again (relinking.py): agents on the two
workers keep talking, and what one sends once it has seen the drop arrives once, in order.
The link is shut down from inside the sending worker, as a reset would, while both
processes live on."""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import pytest
import trio

import actorgrid as ag
from actorgrid._runtime import current

CLUSTER_OPTIONS = {"num_workers": 2}
GET_TIMEOUT_S = 30.0  # a hang fails the test instead of stalling the suite

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote
async def sink(ctx: ag.Context):
    """Keeps what it is sent; ``"get"`` (asked) answers with all of it, ``"where"`` with its
    process and its worker's address."""
    got = []
    async for msg in ctx.mailbox:
        if msg == "get":
            await ctx.reply(list(got))
        elif msg == "where":
            await ctx.reply((os.getpid(), ctx._info.address))
        else:
            got.append(msg)


@ag.remote
async def source(ctx: ag.Context):
    """``("send", to, lo, hi)``: sends lo..hi-1 to the agent named ``to``; ``("drop", at)``:
    shuts this worker's link to the worker at ``at`` down and waits until it has closed;
    ``("relinked", at)``: whether its link to ``at`` is a new one, up; ``"where"``: its
    process. Each is answered once done."""
    dropped = None
    async for msg in ctx.mailbox:
        if msg == "where":
            await ctx.reply((os.getpid(), ctx._info.address))
        elif msg[0] == "send":
            _, to, lo, hi = msg
            for i in range(lo, hi):
                await ctx.send(to, i)
            await ctx.reply(hi - lo)
        elif msg[0] == "relinked":
            link = current.get().peers.get(msg[1])
            await ctx.reply(link is not None and link is not dropped and link.connected)
        else:
            rt: Any = current.get()
            link = dropped = rt.peers[msg[1]]
            link._stream.sock.shutdown(socket.SHUT_RDWR)
            with trio.fail_after(GET_TIMEOUT_S):
                while not link.closed:
                    await trio.sleep(0.01)
            await ctx.reply(link.close_reason)


def _pair() -> tuple[Any, str, str]:
    """A source, and the name and worker address of a sink on the other worker."""
    src = source.remote()
    src_pid, _ = ag.ask(src, "where", timeout=GET_TIMEOUT_S)
    for _ in range(20):
        name = f"sink-{uuid.uuid4().hex[:12]}"
        sink.options(name=name).remote()
        pid, address = ag.ask(name, "where", timeout=GET_TIMEOUT_S)
        if pid != src_pid:
            return src, name, address
    raise AssertionError("every sink was placed on the source's worker")


def _wait_got(name: str, n: int) -> list[Any]:
    deadline = time.monotonic() + GET_TIMEOUT_S
    while True:
        got = ag.ask(name, "get", timeout=GET_TIMEOUT_S)
        if len(got) >= n:
            return got
        assert time.monotonic() < deadline, f"got {len(got)} of {n}: {got[-5:]}"
        time.sleep(0.02)


def test_messages_between_workers_flow_again_after_their_link_dropped(cluster: ag.Cluster):
    src, name, address = _pair()
    assert ag.ask(src, ("send", name, 0, 100), timeout=GET_TIMEOUT_S) == 100
    assert _wait_got(name, 100) == list(range(100))

    reason = ag.ask(src, ("drop", address), timeout=GET_TIMEOUT_S)
    assert reason  # the link that carried them has closed

    # Sent once the drop was seen: each arrives once, in the order sent, on a new link.
    assert ag.ask(src, ("send", name, 100, 600), timeout=GET_TIMEOUT_S) == 500
    got = _wait_got(name, 600)
    assert got == list(range(600))
    assert ag.ask(src, ("relinked", address), timeout=GET_TIMEOUT_S)
    # Both agents lived on where they were: the drop was not taken for a death.
    assert ag.ask(name, "where", timeout=GET_TIMEOUT_S)[1] == address
    assert len(cluster.workers()) == 2
