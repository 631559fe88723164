"""Credit-based flow control for mailbox messages, per (link, target actor), as HTTP/2 streams.

A sender may have at most ``window`` messages to one actor on one link that the receiver has
not yet taken in. The receiver never stops reading its link: a message for a full mailbox is
parked beside it (an overflow bounded by the senders' windows), and each message the receiver
takes in (into the mailbox, or refused because the actor is gone) earns its sender one credit
back. Credits go back in batches of ``window // 4`` so that a busy stream costs one small frame
per quarter window, not one per message.

Why a draining consumer always unblocks its senders: a sender waits only when it has ``window``
messages ungranted. The receiver holds back fewer than ``window // 4`` grants per stream, so at
least ``3 * window // 4`` of those messages are still parked or in flight; as the consumer
drains they are taken in, and their grants go back.

A stream that goes quiet with fewer than a batch held back would keep an entry at both ends for
good (a simulation's agents send one or two messages to each of 70,000 others): a worker also
grants what it holds back for an actor with its report of the messages that actor took
(``ReceiveCredits.take``, ``_runtime/confirms.py``), so only streams with messages in flight
have entries.

Two pure objects, one per side of a link; the runtime keeps one of each per connection. No I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["DEFAULT_WINDOW", "ReceiveCredits", "SendCredits"]

K = TypeVar("K", bound=Hashable)

# Messages in flight per (link, actor) before a sender waits. Large enough that a stream to
# one busy actor never waits on the round trip of its grants; small enough that an actor's
# overflow stays small next to its mailbox.
DEFAULT_WINDOW = 256


def _check(window: int) -> int:
    if window < 1:
        raise ValueError(f"a flow-control window must be at least 1, not {window}")
    return window


class SendCredits(Generic[K]):
    """Sender side of one link: messages sent to each actor and not yet granted back.

    Only streams with messages outstanding have an entry, so an idle link holds nothing.
    """

    __slots__ = ("_used", "window")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = _check(window)
        self._used: dict[K, int] = {}

    def try_take(self, key: K) -> bool:
        """One credit for a message to ``key``; False: the window is full, wait for a grant."""
        used = self._used.get(key, 0)
        if used >= self.window:
            return False
        self._used[key] = used + 1
        return True

    def grant(self, key: K, n: int) -> None:
        """The receiver took ``n`` messages to ``key`` in."""
        used = self._used.get(key, 0) - n
        if used > 0:
            self._used[key] = used
        else:
            self._used.pop(key, None)
            if not self._used:
                self._used = {}  # (a dict keeps its peak's table: 70,000 targets' worth)

    def outstanding(self, key: K) -> int:
        return self._used.get(key, 0)

    def __len__(self) -> int:
        return len(self._used)


class ReceiveCredits(Generic[K]):
    """Receiver side of one link: messages taken in per actor whose credit is not yet sent."""

    __slots__ = ("_pending", "batch")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.batch = max(1, _check(window) // 4)
        self._pending: dict[K, int] = {}

    def taken(self, key: K) -> int:
        """A message to ``key`` was taken in: the credits to grant now (0: none yet)."""
        n = self._pending.get(key, 0) + 1
        if n >= self.batch:
            self._drop(key)
            return n
        self._pending[key] = n
        return 0

    def take(self, key: K) -> int:
        """The credits held back for ``key``, to grant now with something else sent anyway
        (``confirms.py``: a worker's report of the messages its agents took): a stream that
        went quiet below a batch leaves no entry here nor at its sender."""
        n = self._pending.get(key, 0)
        if n:
            self._drop(key)
        return n

    def _drop(self, key: K) -> None:
        self._pending.pop(key, None)
        if not self._pending:
            self._pending = {}  # (a dict keeps its peak's table)

    def held(self, key: K) -> int:
        return self._pending.get(key, 0)

    def __len__(self) -> int:
        return len(self._pending)
