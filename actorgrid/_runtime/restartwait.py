"""Asks and sends by name to an actor that is being restarted wait for its new incarnation.

A named actor with restarts left (``max_restarts``) whose worker dies is placed again by its
owner, under the same id and name, at a new address (``actors.py``: ``_new_incarnation``;
``following.py`` for remote coroutines). Until then the head knows neither address: it freed
the name with the worker. ``ag.ask(name)`` / ``ag.send(name)`` that found the old address gone
used to fail with ActorDiedError; as a Ray user expects of a call to a restarting actor, they
now wait for the name to name a live actor at another address (asking the head every
``RESTART_POLL_S``, for up to ``RESTART_WAIT_S`` or the ask's timeout), and go there:

- the message goes to the new incarnation (which starts from its constructor: whatever the old
  one did with a message it received before it died is lost with its state, so a message its
  death made undeliverable, or an ask it never answered, is given to the new one);
- an actor with no restarts left (its ``max_restarts`` used up, or 0) fails at once, saying so;
- one not back in time fails saying it was not restarted, and the likely causes.

Only sends that fail to go out are seen here: a message a worker took into its socket buffer
just before it was killed is lost, as any mailbox message to a dying process is (use ask for
an answer). A call by handle follows a restart on its own (``following.py``).

Cost: nothing on the way of a call that reaches its actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._exceptions import ActorDiedError, ActorgridError
from .._protocol.messages import ActorInfo, LookupName, Message, NameReply
from .._scheduler.names import DEFAULT_NAMESPACE
from .records import _describe

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RESTART_POLL_S", "RESTART_WAIT_S", "ask_restarted", "may_restart", "send_restarted"]

# How long an ask or send by name waits for a restarting actor (as following.py waits for one
# called by handle): placing it again may wait for a worker to come back.
RESTART_WAIT_S = 60.0
RESTART_POLL_S = 0.1


class _Runtime(Protocol):
    async def head_request(self, make: Callable[[int], Message]) -> Message: ...

    async def ask(
        self, target: Any, message: Any, timeout: float | None, namespace: str | None = None
    ) -> Any: ...

    async def send(self, target: Any, message: Any, namespace: str | None = None) -> None: ...


def may_restart(target: object, info: ActorInfo) -> bool:
    """Whether a call to ``target`` that found ``info``'s address gone waits for a restart:
    a call by name (handles follow on their own), to an actor that has a name."""
    return isinstance(target, str) and bool(info.name)


async def ask_restarted(
    rt: _Runtime, name: str, info: ActorInfo, message: Any, timeout: float | None, why: str
) -> Any:
    """``rt.ask(name, ...)`` found ``info`` unreachable (``why``): wait for its new
    incarnation, then ask it, within ``timeout`` in all."""
    start = trio.current_time()
    limit = RESTART_WAIT_S if timeout is None else min(timeout, RESTART_WAIT_S)
    found = await wait_restarted(rt, info, why, start + limit)
    left = None if timeout is None else max(0.0, timeout - (trio.current_time() - start))
    return await rt.ask(name, message, left, found.namespace)


async def send_restarted(rt: _Runtime, name: str, info: ActorInfo, message: Any, why: str) -> None:
    """``rt.send(name, ...)`` found ``info`` unreachable (``why``): wait for its new
    incarnation, then send to it."""
    found = await wait_restarted(rt, info, why, trio.current_time() + RESTART_WAIT_S)
    await rt.send(name, message, found.namespace)


async def wait_restarted(rt: _Runtime, info: ActorInfo, why: str, deadline: float) -> ActorInfo:
    """The actor named as ``info`` once it lives at another address; ActorDiedError if it has
    no restarts left, or is not back by ``deadline``."""
    if info.max_restarts == 0:
        raise ActorDiedError(
            f"actor {_describe(info)} is unreachable ({why}) and is not restarted: it has no "
            "restarts left (max_restarts). Create it again, or give it more max_restarts"
        )
    name, namespace = info.name or "", info.namespace or DEFAULT_NAMESPACE
    waited = deadline - trio.current_time()
    with trio.move_on_at(deadline):
        while True:
            try:
                reply = await rt.head_request(lambda rid: LookupName(rid, name, namespace))
            except ActorgridError:
                reply = None  # the head is away: ask again
            actor = reply.actor if isinstance(reply, NameReply) else None
            if actor is not None and (
                actor.actor_id != info.actor_id or actor.address != info.address
            ):
                return actor
            await trio.sleep(RESTART_POLL_S)
    raise ActorDiedError(
        f"actor {_describe(info)} is unreachable ({why}) and was not restarted within "
        f"{max(waited, 0.0):.3g} s, though it had restarts left (max_restarts). Likely causes: "
        "its owner (the process that created it) is gone too, or no worker has room for it; "
        "create it again, or give it lifetime='detached' to outlive its creator"
    )
