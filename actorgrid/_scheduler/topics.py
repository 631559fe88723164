"""Topic subscriptions of one process: which of its agents get the messages of a topic.

A publish goes once to each worker (not once per subscriber over the wire); each worker looks
its subscribers up here. Costs: ``subscribe``, ``unsubscribe`` O(1); ``subscribers(topic)``
is the topic's set itself (the caller drops the ids of agents that have ended, with
``unsubscribe``, as it meets them: no sweep over every subscription).
"""

from __future__ import annotations

from .._protocol.ids import ActorId

__all__ = ["Subscriptions"]


class Subscriptions:
    def __init__(self) -> None:
        self._by_topic: dict[str, dict[ActorId, None]] = {}  # insertion order: fan-out order

    def __repr__(self) -> str:
        return f"<Subscriptions topics={len(self._by_topic)}>"

    def subscribe(self, topic: str, actor_id: ActorId) -> None:
        self._by_topic.setdefault(topic, {})[actor_id] = None

    def unsubscribe(self, topic: str, actor_id: ActorId) -> None:
        subs = self._by_topic.get(topic)
        if subs is not None:
            subs.pop(actor_id, None)
            if not subs:
                del self._by_topic[topic]

    def subscribers(self, topic: str) -> list[ActorId]:
        return list(self._by_topic.get(topic, ()))

    def count(self, topic: str) -> int:
        return len(self._by_topic.get(topic, ()))
