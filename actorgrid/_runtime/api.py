"""The call-level API: get, wait, put, cancel, kill, names and messages.

Every blocking function has an ``*_async`` twin for Trio code; calling a blocking one from a
Trio thread raises an error that says which to await instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, overload

import trio

from .core import current_runtime
from .generators import ObjectRefGenerator
from .handles import ActorHandle
from .inline import send_later
from .refs import ObjectRef
from .virtual import AgentKey, ask_key, send_to_key
from .virtual import publish as virtual_publish

__all__ = [
    "ask",
    "ask_async",
    "cancel",
    "get",
    "get_actor",
    "get_actor_async",
    "get_async",
    "kill",
    "kill_async",
    "publish",
    "publish_async",
    "put",
    "send",
    "send_async",
    "wait",
    "wait_async",
]

T = TypeVar("T")


def _not_in_trio(name: str) -> None:
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            f"ag.{name}() blocks, and it was called from a thread running a Trio loop; "
            f"use `await ag.{name}_async(...)` there instead (in a sync actor method declared "
            "@ag.method(inline=True), which runs on the worker's loop: drop inline=True)"
        )


def _refs(name: str, refs: Any, *, single: bool = True) -> Any:
    """``refs`` if it is what ``ag.<name>`` takes, else a TypeError that says what it takes.

    One ref (where ``single``) or a list or tuple of refs pass as they are; another iterable of
    refs is made a list."""
    if single and isinstance(refs, ObjectRef):
        return refs
    takes = "an ObjectRef or a list of ObjectRefs" if single else "a list of ObjectRefs"
    if isinstance(refs, ObjectRef):
        raise TypeError(f"ag.{name}() takes {takes}, not one ObjectRef: pass [ref]")
    if isinstance(refs, (str, bytes, dict)) or not hasattr(refs, "__iter__"):
        raise TypeError(
            f"ag.{name}() takes {takes} (from .remote() or ag.put()), not "
            f"{type(refs).__name__} {_short_repr(refs)}"
        )
    items = refs if isinstance(refs, (list, tuple)) else list(refs)
    for i, item in enumerate(items):
        if not isinstance(item, ObjectRef):
            raise TypeError(
                f"ag.{name}() takes {takes} (from .remote() or ag.put()); item {i} of the "
                f"{type(refs).__name__} is {type(item).__name__} {_short_repr(item)}"
            )
    return items


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@overload
def get(refs: ObjectRef[T], *, timeout: float | None = None) -> T: ...
@overload
def get(refs: Sequence[ObjectRef[Any]], *, timeout: float | None = None) -> list[Any]: ...
def get(refs: Any, *, timeout: float | None = None) -> Any:
    """Wait for one ref or a list of refs and return the value(s); raise a task's error.

    Raises GetTimeoutError (a TimeoutError) if ``timeout`` seconds pass first.
    """
    return current_runtime().get_sync(_refs("get", refs), timeout)


async def get_async(refs: Any, *, timeout: float | None = None) -> Any:
    """``ag.get`` for Trio code; ``await ref`` does the same for one ref."""
    return await current_runtime().get_async(_refs("get_async", refs), timeout)


def wait(
    refs: Sequence[ObjectRef[Any]], *, num_returns: int = 1, timeout: float | None = None
) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
    """Wait until ``num_returns`` refs are ready or ``timeout`` passes.

    Returns ``(ready, not_ready)``, each in the order of ``refs``.
    """
    refs = list(_refs("wait", refs, single=False))
    return current_runtime().wait_sync(refs, num_returns, timeout)


async def wait_async(
    refs: Sequence[ObjectRef[Any]], *, num_returns: int = 1, timeout: float | None = None
) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
    refs = list(_refs("wait_async", refs, single=False))
    return await current_runtime().wait_async(refs, num_returns, timeout)


def put(value: T) -> ObjectRef[T]:
    """Store ``value`` in this process and return a ref that tasks and actors can take."""
    return current_runtime().put(value)


def cancel(
    ref: ObjectRef[Any] | ObjectRefGenerator[Any], *, force: bool = False, recursive: bool = True
) -> None:
    """Cancel the call behind ``ref``: a queued call never runs; a running async call is
    cancelled at its next checkpoint; running sync code gets KeyboardInterrupt raised in it,
    and if it still runs after the grace period its worker is killed and restarted.
    ``force=True`` kills the worker at once. ``ag.get(ref)`` then raises TaskCancelledError
    (or WorkerDiedError, for a forced cancel of a task that is not retried).

    ``recursive=True`` (the default, as in Ray) also cancels every task that task started and
    that is still running or queued, and theirs, all the way down, whether or not anything
    waits on them. Actors it created and calls on actors are not cancelled; cancelling an
    actor call cancels that call, never the actor. An ``ObjectRefGenerator`` stops its producer."""
    if isinstance(ref, ObjectRefGenerator):  # a remote generator: its producer stops
        ref._cancel(force, recursive)
        return
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"ag.cancel() takes an ObjectRef, not {type(ref).__name__}")
    rt = current_runtime()
    rt.on_loop(rt.cancel, ref._entry, force, recursive)


def kill(handle: ActorHandle[Any] | ObjectRef[Any]) -> None:
    """Stop an actor now. Its queued and later calls raise ActorDiedError; its name is free
    again when this returns."""
    _not_in_trio("kill")
    rt = current_runtime()
    rt.portal.run(kill_async, handle)


async def kill_async(handle: ActorHandle[Any] | ObjectRef[Any]) -> None:
    rt = current_runtime()
    if isinstance(handle, ActorHandle):
        info = await handle._wait_info()
    elif isinstance(handle, ObjectRef) and handle._entry.actor is not None:
        info = handle._entry.actor
    else:
        raise TypeError(
            "ag.kill() takes an ActorHandle or the ObjectRef of a remote coroutine actor, "
            f"not {type(handle).__name__}"
        )
    await rt.kill(info)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle[Any]:
    """The handle of the live actor called ``name``; NameNotFoundError if there is none."""
    _not_in_trio("get_actor")
    return current_runtime().portal.run(get_actor_async, name, namespace)  # type: ignore[no-any-return]


async def get_actor_async(name: str, namespace: str | None = None) -> ActorHandle[Any]:
    info = await current_runtime().lookup(name, namespace, cached=False)
    return ActorHandle._make(info)


def send(target: Any, message: Any, *, namespace: str | None = None) -> None:
    """Put ``message`` in the mailbox of ``target`` (a name, handle or actor ref). A name is
    looked up in ``namespace`` (None: the default namespace)."""
    if trio.lowlevel.in_trio_run() and send_later(send_async, target, message, namespace):
        return  # a sync method run on a worker's loop: sent after it returns (inline.py)
    _not_in_trio("send")
    rt = current_runtime()
    if not rt.send_soon(target, message, namespace):  # a cached name: no wait for the loop
        rt.portal.run(send_async, target, message, namespace)


async def send_async(target: Any, message: Any, namespace: str | None = None) -> None:
    if isinstance(target, AgentKey):
        await send_to_key(current_runtime(), target, message)
        return
    await current_runtime().send(target, message, namespace)


def ask(
    target: Any, message: Any, *, timeout: float | None = None, namespace: str | None = None
) -> Any:
    """Send ``message`` to ``target`` and wait for its ``ctx.reply(...)``. A name is looked up
    in ``namespace`` (None: the default namespace)."""
    _not_in_trio("ask")
    rt = current_runtime()
    if isinstance(target, AgentKey):
        return rt.portal.run(ask_key, rt, target, message, timeout)
    return rt.portal.run(rt.ask, target, message, timeout, namespace)


async def ask_async(
    target: Any, message: Any, *, timeout: float | None = None, namespace: str | None = None
) -> Any:
    if isinstance(target, AgentKey):
        return await ask_key(current_runtime(), target, message, timeout)
    return await current_runtime().ask(target, message, timeout, namespace)


def publish(topic: str, message: Any) -> None:
    """Send ``message`` to every subscriber of ``topic`` (agents that called
    ``ctx.subscribe(topic)``), in the order this process publishes."""
    _not_in_trio("publish")
    rt = current_runtime()
    rt.portal.run(virtual_publish, rt, topic, message)


async def publish_async(topic: str, message: Any) -> None:
    await virtual_publish(current_runtime(), topic, message)
