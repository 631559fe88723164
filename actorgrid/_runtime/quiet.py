"""Calls whose answer nobody wants: ``handle.method.remote(...)`` as a statement.

A call's ObjectRef that its caller drops at once (the fire-and-forget call of an actor ring,
``self.next.hop.remote(n + 1)``) can never be asked for its value: nothing else holds the
call's id. Such a call still costs an answer frame, its write on the worker, its read,
decode and dispatch on the caller, and an in-flight record kept until then. Here it is
marked ``quiet`` where it is made, and that cost goes:

- the caller (``result_discarded``): the frame that called ``.remote()`` drops the value
  (its next instruction is POP_TOP), found once per call site (its code and offset), then a
  dict lookup. Only for a call with no retries: a call that may be sent again after its
  actor's restart keeps its record and its answer. A ref kept, even for a moment, is a
  normal call, answered as always.
- the caller's link sends it as CallActor(quiet=True) and keeps nothing in flight for it
  (``forget_sent``): no in-flight entry, no owner-state record, no open span.
- the worker runs it in order with the caller's other calls, as any call, and sends nothing
  back when it returns. An error is not lost (``report_failure``): it is logged there with
  the method's name and the error, and recorded as a ``call_failed`` event (``error``:
  "Type: message"), which reaches ``Cluster.events()`` with the worker's task events.
"""

from __future__ import annotations

import dis
import logging
import sys
from types import CodeType
from typing import Any

from .._exceptions import TaskCancelledError
from .._protocol.ids import ObjectId, short
from .._protocol.records import Payload
from . import current
from .serialization import loads_error

__all__ = ["forget_sent", "report_failure", "result_discarded"]

log = logging.getLogger("actorgrid")

# Call sites seen, by id of the code object and offset of the call: the code (held, so that
# its id is not reused while its entry is here) and whether the value is dropped. Keyed by id,
# not by the code: a code object's hash is worked out from its contents on every call (~6 µs
# for a module's, which a script's loop at top level would pay on each ``.remote()``). A
# program has a bounded number of call sites; code made at run time (exec, lambdas in a loop
# make one code object each, not many) could grow it, so it is cleared past a bound.
_discards: dict[tuple[int, int], tuple[CodeType, bool]] = {}
_DISCARDS_MAX = 4096


def result_discarded(depth: int = 2) -> bool:
    """Any thread: whether the frame ``depth`` levels up (the caller of the function that
    calls this) drops the value of the call it is making, at once (an expression statement).
    """
    frame = sys._getframe(depth)
    code = frame.f_code
    key = (id(code), frame.f_lasti)
    found = _discards.get(key)
    if found is None:
        if len(_discards) >= _DISCARDS_MAX:
            _discards.clear()
        found = _discards[key] = (code, _pops_next(code, key[1]))
    return found[1]


def _pops_next(code: CodeType, offset: int) -> bool:
    """Whether the call at ``offset`` of ``code`` is ``<expr>.remote(<args>)`` made straight
    from this code, whose value the next instruction (POP_TOP) drops.

    ``f_lasti`` of a frame in a call is the call instruction, or (3.11, 3.12) the last of its
    inline cache entries: the call is the last instruction at or before it. Made straight: the
    callee is a method load of ``remote`` with no other call, and no jump, between it and the
    call. Anything else may be C code calling ``.remote()`` and keeping its value
    (``refs.extend(map(h.f.remote, xs))``), and is answered as usual."""
    instructions = list(dis.get_instructions(code))
    at = -1
    for i, instruction in enumerate(instructions):
        if instruction.offset > offset:
            break
        at = i
    if at < 0 or at + 1 >= len(instructions):
        return False
    if instructions[at].opname not in _CALLS or instructions[at + 1].opname != "POP_TOP":
        return False
    for instruction in reversed(instructions[max(0, at - _ARGS_MAX) : at]):
        name = instruction.opname
        if (name != "PRECALL" and "CALL" in name) or "JUMP" in name or instruction.is_jump_target:
            return False
        if instruction.argval == "remote" and (
            name == "LOAD_METHOD" or (name == "LOAD_ATTR" and "NULL|self" in instruction.argrepr)
        ):
            return True
    return False


_CALLS = ("CALL", "CALL_KW")  # a call with its arguments on the stack (3.11 to 3.13)
_ARGS_MAX = 64  # instructions between the method load and its call, at most


def forget_sent(runtime: Any, task_id: ObjectId) -> None:
    """Loop or sending thread: a quiet call was just queued on its link: what would wait for
    its answer goes now (its open span; the owner state's record for an owned actor's call,
    whose in-flight entry the caller never made)."""
    runtime.observe.forget(task_id)


def report_failure(task_id: ObjectId, actor_id: Any, method: str, payload: Payload) -> None:
    """Any thread, on the worker: a quiet call failed; nobody will read its answer, so the
    error is logged with the method's name and recorded as a ``call_failed`` event."""
    runtime: Any = current.get_or_none()
    name = method
    observe = None
    if runtime is not None:
        observe = runtime.observe
        executor = getattr(runtime, "executor", None)
        slot = executor.actors.get(actor_id) if executor is not None else None
        info = getattr(slot, "info", None)
        if info is not None:
            name = f"{info.label}.{method}"
    try:
        error: BaseException = loads_error(payload)
    except Exception as exc:  # a broken error box still says something
        error = exc
    cause = getattr(error, "cause", None) or error
    if not isinstance(error, TaskCancelledError):  # (its actor was killed, or it cancelled)
        log.warning(
            "%s (call %s, made with .remote() as a statement: its result was dropped, so no one "
            "reads its answer) raised %s: %s. Keep the ref and ag.get it to handle the error",
            name,
            short(task_id),
            type(cause).__name__,
            cause,
        )
    if observe is not None:
        observe.record("call_failed", task_id, name, observe.worker_id, payload, actor_id)
