"""Outliving the head: what a worker reports to the head it reconnects to.

The head is on the control path only, so losing it stops no call: a worker keeps its actors
and its calls, and its link to the head (``HeadLink``) dials the same address again until it
answers. On that new link the worker sends ``RejoinWorker``: itself, its live actors (the
named ones take their names again) and, for its detached actors, how to create each again
(the head restarts them if the worker dies later). The head decides (``_scheduler/rejoin.py``):

- a restarted head (a new incarnation) takes it in, and rebuilds its tables from what it is
  told: membership from the nodes and workers that rejoin, names and detached actors from the
  workers, the owner table from every process that reconnects (``headlink.reown``);
- the head that declared this worker dead (its link closed there: its calls failed over, its
  names were freed) refuses, and the worker exits: its node starts a fresh one.

The node agent does the same for itself (``rejoin_head``: ``RejoinNode``), keeping its worker
processes while it is away from the head, for at most FENCE_AFTER_INTERVALS pulse intervals:
a head silent that long has declared the node dead if it still runs (after 5), so the node
stops its workers then, as Ray's nodes give up on their GCS.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import cloudpickle
import trio

from .._exceptions import ActorgridError
from .._protocol.messages import Ack, CreateActor, RejoinWorker, WorkerInfo
from .._runtime.peer import Peer, PeerClosedError
from .._runtime.pulse import STALLED_AFTER_INTERVALS
from .logs import RateLimitedLog

if TYPE_CHECKING:  # a node agent (and the driver hosting one) never loads the executor
    from .._runtime.executor import Executor

__all__ = ["FENCE_AFTER_INTERVALS", "REJOIN_INTERVAL_S", "Rejoined", "rejoin_head", "rejoin_worker"]

log = logging.getLogger("actorgrid.worker")
node_log = logging.getLogger("actorgrid.node")

# A node that lost its head dials it again this often (the first try at once), each dial
# bounded by some pulse intervals, at least this long.
REJOIN_INTERVAL_S = 1.0
REJOIN_DIAL_MIN_S = 5.0
FENCE_AFTER_INTERVALS = 30


@attrs.frozen
class Rejoined:
    refused: str | None  # why the node must stop its workers, or None: it is back
    answered: bool  # the head answered (then a new join can follow at once)


async def rejoin_head(
    connect: Callable[[], Awaitable[str | None]],
    address: str,
    pulse_interval_s: float,
    errors: RateLimitedLog,
) -> Rejoined:
    """Dial the head with ``connect`` (None: taken back; else why it refused) until it
    answers, for at most FENCE_AFTER_INTERVALS pulse intervals."""
    started = trio.current_time()
    dial_timeout_s = max(STALLED_AFTER_INTERVALS * pulse_interval_s, REJOIN_DIAL_MIN_S)
    fence_after_s = FENCE_AFTER_INTERVALS * pulse_interval_s
    with trio.move_on_at(started + fence_after_s):
        while True:
            try:
                with trio.fail_after(dial_timeout_s):
                    refused = await connect()
            except (OSError, ActorgridError, PeerClosedError, trio.TooSlowError) as exc:
                errors.warning("rejoin", "the head at %s is still unreachable (%s)", address, exc)
                await trio.sleep(REJOIN_INTERVAL_S)
                continue
            if refused is None:
                node_log.warning(
                    "rejoined the head at %s after %.1f s, with this node's workers",
                    address,
                    trio.current_time() - started,
                )
            return Rejoined(refused, answered=True)
    why = f"the head at {address} did not answer for {fence_after_s:g} s"
    return Rejoined(f"{why} ({FENCE_AFTER_INTERVALS} pulse intervals)", answered=False)


def _report(executor: Executor, info: WorkerInfo) -> RejoinWorker:
    actors = tuple(slot.info for slot in list(executor.actors.values()) if slot.info is not None)
    detached: list[CreateActor] = []
    for actor_id, create in list(executor.detached.items()):
        if actor_id not in executor.actors or create.actor.max_restarts == 0:
            continue  # ended, or the head would not restart it anyway
        # The class code rode only on the first creation of its class on its link.
        code = create.cls or cloudpickle.dumps(executor.classes[create.class_id])
        detached.append(attrs.evolve(create, cls=code))
    return RejoinWorker(0, info, actors, tuple(detached))


async def rejoin_worker(
    executor: Executor, info: WorkerInfo, stop: Callable[[str], None], head: Peer
) -> None:
    """On a new link to the head: report this worker; if the head refuses it, ``stop``."""
    report = _report(executor, info)
    reply = await head.request(lambda rid: attrs.evolve(report, rid=rid))
    assert isinstance(reply, Ack)
    if reply.error is not None:
        log.warning("the head refused this worker back: %s; exiting", reply.error)
        stop(reply.error)
    else:
        log.info("rejoined the head at %s with %d actors", head.address, len(report.actors))
