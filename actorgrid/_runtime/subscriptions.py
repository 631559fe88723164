"""``ag.subscribe``: a driver's subscription to a topic.

Publishes reach workers only, so a driver subscribes through a relay: a small agent on a
worker that subscribes to the topic and keeps what comes, numbered. The driver pulls with an
ask, saying how many it has received so far; the relay drops those and answers with the rest
(or waits for one). An ask that timed out loses nothing: its messages are sent again on the
next pull. Order is the relay's arrival order: each publisher's messages in the order sent.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .api import ask, ask_async, kill
from .context import Context, Request
from .remote import remote

__all__ = ["Subscription", "subscribe", "subscribe_async"]


@remote
async def _relay(ctx: Context, topic: str) -> None:
    ctx.subscribe(topic)
    kept: deque[Any] = deque()
    first = 0  # the number of the first message in kept
    waiting: list[Request] = []
    async for msg in ctx.mailbox:
        request, ctx.request = ctx.request, None
        if request is None:  # a published message
            kept.append(msg)
            for pull in waiting:
                pull.reply(list(kept))
            waiting = []
        elif msg == "ready":
            request.reply(True)
        elif msg == "close":
            request.reply(True)
            return
        else:
            received = msg[1]
            while first < received and kept:
                kept.popleft()
                first += 1
            for stale in waiting:  # pulls the driver has given up on
                stale.reply([])
            waiting = []
            if kept:
                request.reply(list(kept))
            else:
                waiting.append(request)


class Subscription:
    """The messages published on a topic since ``ag.subscribe(topic)``, in order per
    publisher: ``sub.get()`` (or ``await sub.get_async()``, or ``for msg in sub``)."""

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError("Subscription has no public constructor: use ag.subscribe(topic)")

    @classmethod
    def _make(cls, topic: str, relay: Any) -> Subscription:
        sub = object.__new__(cls)
        sub.topic = topic
        sub._relay = relay
        sub._items = deque()
        sub._received = 0
        return sub

    topic: str
    _relay: Any
    _items: deque[Any]
    _received: int

    def __repr__(self) -> str:
        return f"<Subscription {self.topic!r} received={self._received} unread={len(self._items)}>"

    def get(self, timeout: float | None = None) -> Any:
        """The next message; waits for one (GetTimeoutError after ``timeout`` seconds)."""
        if not self._items:
            self._take(ask(self._relay, ("next", self._received), timeout=timeout))
        return self._items.popleft()

    async def get_async(self, timeout: float | None = None) -> Any:
        if not self._items:
            self._take(await ask_async(self._relay, ("next", self._received), timeout=timeout))
        return self._items.popleft()

    def _take(self, batch: list[Any]) -> None:
        self._items.extend(batch)
        self._received += len(batch)

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Any:
        return self.get()

    def close(self) -> None:
        """Stop receiving: the relay ends."""
        kill(self._relay)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subscribe(topic: str) -> Subscription:
    """Receive, in this driver, every message published on ``topic`` from now on."""
    relay = _relay.remote(topic)
    ask(relay, "ready", timeout=None)  # subscribed on its worker before this returns
    return Subscription._make(topic, relay)


async def subscribe_async(topic: str) -> Subscription:
    relay = _relay.remote(topic)
    await ask_async(relay, "ready", timeout=None)
    return Subscription._make(topic, relay)
