"""Messages of names in batches (part of the closed union in ``messages.py``): the name
claims of many ``.options(name=...).remote()`` calls, and the first lookups of many names,
each one frame per loop turn instead of one round trip each (issue 13: 100,000 named agents).
"""

from .._exceptions import ProtocolError
from .ids import ActorId
from .records import ActorInfo
from .wireclass import message


@message
class ClaimNames:
    """Sent to the head by ``.options(name=...).remote()`` of actors placed at once (the
    claims one loop turn queued, in order): claim each name for its new actor, atomically,
    and own each non-detached one (as OwnActor would), so that it ends with this process.
    Answered with NamesClaimed.

    Compact (issue 13: 100,000 claims): the actors of one batch differ mostly in id and name,
    so each claim is its kind's ActorInfo (``kinds``; the index in ``of_kind``, one byte
    each) with its own id (16 bytes each, back to back in ``actor_ids``) and name (kinds
    told apart by ``kind_of``). Read it with ``actors()``."""

    rid: int
    kinds: tuple[ActorInfo, ...]
    of_kind: bytes
    actor_ids: bytes
    names: tuple[str, ...]

    def actors(self) -> list[ActorInfo]:
        """Each claim's actor, in order; ProtocolError if the fields do not agree (checked
        here, not at decoding: every field alone is well-formed)."""
        return [of_kind(kind, actor_id, name) for kind, actor_id, name in self.claims()]

    def claims(self) -> list[tuple[ActorInfo, ActorId, str]]:
        """Each claim as (its kind, its actor's id, its name), in order, without an ActorInfo
        each (``of_kind`` makes one); ProtocolError as ``actors``."""
        n = len(self.names)
        if (
            len(self.of_kind) != n
            or len(self.actor_ids) != n * ID_BYTES
            or (n and max(self.of_kind) >= len(self.kinds))
        ):
            raise ProtocolError(
                f"a ClaimNames of {n} names needs {n} kind indexes below {len(self.kinds)} "
                f"and {n * ID_BYTES} bytes of actor ids"
            )
        ids, kinds = self.actor_ids, self.kinds
        return [
            (kinds[k], ActorId(ids[i * ID_BYTES : (i + 1) * ID_BYTES]), name)
            for i, (k, name) in enumerate(zip(self.of_kind, self.names, strict=True))
        ]


# A ClaimNames holds at most this many kinds (``of_kind`` is one byte a claim).
MAX_KINDS = 256
ID_BYTES = 16  # ``ids.py``: an 8-byte process prefix and an 8-byte counter


def kind_of(info: ActorInfo) -> tuple[object, ...]:
    """What ``info`` shares with the other actors of its kind in a ClaimNames."""
    return (
        info.address,
        info.kind,
        info.label,
        info.namespace,
        info.methods,
        info.max_restarts,
        info.max_task_retries,
        info.detached,
        info.mailbox_size,
        info.resources,
    )


def of_kind(kind: ActorInfo, actor_id: ActorId, name: str | None) -> ActorInfo:
    """An actor of ``kind`` (what ``kind_of`` says it shares with its kind) with its own id and
    name: the fields in place, not ``attrs.evolve`` (~10 µs an agent)."""
    return ActorInfo(
        actor_id,
        kind.address,
        kind.kind,
        kind.label,
        name,
        kind.namespace,
        kind.methods,
        kind.max_restarts,
        kind.max_task_retries,
        kind.detached,
        kind.mailbox_size,
        kind.resources,
    )


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
