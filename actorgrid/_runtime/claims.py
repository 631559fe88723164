"""Name claims: how this process claims names at the head, one at a time
(``register_name_nowait``, for ``get_if_exists``) or as the claims of one loop turn in one
ClaimNames (``claim_name_batched``: the creator uses each name at once, from its cache), and
how the agents' creations that a ClaimNames reply grants go to each worker in one
CreateAgents. Lookups, kill, send and ask by name are names.py's, on top of this."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from .._exceptions import ActorgridError
from .._protocol.creations import MAX_BYTES, CreationBatch
from .._protocol.messages import ActorInfo, ClaimNames, NameReply, NamesClaimed, RegisterName
from .._protocol.namebatch import MAX_KINDS, kind_of
from .._scheduler.names import DEFAULT_NAMESPACE
from .actors import RuntimeActors
from .gcpause import freeze
from .heaptrim import trim_heap
from .links import log
from .peer import Peer, PeerClosedError
from .records import _describe
from .starting import FREEZE_AFTER, START_BATCH

__all__ = ["CLAIM_BATCH_MAX", "ClaimDone", "RuntimeClaims"]

# Name claims per ClaimNames: ~25 bytes each on the wire.
CLAIM_BATCH_MAX = 2048
# Creations handed out per loop turn once a ClaimNames is answered (as many as starting.py
# starts per turn), so that thousands of them let the loop breathe.
RELEASE_BATCH = START_BATCH

# After this many batched claims, once none has come for _TRIM_DELAY_S (the burst of creations
# is over), the heap is trimmed (heaptrim.py): what the burst made and freed (its ClaimNames
# and CreateAgents, the head's decoding of them, old tables of the growing ones) stays in this
# process's RSS among what it keeps (refs, names), ~120 bytes a named agent at 10,000 and at
# 100,000 (1.53 -> 1.42 KB a named agent in the driver, the head in it).
_TRIM_AFTER_CLAIMS = 4096
_TRIM_DELAY_S = 0.25

# What a batched claim's creator is told once the head answered: None (the name is its
# actor's) or the error that fails its ref or handle.
ClaimDone = Callable[[Exception | None], None]


class _ClaimBatch:
    """The name claims of one loop turn, sent in one ClaimNames."""

    __slots__ = ("error", "head", "items", "kinds", "of_kind", "request", "templates")

    def __init__(self) -> None:
        self.items: list[tuple[ActorInfo, ClaimDone]] = []
        self.kinds: dict[tuple[object, ...], int] = {}  # namebatch.kind_of: index in ClaimNames
        self.of_kind = bytearray()  # each item's kind
        self.templates: list[ActorInfo] = []  # each kind's first actor (its shared fields)
        self.head: Peer | None = None
        self.request: Any = None  # the head link's pending reply, once sent
        self.error: Exception | None = None


class RuntimeClaims(RuntimeActors):
    """Name claims, one by one or in batches, and the creations their replies grant."""

    _claims_unfrozen = 0  # name claims since the last freeze
    _claims_untrimmed = 0  # batched name claims since the last heap trim
    _trimming = False  # _trim_after_claims runs
    _claim_batches_open = 0  # ClaimNames whose _finish_claims has not ended

    def register_name_nowait(self, info: ActorInfo, get_if_exists: bool) -> Any:
        """Loop: queue the name claim now (ordered before anything sent after it)."""
        self._flush_claims()  # the claims queued before it go first
        head = self._link().up()
        pending = head.request_nowait(lambda rid: RegisterName(rid, info, get_if_exists))
        self._claims_unfrozen += 1
        if self._claims_unfrozen >= FREEZE_AFTER:
            # The creator of 100,000 named agents holds ~30 objects for each (its refs, the
            # head's tables when it hosts the head): full collections of them all stopped
            # this process for seconds (1.6 s at 20,000 agents on a loaded 2-core machine),
            # its head silent, its dials timed out. What exists now is frozen, as
            # starting.py does on workers: later collections walk only what came since.
            self._claims_unfrozen = 0
            freeze()  # thawed later (gcpause.py)
        return head, pending, self._names_epoch

    # The name claims queued this loop turn, sent as one ClaimNames (_flush_claims).
    _claim_batch: _ClaimBatch | None = None

    def claim_name_batched(self, info: ActorInfo, done: ClaimDone) -> None:
        """Loop: queue the name claim of ``info`` (placed, no get_if_exists) with the others
        of this loop turn, and make the name usable by this process at once; ``done(error)``
        is called once the head answered (None: the name is ``info``'s, and the head owns it
        as this process's: create it). The claims go out at the end of the loop turn, or
        before anything else this process tells the head about names (kept in order)."""
        self.names[(info.namespace or DEFAULT_NAMESPACE, info.name or "")] = info
        batch = self._claim_batch
        kind = kind_of(info)
        if (
            batch is None
            or len(batch.items) >= CLAIM_BATCH_MAX
            or (kind not in batch.kinds and len(batch.kinds) >= MAX_KINDS)
        ):
            self._flush_claims()
            batch = self._claim_batch = _ClaimBatch()
            self._claim_batches_open += 1
            self.nursery.start_soon(self._finish_counted, batch)
        k = batch.kinds.get(kind)
        if k is None:
            k = batch.kinds[kind] = len(batch.templates)
            batch.templates.append(info)
        batch.of_kind.append(k)
        batch.items.append((info, done))
        self._claims_unfrozen += 1
        if self._claims_unfrozen >= FREEZE_AFTER:
            self._claims_unfrozen = 0  # as in register_name_nowait
            freeze()
        self._claims_untrimmed += 1
        if self._claims_untrimmed >= _TRIM_AFTER_CLAIMS and not self._trimming:
            self._trimming = True
            self.nursery.start_soon(self._trim_after_claims)

    async def _trim_after_claims(self) -> None:
        """A burst of batched claims: trim the heap once none came for _TRIM_DELAY_S, off the
        loop, and every creation they granted sent. While claims keep coming, this task wakes
        once per _TRIM_DELAY_S and no more."""
        try:
            claims = -1
            while claims != self._claims_untrimmed or self._claim_batches_open:
                claims = self._claims_untrimmed
                await trio.sleep(_TRIM_DELAY_S)
            self._claims_untrimmed = 0
            await trio.to_thread.run_sync(trim_heap)
        finally:
            self._trimming = False

    def _flush_claims(self) -> None:
        """Loop: send the claims queued so far (one ClaimNames), if any."""
        batch = self._claim_batch
        if batch is None:
            return
        self._claim_batch = None
        items = batch.items
        ids = b"".join(info.actor_id for info, _ in items)
        names = tuple(info.name or "" for info, _ in items)
        of_kind = bytes(batch.of_kind)
        batch.kinds.clear()
        try:
            batch.head = self._link().up()
            batch.request = batch.head.request_nowait(
                lambda rid: ClaimNames(rid, tuple(batch.templates), of_kind, ids, names)
            )
        except Exception as exc:
            batch.error = exc

    async def _finish_counted(self, batch: _ClaimBatch) -> None:
        try:
            await self._finish_claims(batch)
        finally:
            self._claim_batches_open -= 1

    async def _finish_claims(self, batch: _ClaimBatch) -> None:
        # Started by the batch's first claim, run after the rest of its loop turn: whatever
        # was queued meanwhile rides along.
        if self._claim_batch is batch:
            self._flush_claims()
        items = batch.items
        refused: dict[int, Exception] = {}
        try:
            if batch.error is not None:
                raise batch.error
            assert batch.head is not None
            reply = await batch.head.wait_reply(batch.request)
            assert isinstance(reply, NamesClaimed)
            for i, _holder, why in reply.refused:
                refused[i] = ValueError(why)
        except (PeerClosedError, ActorgridError) as exc:
            gone = ActorgridError(
                f"the cluster head went away before it answered a name registration: {exc}; "
                "try again once it is back"
            )
            refused = dict.fromkeys(range(len(items)), gone)
        owned = self._owned_by_claim
        if owned is None:
            owned = self._owned_by_claim = set()
        # The coroutine agents' creations (SubmitTasks) of these claims go out per worker in
        # one CreateAgents each (``_protocol/creations.py``), sent before anything else is:
        # before a creator that sends more than a creation (a class actor's), and before
        # the loop goes on (no await in between, so nothing overtakes them).
        creations = CreationBatch(min(MAX_BYTES, self.max_message_bytes // 4))
        for i, (info, done) in enumerate(items):
            error = refused.get(i)
            if error is not None:
                self.forget_actor(info.actor_id)  # the creator's optimistic name
            elif not info.detached:
                owned.add(info.actor_id)
            batched = getattr(done, "sends_creation_only", False)
            if not batched:
                self._send_creations(creations)
            self._creations = creations if batched else None
            try:
                done(error)
            except Exception:
                log.exception("creating the named actor %s failed", _describe(info))
            finally:
                self._creations = None
                owned.discard(info.actor_id)
            if i % RELEASE_BATCH == RELEASE_BATCH - 1:
                self._send_creations(creations)
                await trio.lowlevel.checkpoint()  # thousands of creations: let the loop breathe
        self._send_creations(creations)

    def _send_creations(self, creations: CreationBatch) -> None:
        for peer, msg in creations.messages():
            peer.send(msg)  # type: ignore[attr-defined]  # the link _send_spec added it for

    async def finish_register(self, pending: Any) -> ActorInfo:
        """Loop: wait for a name claim; the actor now holding the name (ours or existing)."""
        head, request, epoch = pending
        try:
            reply = await head.wait_reply(request)
        except PeerClosedError as exc:
            raise ActorgridError(
                f"the cluster head went away before it answered a name registration: {exc}; "
                "try again once it is back"
            ) from None
        assert isinstance(reply, NameReply)
        if reply.error is not None:
            raise ValueError(reply.error)
        assert reply.actor is not None
        if reply.actor.name:
            key = (reply.actor.namespace or DEFAULT_NAMESPACE, reply.actor.name)
            self._cache_name(key, reply.actor, epoch)
        return reply.actor

    def _cache_name(self, key: tuple[str, str], info: ActorInfo, epoch: int) -> None:
        if self._names_epoch != epoch:
            return
        # Compact: no ActorInfo kept per name; and an agent hosted here is named by its
        # slot's id, not a copy of its own (half the names of a worker's agents, 49 B each).
        executor = self.executor
        slot = executor.actors.get(info.actor_id) if executor is not None else None
        self.names.cache(key, info, None if slot is None else slot.actor_id)
