"""How a mailbox letter (``ctx.send``, ``ag.send`` to another worker) leaves this process.

Queued for its link's writer task, a letter waits for that task's turn: one task switch on
the loop (and its share of a 2-core machine) per letter, on the path of every hop of a ring
of agents. A letter that finds its link idle and no letter written out straight on that link
in the last DIRECT_GAP_S is written out now, from the sending task, with no switch. Letters
that follow it closely (many agents stepping in one turn of the loop) go to the writer as
before, which writes them all in one go: a burst still costs one write, not one per letter.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._protocol.messages import Message
    from .peer import Peer

__all__ = ["DIRECT_GAP_S", "send_letter"]

# Longer than the microseconds between the letters of agents stepping in one turn of the loop
# (a busy link: at most one write of its own per gap), shorter than the time between two
# letters of a ring on one link (two hops, over 100 us): a ring's letters all go straight out.
DIRECT_GAP_S = 50e-6

# When a letter last went straight out, per link (by id: a link outlives few of its letters,
# and a reused id only makes one letter wait for the writer).
_written_at: dict[int, float] = {}
_LINKS_MAX = 4096


async def send_letter(peer: Peer, message: Message) -> None:
    """Loop: queue ``message`` on ``peer`` (waiting while its queue is full); write it now if
    the link is idle and no letter went straight out on it just before."""
    key = id(peer)
    now = time.perf_counter()
    if peer.queued or now - _written_at.get(key, 0.0) < DIRECT_GAP_S:
        await peer.send_wait(message)
        return
    if len(_written_at) >= _LINKS_MAX:
        _written_at.clear()
    _written_at[key] = now
    await peer.send_wait(message, flush=True)
