"""How a coroutine actor that raises is restarted in place: the backoff policy, and one
actor's restart log lines (the first at once, then at most one per
ACTOR_RESTART_LOG_INTERVAL_S, counting the restarts it did not log). Pure: times come from
the caller's clock."""

from __future__ import annotations

import math
from typing import Any

from .._protocol.messages import ActorInfo, Payload
from .._scheduler.demand import as_demand
from .._scheduler.restart import RestartPolicy

__all__ = [
    "ACTOR_RESTART_LOG_INTERVAL_S",
    "ACTOR_RESTART_POLICY",
    "RestartLog",
    "SpentCreation",
    "spend_creation",
]

# Coroutine actors that raise are restarted in place. The first restart in a window is
# immediate, a crash loop backs off up to backoff_max_s; the count limit is the actor's own
# max_restarts (a total), so this policy never gives up by itself.
ACTOR_RESTART_POLICY = RestartPolicy(max_restarts=-1)
ACTOR_RESTART_LOG_INTERVAL_S = 5.0


class RestartLog:
    """One actor's restart log lines: the first at once, then at most one per
    ACTOR_RESTART_LOG_INTERVAL_S, counting the restarts it did not log."""

    __slots__ = ("_last_at", "_unlogged")

    def __init__(self) -> None:
        self._last_at = -math.inf
        self._unlogged = 0

    def line(self, now: float, reason: str, left: int, delay_s: float) -> str | None:
        if now - self._last_at < ACTOR_RESTART_LOG_INTERVAL_S:
            self._unlogged += 1
            return None
        self._last_at = now
        more = (
            f"; {self._unlogged} more restarts since the last such line" if self._unlogged else ""
        )
        self._unlogged = 0
        limit = "no limit" if left < 0 else f"{left} restarts left"
        pause = f" in {delay_s:g} s" if delay_s else ""
        return f"{reason}; restarting it{pause} ({limit}{more})"


# What a coroutine actor that is never started again keeps of its arguments: nothing.
SPENT = Payload(b"")
_NO_NEED = as_demand(0.0)


def _no_code() -> bytes:
    raise RuntimeError("a coroutine actor with max_restarts=0 was to be started again")


class SpentCreation:
    """What its creator keeps of the creation of a coroutine actor that is never started
    again, in its link's calls in flight: its entry and actor (to resolve its ref, report
    its death, release what it held), read both like the ``TaskSpec`` it replaces and like
    the ``Sent`` record that held it (records.py, above this module: ``spec`` is itself,
    ``kind`` is TASK). 56 bytes an agent, not 112 for the ``Sent`` plus 40 for its spec
    (nor 112 plus its arguments and code before that)."""

    __slots__ = ("actor", "cancelled", "entry")

    # Read like a TaskSpec:
    function_id = b""
    blob = staticmethod(_no_code)
    payload = SPENT
    need = _NO_NEED
    retries = 0
    retry_on = False
    parent = None
    keep = ()
    root = ""
    # Read like a Sent of kind TASK (records.TASK); ``payload`` and ``actor`` are read only
    # for kind CALL.
    kind = 0
    counted = False
    owner = False
    method = ""

    def __init__(self, actor: ActorInfo, entry: Any) -> None:
        self.actor = actor
        self.entry = entry
        self.cancelled = False  # ag.cancel() reached it: never restarted

    @property
    def spec(self) -> SpentCreation:
        return self


def spend_creation(spec: Any, sent: Any) -> Any:
    """A coroutine actor's creation (``spec``, records.py's ``TaskSpec``: that module is
    above this one) was sent, ``sent`` its record in flight: the record its link keeps from
    now on. One that can never be started again (``max_restarts=0``, the default) keeps no
    arguments nor code (~250 bytes an agent kept for nothing) in one small record; one that
    may keeps ``spec`` in ``sent``."""
    actor = spec.actor
    if actor is None or actor.max_restarts != 0:
        sent.spec = spec
        return sent
    spent = SpentCreation(actor, sent.entry)
    spent.cancelled = sent.cancelled
    return spent
