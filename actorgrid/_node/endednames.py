"""The head telling the processes that cached a name that its actor ended, by loop turn.

Names end by the hundred thousand (issue 13): the named actors that end in one loop turn of the
head go to each process that cached any of them in one NamesEnded (``EndedNames.add``), sent in
address order (a simulation replays it), and the ActorEnded requests of that turn are acked once
every cacher answered or ``FORGET_NAME_TIMEOUT_S`` passed. Each round is O(names in it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .._protocol.ids import ActorId
from .._protocol.messages import Ack, NamesEnded
from .._runtime.peer import Peer, PeerClosedError

__all__ = ["FORGET_NAME_TIMEOUT_S", "EndedNames"]

# How long the end of a named actor waits for the processes caching its name to drop it; a
# process that takes longer is left to find out when a send to the actor fails.
FORGET_NAME_TIMEOUT_S = 2.0

Background = Callable[[str, Callable[..., Awaitable[object]], Any], None]


class EndedNames:
    """The named actors that ended in this loop turn, not told to their cachers yet."""

    __slots__ = ("_background", "_round")

    def __init__(self, background: Background) -> None:
        self._background = background  # runs a coroutine in the head's nursery, logging errors
        self._round: _EndedRound | None = None

    def add(self, peer: Peer | None, actor_id: ActorId, rid: int, cachers: set[Peer]) -> None:
        """Tell ``cachers`` that ``actor_id`` ended (with the others of this loop turn: one
        NamesEnded each), then ack ``rid`` to ``peer``: 10,000 agents ending at once cost a
        few frames to each process that cached them, not a round trip each."""
        ended = self._round
        if ended is None:
            ended = self._round = _EndedRound()
            self._background("dropping names from caches", self._tell_round, ended)
        for cacher in cachers:
            ended.by_cacher.setdefault(cacher, []).append(actor_id)
        if rid and peer is not None:
            ended.acks.append((peer, rid))

    async def _tell_round(self, ended: _EndedRound) -> None:
        if self._round is ended:
            self._round = None  # what ends from now on goes in the next round
        with trio.move_on_after(FORGET_NAME_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                # In address order, not the dict's: a simulation replays it.
                for cacher in sorted(ended.by_cacher, key=_by_address):
                    ids = tuple(ended.by_cacher[cacher])
                    nursery.start_soon(_tell_ended, cacher, ids)
        for peer, rid in ended.acks:
            if not peer.closed:
                peer.send(Ack(rid))


async def _tell_ended(cacher: Peer, actor_ids: tuple[ActorId, ...]) -> None:
    try:
        await cacher.request(lambda rid: NamesEnded(rid, actor_ids))
    except PeerClosedError:
        pass  # a process that is gone caches nothing


class _EndedRound:
    """Named actors that ended in one loop turn of the head: which processes to tell, and
    the ActorEnded requests to ack once they are told."""

    __slots__ = ("acks", "by_cacher")

    def __init__(self) -> None:
        self.by_cacher: dict[Peer, list[ActorId]] = {}
        self.acks: list[tuple[Peer, int]] = []


def _by_address(peer: Peer) -> str:
    return peer.address
