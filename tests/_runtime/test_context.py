"""Remote coroutines taking an ``ag.Context``: mailboxes, send/ask/reply by handle, ref and
name, from actors and from the driver, and bounded mailboxes that never drop a message.

This module deliberately does NOT use ``from __future__ import annotations``: the Context
annotation is a real class object here. test_context_future.py covers string annotations.
"""

import time
import uuid

import pytest
import trio

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@ag.remote
async def echo(ctx: ag.Context, prefix):
    """Answers asks with prefix + message; plain sends are collected; "stop" ends it."""
    collected = []
    async for msg in ctx.mailbox:
        if msg == "stop":
            return collected
        if ctx.request is not None:
            await ctx.reply(f"{prefix}{msg}")
        else:
            collected.append(msg)


@ag.remote
async def collect(ctx: ag.Context, n):
    got = []
    while len(got) < n:
        got.append(await ctx.mailbox.receive())
    return got


@ag.remote
async def send_to_each(ctx: ag.Context, targets, message):
    for target in targets:
        await ctx.send(target, message)
    return len(targets)


@ag.remote
async def ponger(ctx: ag.Context):
    async for kind, reply_to, payload in ctx.mailbox:
        if kind == "stop":
            return "stopped"
        await ctx.send(reply_to, ("pong", payload))


@ag.remote
async def pinger(ctx: ag.Context, ponger_name, n):
    for i in range(n):
        await ctx.send(ponger_name, ("ping", ctx.handle, i))
        assert await ctx.mailbox.receive() == ("pong", i)
    await ctx.send(ponger_name, ("stop", None, None))
    return n


@ag.remote
async def asker(ctx: ag.Context, boxed_target, questions, timeout=30.0):
    # The target comes in a list so that an ObjectRef target is not resolved (waited for).
    [target] = boxed_target
    answers = []
    for q in questions:
        try:
            answers.append(await ctx.ask(target, q, timeout=timeout))
        except ag.GetTimeoutError as exc:
            answers.append(("timeout", isinstance(exc, TimeoutError)))
    return answers


@ag.remote
async def deaf(ctx: ag.Context):
    """Reads messages and never answers; ends on "stop"."""
    async for msg in ctx.mailbox:
        if msg == "stop":
            return "deaf stopped"


@ag.remote
async def returns_without_replying(ctx: ag.Context):
    await ctx.mailbox.receive()
    return "left"


def test_coroutine_actor_answers_asks_from_the_driver() -> None:
    ref = echo.remote("re: ")
    assert isinstance(ref, ag.ObjectRef)
    assert ag.ask(ref, "hello", timeout=30) == "re: hello"
    assert ag.ask(ref, 42, timeout=30) == "re: 42"
    ag.send(ref, "note 1")
    ag.send(ref, "note 2")
    ag.send(ref, "stop")
    # The coroutine's return value resolves its ref.
    assert ag.get(ref, timeout=30) == ["note 1", "note 2"]


def test_driver_sends_arrive_in_order() -> None:
    ref = collect.remote(2000)
    for i in range(2000):
        ag.send(ref, i)
    assert ag.get(ref, timeout=60) == list(range(2000))


def test_send_by_handle_ref_and_name() -> None:
    name = unique("collector")
    target = collect.options(name=name).remote(4)
    handle = ag.get_actor(name)
    assert isinstance(handle, ag.ActorHandle)
    # The ref goes inside a list: a top-level ref argument would be waited for first.
    assert ag.get(send_to_each.remote([target, name, handle], "from an actor"), timeout=30) == 3
    ag.send(handle, "from the driver")
    # Different senders: no order between them.
    assert sorted(ag.get(target, timeout=30)) == ["from an actor"] * 3 + ["from the driver"]


def test_send_to_ctx_handle() -> None:
    name = unique("ponger")
    pong = ponger.options(name=name).remote()
    assert ag.get(pinger.remote(name, 50), timeout=60) == 50
    assert ag.get(pong, timeout=30) == "stopped"


def test_ask_and_reply_between_actors() -> None:
    name = unique("echo")
    responder = echo.options(name=name).remote("ans:")
    by_name = asker.remote([name], ["a", "b"])
    by_ref = asker.remote([responder], ["c"])
    by_handle = asker.remote([ag.get_actor(name)], ["d"])
    assert ag.get(by_name, timeout=30) == ["ans:a", "ans:b"]
    assert ag.get(by_ref, timeout=30) == ["ans:c"]
    assert ag.get(by_handle, timeout=30) == ["ans:d"]
    assert ag.ask(name, "e", timeout=30) == "ans:e"
    ag.send(responder, "stop")
    assert ag.get(responder, timeout=30) == []


