"""Agent creations in batches (part of the closed union in ``messages.py``): the creations of
many named coroutine agents that one loop turn sends to one worker, in one message.

Creating 100,000 named agents sends 100,000 SubmitTasks, each a map with its ActorInfo that
cattrs writes and reads field by field (~5 µs to encode in the creator, ~15 µs to decode in
the worker, on a 2-core machine). The agents of one batch differ in little but their ids,
names and arguments: CreateAgents carries each kind once (a whole SubmitTask) and per agent
only those. ``CreationBatch`` gathers them (pure, no I/O); ``CreateAgents.submits()`` gives
the worker back the SubmitTasks, in the order they were made, which it runs one by one as
if they had come alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from .._exceptions import ProtocolError
from .calls import SubmitTask
from .ids import ActorId, ObjectId
from .namebatch import ID_BYTES, kind_of, of_kind
from .records import Payload
from .wireclass import message

__all__ = ["CreateAgents", "CreationBatch"]

# A CreateAgents holds at most this many kinds (``of_kind`` is one byte an agent).
MAX_KINDS = 256


@message
class CreateAgents:
    """Sent to a worker by ``.options(name=...).remote()`` of coroutine agents once their
    names are claimed (``names.py``, ``_finish_claims``): start each, exactly as the
    SubmitTasks ``submits()`` gives back would. Each agent is its kind's SubmitTask
    (``kinds``; its index in ``of_kind``) with its own task id and actor id (16 bytes each,
    back to back), name and arguments. The first agent of a kind carries that kind's code
    when the kind's SubmitTask does (the first creation of that function on this link)."""

    kinds: tuple[SubmitTask, ...]
    of_kind: bytes
    task_ids: bytes
    actor_ids: bytes
    names: tuple[str, ...]
    args: tuple[Payload, ...]

    def submits(self) -> Iterator[SubmitTask]:
        """Each agent's SubmitTask, in order; ProtocolError if the fields do not agree
        (checked here, not at decoding: every field alone is well-formed)."""
        n = len(self.names)
        if (
            len(self.of_kind) != n
            or len(self.args) != n
            or len(self.task_ids) != n * ID_BYTES
            or len(self.actor_ids) != n * ID_BYTES
            or (n and max(self.of_kind) >= len(self.kinds))
            or any(kind.actor is None for kind in self.kinds)
        ):
            raise ProtocolError(
                f"a CreateAgents of {n} agents needs {n} kind indexes below {len(self.kinds)}, "
                f"{n} arguments, {n * ID_BYTES} bytes each of task and actor ids, and an "
                "actor in each kind"
            )
        first = [True] * len(self.kinds)
        tids, aids = self.task_ids, self.actor_ids
        for i, (k, name, args) in enumerate(zip(self.of_kind, self.names, self.args, strict=True)):
            kind = self.kinds[k]
            t = kind.actor
            assert t is not None  # checked above
            at = slice(i * ID_BYTES, (i + 1) * ID_BYTES)
            actor = of_kind(t, ActorId(aids[at]), name)
            code = kind.function if first[k] else None
            first[k] = False
            yield SubmitTask(
                ObjectId(tids[at]),
                kind.function_id,
                code,
                args,
                kind.num_cpus,
                actor,
                kind.resources,
                kind.root,
            )


# Agents per CreateAgents at most (a name claim batch holds up to 2,048: names.py), and the
# bytes of arguments and code past which a run is full (far below any frame cap).
MAX_AGENTS = 4096
MAX_BYTES = 1 << 20
AGENT_BYTES = 64  # what an agent adds beyond its arguments and name: ids, framing
_NO_ARGS = Payload(b"")  # a kind's SubmitTask: each agent carries its own arguments


class CreationBatch:
    """The agent creations of one loop turn, per worker link: ``add`` each SubmitTask of a
    named agent as it would be sent, then ``messages()``: per link, in the order added, one
    CreateAgents (or the lone SubmitTask) per run of creations that fit one. Pure; the
    loop's, not thread-safe."""

    __slots__ = ("_links", "_max_bytes")

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._max_bytes = max_bytes  # what a run's agents may weigh (see add)
        # Per link (any hashable, the caller's peer): its runs of creations, oldest first.
        self._links: dict[object, list[_Run]] = {}

    def __len__(self) -> int:
        return sum(len(run.items) for runs in self._links.values() for run in runs)

    def add(self, link: object, msg: SubmitTask) -> None:
        """Queue ``msg`` (a coroutine agent's creation) for ``link``."""
        actor = msg.actor
        assert actor is not None
        runs = self._links.get(link)
        if runs is None:
            runs = self._links[link] = [_Run()]
        run = runs[-1]
        key = (msg.function_id, msg.num_cpus, msg.resources, msg.root, kind_of(actor))
        k = run.kinds.get(key)
        full = len(run.items) >= MAX_AGENTS or run.nbytes >= self._max_bytes
        if k is None or msg.function is not None or full:
            # A new kind; or code, which only the first of its kind may carry; or a full
            # run: past what one holds, a new run begins.
            if full or k is not None or len(run.kinds) >= MAX_KINDS:
                run = _Run()
                runs.append(run)
            k = run.kinds[key] = len(run.templates)
            run.templates.append(attrs.evolve(msg, args=_NO_ARGS))
        run.of_kind.append(k)
        run.items.append(msg)
        run.nbytes += msg.args.nbytes + len(msg.function or b"") + len(actor.name or "")
        run.nbytes += AGENT_BYTES

    def messages(self) -> list[tuple[object, SubmitTask | CreateAgents]]:
        """What to send, per link (in the order links were first added) and run; empties
        the batch."""
        out: list[tuple[object, SubmitTask | CreateAgents]] = []
        for link, runs in self._links.items():
            for run in runs:
                items = run.items
                if len(items) == 1:
                    out.append((link, items[0]))
                    continue
                actors = [m.actor for m in items]
                out.append(
                    (
                        link,
                        CreateAgents(
                            tuple(run.templates),
                            bytes(run.of_kind),
                            b"".join(m.task_id for m in items),
                            b"".join(a.actor_id for a in actors if a is not None),
                            tuple(a.name or "" for a in actors if a is not None),
                            tuple(m.args for m in items),
                        ),
                    )
                )
        self._links.clear()
        return out


class _Run:
    __slots__ = ("items", "kinds", "nbytes", "of_kind", "templates")

    def __init__(self) -> None:
        self.nbytes = 0
        self.items: list[SubmitTask] = []
        self.kinds: dict[tuple[object, ...], int] = {}
        self.of_kind = bytearray()
        self.templates: list[SubmitTask] = []
