"""Messages of ownership (part of the closed union in ``messages.py``)."""

from .records import ActorInfo
from .wireclass import message


@message
class LocateActor:
    """Sent to the head by a process whose call to ``actor`` found its worker gone, when the
    actor may be restarted by its owner (or, detached, by the head): where does it live now?
    Answered with a NameReply whose ``actor`` is ``actor`` at its current address, or None
    while the head knows of no live incarnation (it is being restarted, or it ended)."""

    rid: int
    actor: ActorInfo
