"""Remote coroutines taking an ``ag.Context`` under ``from __future__ import annotations``,
where every annotation is a string that the runtime has to resolve."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

import actorgrid as ag
from actorgrid import Context

if TYPE_CHECKING:
    import actorgrid as only_for_typing  # not importable by name at run time

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote
async def qualified(ctx: ag.Context, greeting: str) -> list[str]:
    seen = []
    async for msg in ctx.mailbox:
        if msg == "stop":
            return seen
        seen.append(msg)
        if ctx.request is not None:
            await ctx.reply(f"{greeting}, {msg}")
    return seen


@ag.remote
async def bare(ctx: Context) -> str:
    first = await ctx.mailbox.receive()
    await ctx.reply(first.upper())
    return f"done after {first}"


@ag.remote
async def unresolvable(ctx: only_for_typing.Context) -> str:
    msg = await ctx.mailbox.receive()
    await ctx.send(ctx.handle, ("to myself", msg))
    return await ctx.mailbox.receive()


@ag.remote
async def not_an_actor(ctx: int) -> int:
    return ctx + 1


@ag.remote
async def relay(ctx: ag.Context, target: list[str]) -> str:
    question = await ctx.mailbox.receive()
    answer = await ctx.ask(target[0], question, timeout=30)
    await ctx.reply(answer)
    return "relayed"


def test_string_annotation_makes_a_coroutine_actor() -> None:
    assert "remote coroutine actor" in repr(qualified)
    ref = qualified.remote("hello")
    assert ag.ask(ref, "world", timeout=30) == "hello, world"
    ag.send(ref, "plain")
    ag.send(ref, "stop")
    assert ag.get(ref, timeout=30) == ["world", "plain"]


def test_directly_imported_context_annotation() -> None:
    ref = bare.remote()
    assert ag.ask(ref, "shout", timeout=30) == "SHOUT"
    assert ag.get(ref, timeout=30) == "done after shout"


def test_annotation_that_cannot_be_resolved_at_run_time() -> None:
    ref = unresolvable.remote()
    ag.send(ref, "note")
    assert ag.get(ref, timeout=30) == ("to myself", "note")


def test_other_first_parameter_annotations_make_plain_async_functions() -> None:
    assert "remote function" in repr(not_an_actor)
    assert ag.get(not_an_actor.remote(41), timeout=30) == 42


def test_named_actors_ask_each_other() -> None:
    name = f"qualified-{uuid.uuid4().hex[:12]}"
    responder = qualified.options(name=name).remote("hi")
    middle = relay.remote([name])
    assert ag.ask(middle, "there", timeout=30) == "hi, there"
    assert ag.get(middle, timeout=30) == "relayed"
    ag.send(name, "stop")
    assert ag.get(responder, timeout=30) == ["there"]
