"""Messages of names in batches (part of the closed union in ``messages.py``): the name
claims of many ``.options(name=...).remote()`` calls, and the first lookups of many names,
each one frame per loop turn instead of one round trip each (issue 13: 100,000 named agents).
"""

from .ids import ActorId
from .records import ActorInfo
from .wireclass import message


@message
class ClaimNames:
    """Sent to the head by ``.options(name=...).remote()`` of actors placed at once (the
    claims one loop turn queued, in order): claim each name for its new actor, atomically,
    and own each non-detached one (as OwnActor would), so that it ends with this process.
    Answered with NamesClaimed."""

    rid: int
    actors: tuple[ActorInfo, ...]


@message
class NamesClaimed:
    """The head's reply to ClaimNames: the claims that failed only, each as (its index in
    ``actors``, the actor holding the name, why); every other claim holds."""

    rid: int
    refused: tuple[tuple[int, ActorInfo | None, str], ...]


@message
class LookupNames:
    """Sent to the head by ``ctx.send(name)``, ``ag.send(name)``, ``ask``: the first lookups
    of the names one loop turn asked for, as (namespace, name). Answered with NamesFound."""

    rid: int
    keys: tuple[tuple[str, str], ...]


@message
class NamesFound:
    """The head's reply to LookupNames: the actor holding each name, in the order asked
    (None: no live actor holds it)."""

    rid: int
    actors: tuple[ActorInfo | None, ...]


@message
class NamesEnded:
    """Sent by the head to a process it told where these named actors live (it may cache
    them): they have ended, forget them; the named actors that ended in one loop turn of
    the head, in one frame per process. Answered with Ack."""

    rid: int
    actor_ids: tuple[ActorId, ...]