def test_ask_timeout_raises_get_timeout_error() -> None:
    silent = deaf.remote()
    start = time.monotonic()
    with pytest.raises(ag.GetTimeoutError) as info:
        ag.ask(silent, "anyone?", timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert 0.25 <= time.monotonic() - start < 10
    # The same inside an actor.
    assert ag.get(asker.remote([silent], ["?"], 0.3), timeout=30) == [("timeout", True)]
    ag.send(silent, "stop")
    assert ag.get(silent, timeout=30) == "deaf stopped"


def test_unanswered_ask_fails_when_the_actor_ends() -> None:
    ref = returns_without_replying.remote()
    with pytest.raises(ag.ActorDiedError):
        ag.ask(ref, "will you answer?", timeout=30)
    assert ag.get(ref, timeout=30) == "left"


def test_reply_without_an_ask_is_an_error() -> None:
    @ag.remote
    async def replies_to_a_send(ctx: ag.Context):
        await ctx.mailbox.receive()
        try:
            await ctx.reply("nobody asked")
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    ref = replies_to_a_send.remote()
    ag.send(ref, "just a send")
    assert "no ask to reply to" in ag.get(ref, timeout=30)


def test_context_describes_the_actor() -> None:
    @ag.remote
    async def introspect(ctx: ag.Context):
        return ctx.name, ctx.namespace, ctx.handle.name, isinstance(ctx.mailbox, ag.Mailbox)

    name = unique("introspect")
    assert ag.get(introspect.options(name=name, namespace="ctx-ns").remote(), timeout=30) == (
        name,
        "ctx-ns",
        name,
        True,
    )


# --- bounded mailboxes --------------------------------------------------------------------------


@ag.remote
async def slow_counter(ctx: ag.Context, n, pause):
    await trio.sleep(pause)  # let the mailbox fill up first
    stats = ctx.mailbox.statistics()
    expected = 0
    async for msg in ctx.mailbox:
        if msg != expected:
            return ("out of order", expected, msg)
        expected += 1
        if expected == n:
            break
    return expected, stats.capacity, stats.queued


@ag.remote
async def produce(ctx: ag.Context, target, n):
    for i in range(n):
        await ctx.send(target, i)
    return n


def test_full_mailbox_makes_senders_wait_and_loses_nothing() -> None:
    n = 3000
    name = unique("slow")
    consumer = slow_counter.options(name=name).remote(n, 0.5)
    producer = produce.remote(name, n)
    count, capacity, queued_after_pause = ag.get(consumer, timeout=60)
    assert count == n
    assert capacity == 1024
    assert queued_after_pause <= 1024
    assert ag.get(producer, timeout=60) == n


# --- wrong targets ----------------------------------------------------------------------------------


def test_coroutine_actor_needs_an_async_function() -> None:
    def sync_with_context(ctx: ag.Context):
        return None

    with pytest.raises(TypeError, match="async def"):
        ag.remote(sync_with_context)


def test_send_to_a_class_actor_or_a_task_ref_is_a_type_error() -> None:
    @ag.remote
    class Plain:
        def ping(self):
            return "pong"

    plain = Plain.remote()
    with pytest.raises(TypeError, match="class actor"):
        ag.send(plain, "hi")
    assert ag.get(plain.ping.remote(), timeout=30) == "pong"

    @ag.remote
    def task():
        return 1

    with pytest.raises(TypeError, match="coroutine actor"):
        ag.send(task.remote(), "hi")
    with pytest.raises(TypeError):
        ag.send(3.14, "hi")


def test_coroutine_actor_handle_has_no_methods() -> None:
    name = unique("no-methods")
    ref = deaf.options(name=name).remote()
    handle = ag.get_actor(name)
    with pytest.raises(AttributeError, match="coroutine actor"):
        handle.anything.remote()
    ag.send(ref, "stop")
    assert ag.get(ref, timeout=30) == "deaf stopped"


@ag.remote
async def fragile(ctx: ag.Context):
    async for msg in ctx.mailbox:
        if msg == "boom":
            raise ValueError("cannot handle boom")
        await ctx.reply(f"ok {msg}")


def test_an_ask_that_makes_a_restartable_actor_raise_gets_the_error():
    name = unique("fragile")
    fragile.options(name=name, max_restarts=-1).remote()
    started = time.monotonic()
    with pytest.raises(ValueError, match="cannot handle boom"):
        ag.ask(name, "boom", timeout=30)
    # Answered by the crash itself, not by the asker's timeout running out.
    assert time.monotonic() - started < 20
    assert ag.ask(name, "again", timeout=30) == "ok again"  # restarted, same mailbox
    ag.kill(ag.get_actor(name))
