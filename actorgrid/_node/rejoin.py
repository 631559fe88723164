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

The node agent does the same for itself (``RejoinNode``, see ``node.py``), keeping its worker
processes while it is away from the head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import cloudpickle

from .._protocol.messages import Ack, CreateActor, RejoinWorker, WorkerInfo
from .._runtime.core import Runtime
from .._runtime.peer import Peer

__all__ = ["rejoin_worker"]

log = logging.getLogger("actorgrid.worker")


def _report(rt: Runtime, info: WorkerInfo) -> RejoinWorker:
    executor = rt.executor
    assert executor is not None
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
    rt: Runtime, info: WorkerInfo, stop: Callable[[str], None], head: Peer
) -> None:
    """On a new link to the head: report this worker; if the head refuses it, ``stop``."""
    report = _report(rt, info)
    reply = await head.request(lambda rid: attrs.evolve(report, rid=rid))
    assert isinstance(reply, Ack)
    if reply.error is not None:
        log.warning("the head refused this worker back: %s; exiting", reply.error)
        stop(reply.error)
    else:
        log.info("rejoined the head at %s with %d actors", head.address, len(report.actors))
