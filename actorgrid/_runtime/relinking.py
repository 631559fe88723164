"""Links to live workers that dropped: redialled before their worker counts as dead.

A link to a worker may close while the worker lives (a reset, a frame the peer rejected, a
proxy's timeout). The head is the authority on whether a worker is alive; a closed link alone
is not proof of death. So a dropped link to a worker the head still lists is dialled again
(``_scheduler/relink.py`` decides: at most one redial per address at a time, and a link that
keeps dropping counts as its worker's death); calls made meanwhile queue on the new link, in
order. If the redial shakes hands, the worker is alive: the calls that were in flight on the
dropped link fail with a reason that says so (they may or may not have run), tasks with
retries left are placed again, and the worker's actors, names and place in placement stay
(``_link_dropped``). If it fails, the worker is handled as dead, as for any link that closed
for good (``RuntimeLinks._link_gone``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .._exceptions import ActorDiedError, TaskCancelledError
from .._protocol.ids import ActorId, ObjectId
from .._protocol.messages import Event
from .._scheduler.relink import Relinks, Verdict
from .confirms import report_lost
from .membership import RuntimeMembership
from .peer import Peer
from .records import Sent, _describe
from .refs import PENDING

__all__ = ["RuntimeRelinking"]

log = logging.getLogger("actorgrid.runtime")


class RuntimeRelinking(RuntimeMembership):
    """Redials of dropped links to live workers; the state is RuntimeLinks'."""

    # Set by RuntimeLinks.__init__ (links.py); declared so that this layer type-checks alone.
    relinks: Relinks
    _relinking: dict[str, Peer]
    _closing: bool
    calls_dropped: Callable[[str, tuple[ObjectId, ...], str], int]
    owner_decides: Callable[[Sent], bool]
    publish: Callable[[Event], None]
    _label_of: Callable[[ActorId], str]

    def _redial(self, peer: Peer) -> bool:
        """Loop: the link to a worker the head lists dropped: dial it again (True), and
        decide what the calls in flight on it become by whether that succeeds (``_dial``)."""
        address = peer.address
        wid = self._worker_at.get(address)
        if peer.remote_hello is None or wid is None:
            return False  # it never opened, or it is no worker's
        listed = wid in self.placement.workers or wid in self._env_aside
        verdict = self.relinks.dropped(
            address,
            time.monotonic(),
            listed=listed,
            aborted=peer.aborted,
            stopping=self._closing or address == self.address,
        )
        if verdict is not Verdict.REDIAL:
            return False
        log.info(
            "the link to the worker at %s dropped (%s): redialling", address, peer.close_reason
        )
        self._relinking[address] = peer
        self.peer_for(address)  # calls made from now on queue on the new link, in order
        return True

    def _link_dropped(self, peer: Peer) -> None:
        """Loop: the link ``peer`` to a worker dropped, and a redial reached that worker:
        the calls in flight on it fail (they may or may not have run) or, tasks with retries
        left, are placed again; its actors stay, and so does its place in placement."""
        inflight, peer.inflight = peer.inflight, {}
        address = peer.address
        wid = self._worker_at.get(address)
        why = (
            f"the connection to its worker at {address} dropped ({peer.close_reason}) while "
            "that worker stayed alive, so the call may or may not have run; calls made since "
            "go on a new connection"
        )
        report_lost(
            self, peer, f"the connection to its worker at {address} dropped", self._label_of
        )
        owned: list[ObjectId] = []
        for object_id, sent in inflight.items():
            if sent.counted and wid is not None:
                self.placement.finished(wid)
            entry, spec = sent.entry, sent.spec
            if entry.state != PENDING:
                continue
            if (spec is not None and spec.actor is None) or self.owner_decides(sent):
                owned.append(object_id)  # the owner state decides: LinkDropped below
            elif sent.cancelled:
                entry.set_error(TaskCancelledError(f"the call was cancelled, and then {why}"))
            else:
                actor = sent.actor or (spec.actor if spec is not None else None)
                label = _describe(actor) if actor is not None else "the actor"
                entry.set_error(ActorDiedError(f"actor {label}: {why}"))
        retried = self.calls_dropped(address, tuple(owned), why) if owned else 0
        if retried:
            self.publish(Event("task_retried", time.time(), detail=f"{retried} tasks: {why}"))
