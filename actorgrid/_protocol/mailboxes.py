"""Messages of mailboxes: ``ctx.send``/``ag.send``/``ask`` to an actor or to a keyed virtual
agent, their replies and flow control, and topic publishes. Part of the closed union in
``messages.py``, which re-exports them.
"""

from .ids import ActorId
from .records import Payload
from .wireclass import message

# --- mailboxes ----------------------------------------------------------------------------


@message
class Deliver:
    """Sent by ``ctx.send``/``ag.send`` (``rid == 0``) and ``ctx.ask``/``ag.ask``: a mailbox
    message. An ask is answered with AskReply."""

    rid: int
    actor_id: ActorId
    payload: Payload


@message
class AskReply:
    """Sent by ``ctx.reply``: the answer to an ask, or a boxed error."""

    rid: int
    ok: bool
    value: Payload


@message
class DeliveryFailed:
    """Sent back by a worker when a Deliver names an actor that is not alive there."""

    actor_id: ActorId
    reason: str


@message
class Credit:
    """Sent back by the receiver of Delivers: it took ``n`` more messages to ``actor_id`` in
    (into the mailbox, or refused), so the sender may send that many more (flow control)."""

    actor_id: ActorId
    n: int


@message
class FinishedSends:
    """Sent back by a worker, every few tens of milliseconds at most: of the quiet calls
    (``h.method.remote()`` as a statement) and fire-and-forget messages (``ag.send``,
    ``ctx.send``) that came on this link, ``counts[i]`` more to ``actor_ids[i]`` were finished
    (returned or raised; taken from the mailbox), so their sender stops counting them as
    possibly lost (``_runtime/confirms.py``). ``credits[i]`` (if any): flow-control credits
    for messages to ``actor_ids[i]`` that the worker took in and had held back (a batch not
    full yet, ``_scheduler/flow.py``), granted now."""

    actor_ids: tuple[ActorId, ...]
    counts: tuple[int, ...]
    credits: tuple[int, ...] = ()


# --- virtual agents and topics ----------------------------------------------------------------


@message
class DeliverToKey:
    """Sent by ``ctx.send``/``ag.send`` to ``kind.key(k)``: a message for the virtual agent
    ``key`` of a kind, to the worker that owns the key (rendezvous hashing); that worker
    activates the agent on its first message, or forwards to the owner in its own view
    (``hops`` counts the forwards). ``code`` is the pickled coroutine function, ``code_id``
    its hash. Sent by ``ctx.ask``/``ag.ask`` with a ``rid``, it is answered with AskReply
    (a forwarding worker relays the answer)."""

    kind: str
    key: str
    code_id: bytes
    code: bytes
    idle_timeout_s: float  # 0: never deactivated for idleness
    mailbox_size: int
    payload: Payload
    hops: int = 0
    rid: int = 0


@message
class Publish:
    """Sent by ``ctx.publish``/``ag.publish``: one message on ``topic``, once to each worker;
    the worker puts it in the mailbox of each of its agents subscribed to the topic."""

    topic: str
    payload: Payload
