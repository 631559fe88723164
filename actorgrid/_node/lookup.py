"""Finding an actor or a task from what an operator typed: a full id, the short form that
listings show, a hex prefix, or (actors) a name.

Ids are 16 bytes: the creating process's 8-byte prefix, then its counter. Every actor or task
one driver creates shares the first half, so a prefix shorter than 17 hex digits cannot tell
them apart; the short form (``short_id``) is the first 6 and the last 6 hex digits, which
differ between processes and between one process's ids.

Pure functions over the records of one ``Cluster.status()``: O(listed items) per call, on an
operator's request only.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import TypeVar

from .._exceptions import ActorgridError
from .._protocol.ids import short

__all__ = ["match_id", "short_id"]

T = TypeVar("T")

SHORT_ID_LENGTH = 12
_HEX = frozenset(string.hexdigits.lower())


def short_id(any_id: bytes) -> str:
    """The form of an id that listings show and ``match_id`` accepts."""
    return short(any_id)


def looks_like_id(text: str) -> bool:
    return bool(text) and set(text.lower()) <= _HEX


def match_id(text: str, items: Sequence[T], id_of: Callable[[T], bytes], what: str) -> list[T]:
    """The items whose id ``text`` names (full hex, short form or hex prefix): empty if none
    does, several only if they share that one id (a call a worker still runs after its
    caller took it for lost and sent it elsewhere). Raises ActorgridError, listing the
    candidates, if ``text`` names several ids."""
    key = text.lower()
    if not looks_like_id(key):
        return []
    found = [
        item
        for item in items
        if id_of(item).hex().startswith(key)
        or (len(key) == SHORT_ID_LENGTH and short_id(id_of(item)) == key)
    ]
    ids = list(dict.fromkeys(id_of(item).hex() for item in found))
    if len(ids) > 1:
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        raise ActorgridError(
            f"{text!r} matches {len(ids)} {what}s ({', '.join(ids[:5])}{more}); pass the short "
            "id that the listing shows, or the full id"
        )
    return found
