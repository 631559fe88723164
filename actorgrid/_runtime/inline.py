"""Sync actor methods that cannot block run on the worker's loop, not on a pool thread.

A sync actor method runs on a pool thread, so that blocking user code never stops the worker
from answering pulses and messages. That costs two thread hand-offs a call (loop to pool thread,
and the answer's bookkeeping back), the larger part of a round trip on a small machine. Two
kinds of method run right on the worker's Trio loop instead, in the turn that received the
call (its answer and the calls it makes leave in one write):

- one its author declares cheap and non-blocking, ``@ag.method(inline=True)``;
- one that is brief by its code (``_brief``): a plain function whose bytecode has no call and
  no loop and touches attributes of ``self`` only (getters, setters, counters: ``return
  self.n``, ``self.n += k``), of a class with no properties, other descriptors or attribute
  hooks, so that nothing of user code it did not write in that body runs. ``@ag.method(inline=False)`` keeps one on pool threads. Such a
  method cannot reach ``time.sleep``, a lock, I/O or ``ag.get`` (each is a call) nor spin (a
  loop); what is left that could take long is a C operation on large data (``x in huge_list``,
  ``self.array + 1``) or a ``__del__``/operator of the user's own types that a line triggers:
  the same watchdog and budget as for declared methods report and demote it.

Its pulses are the risk of running user code on the loop: while it runs, the worker sends none,
and one that held the loop for 5 pulse intervals would have the worker taken for dead. This is
why a method is chosen by what its code cannot do, not by how fast its calls were so far: a
method measured fast a thousand times may block on its next call (a branch that sleeps, a lock
held elsewhere), and then it is too late to move it.

Invariants:

- An inline call runs only while nothing of its actor is queued or running (the actor's feeder
  is parked in receive and its lane is idle), and holds the lane meanwhile (a pool thread's
  quiet call to it, ``Executor.call_from_thread``, only queues there), so an actor's calls
  still run one at a time, in the order sent; otherwise the call takes the lane like any other. A call whose arguments hold
  ObjectRefs takes the lane too (waiting for them would block the loop).
- Blocking is never silent. While an inline call runs, the worker does nothing else (no
  pulses, no messages, no other actor), so: a watchdog thread, started with the worker's first
  inline call, logs a warning naming the method once it has held the loop for
  ``INLINE_STALL_S``; and a call that took over ``INLINE_BUDGET_S`` is logged when it returns
  and its method runs on pool threads from then on, in this worker.

Costs: one set lookup per call of a sync actor whose feeder is parked; the watchdog looks at
two attributes every ``WATCH_PERIOD_S`` and costs nothing per call.
"""

from __future__ import annotations

import dis
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from types import FunctionType, GetSetDescriptorType, MemberDescriptorType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .output import output_source
from .refs import ObjectRef
from .serialization import box_error, loads

if TYPE_CHECKING:
    from .._protocol.messages import Payload
    from .lanes import _Call, _Lane

__all__ = ["INLINE_ATTRIBUTE", "INLINE_BUDGET_S", "INLINE_STALL_S", "method", "run_inline"]

log = logging.getLogger("actorgrid.inline")

F = TypeVar("F", bound=Callable[..., Any])

INLINE_ATTRIBUTE = "__actorgrid_inline__"
# A call that held the loop longer than this demotes its method to pool threads (a pulse
# interval is 1 s by default: this is well inside one).
INLINE_BUDGET_S = 0.1
# The watchdog's warning about a call still running on the loop comes after this long.
INLINE_STALL_S = 1.0
WATCH_PERIOD_S = 0.25
# The loop thread's CPU clock is read at most this often (_Watch.started): it is a system call
# (~1.5 µs, and a point where a loaded machine preempts the loop), where a call is ~15 µs.
CPU_READ_EVERY_S = 0.01


def method(*, inline: bool | None = None) -> Callable[[F], F]:
    """Options of one actor method: ``@ag.method(inline=True)`` above a ``def`` in an actor
    class.

    By default (``inline=None``) a sync method runs on a pool thread unless its code cannot
    block: no call and no loop in its body (a getter, a setter, a counter), which runs on the
    worker's loop as if declared inline. ``inline=False`` keeps it on pool threads always.

    ``inline=True`` declares a sync method cheap and non-blocking: the worker runs it on its
    own event loop rather than on a pool thread, which saves two thread hand-offs a call (a
    round trip or a fire-and-forget ring by handle gets markedly faster). Keep such a method
    to a few milliseconds of pure Python: no ``time.sleep``, I/O, locks or ``ag.get`` (which
    raises there). A call that runs longer than 0.1 s is logged by name, and its method runs on
    pool threads from then on; one that holds the loop for a second is logged while it runs.
    """

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"@ag.method(inline=True) is for sync methods; {fn.__qualname__} is async, and "
                "an async actor's methods already run on the worker's loop"
            )
        if inspect.isgeneratorfunction(fn):
            raise TypeError(
                f"@ag.method(inline=True) cannot be used on the generator method "
                f"{fn.__qualname__}: its items are produced on a pool thread"
            )
        if inline is not None:
            setattr(fn, INLINE_ATTRIBUTE, inline)
        return fn

    return decorate


# The methods of each actor class hosted here that run on the loop (declared inline, or
# brief), found on first use; a demoted method leaves its class's set.
_by_class: dict[type, set[str]] = {}

# Opcode name prefixes of a call (any Python or C code may run), a loop (a backward jump, an
# iterator), a with block (__enter__), a yield or an import, in the Pythons we support (3.11+).
_UNBOUNDED = (
    "CALL",
    "PRECALL",
    "JUMP_BACKWARD",
    "FOR_ITER",
    "GET_ITER",
    "GET_AITER",
    "GET_AWAITABLE",
    "BEFORE_",
    "SETUP_WITH",
    "LOAD_SPECIAL",
    "YIELD",
    "SEND",
    "IMPORT",
)
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_ATTRIBUTE_OPS = frozenset({"LOAD_ATTR", "STORE_ATTR", "DELETE_ATTR", "LOAD_METHOD"})
# Attribute hooks: with one, reading or writing ``self.x`` runs user code.
_HOOKS = frozenset({"__getattr__", "__getattribute__", "__setattr__", "__delattr__"})


def _declared(cls: type) -> dict[str, tuple[bool | None, object]]:
    """Each name of the class and its bases, most derived first: its ``inline=`` and what the
    class dict holds (so no descriptor runs, and a method overridden without the decorator is
    not declared)."""
    found: dict[str, tuple[bool | None, object]] = {}
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            flag = getattr(value, INLINE_ATTRIBUTE, None)
            found.setdefault(name, (flag if isinstance(flag, bool) else None, value))
    return found


def _inline_names(cls: type) -> set[str]:
    """The methods of ``cls`` declared ``@ag.method(inline=True)``."""
    return {name for name, (inline, _) in _declared(cls).items() if inline}


def _plain(cls: type) -> bool:
    """No attribute hook, property or other descriptor in ``cls`` or its bases (``object``
    aside) but functions, static and class methods and slots: ``self.x`` runs no user code."""
    for klass in cls.__mro__[:-1]:
        for name, value in vars(klass).items():
            if name in _HOOKS:
                return False
            if isinstance(
                value,
                (
                    FunctionType,
                    staticmethod,
                    classmethod,
                    MemberDescriptorType,
                    GetSetDescriptorType,
                ),
            ):
                continue
            if hasattr(type(value), "__get__"):
                return False
    return True


def _brief(fn: object) -> bool:
    """A plain function whose body has no call, loop, with, yield or import, and reads or
    writes attributes of ``self`` only: it runs a bounded number of bytecodes, none of which
    calls a Python function it did not write (but operators: see the module docstring)."""
    code = getattr(fn, "__code__", None)
    if type(fn) is not FunctionType or code is None:
        return False
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        return False
    this = code.co_varnames[0] if code.co_argcount else None
    before: list[dis.Instruction] = []  # the two instructions before this one
    for op in dis.get_instructions(code):
        if op.opname.startswith(_UNBOUNDED):
            return False
        if op.opcode in _JUMPS and isinstance(op.argval, int) and op.argval <= op.offset:
            return False  # a jump back: a loop (3.11 has POP_JUMP_BACKWARD_IF_* too)
        if op.opname in _ATTRIBUTE_OPS and not _on_self(op, before, this):
            return False
        before = [*before[-1:], op]
    return True


def _on_self(op: dis.Instruction, before: list[dis.Instruction], this: str | None) -> bool:
    """``op`` (an attribute access) is on ``self`` itself, whose class ``_plain`` checked:
    ``self.x`` but not ``self.x.y`` (another object's property, a lazy ORM field, may run
    anything). Patterns of 3.11+: ``LOAD_FAST self`` right before, or ``COPY`` after it (the
    load of ``self.x += k``), or ``SWAP`` (its store, after that load was checked)."""
    if this is None or not before:
        return False
    last = before[-1]
    if op.opname == "STORE_ATTR" and last.opname == "SWAP":
        return True
    if last.opname == "COPY" and len(before) == 2:
        last = before[0]
    if not last.opname.startswith("LOAD_FAST"):
        return False
    names = last.argval if isinstance(last.argval, tuple) else (last.argval,)
    return bool(names[-1] == this)


def _loop_names(cls: type) -> set[str]:
    """The methods of ``cls`` that run on the loop: declared inline, or brief and not
    declared ``inline=False``. Found once per class."""
    names = _by_class.get(cls)
    if names is None:
        declared = _declared(cls)
        names = {name for name, (inline, _) in declared.items() if inline}
        if _plain(cls):
            for name, (inline, value) in declared.items():
                if inline is None and not name.startswith("__") and _brief(value):
                    names.add(name)  # (a static or class method is not a plain function)
        _by_class[cls] = names
    return names


class InlineHost(Protocol):
    """What an inline call needs of the executor (ExecutorTasks is one)."""

    def result_of(self, value: Any, label: str) -> tuple[bool, Payload]: ...

    def call_done(self, call: _Call, ok: bool, payload: Payload) -> None: ...


def run_inline(host: InlineHost, lane: _Lane, call: _Call, address: str) -> bool:
    """Loop: run ``call`` here and now if its method is inline and nothing of its actor is
    queued or running; answer it as the lane would. False: nothing was done, use the lane."""
    if lane.running or lane.items or call.cancelled:
        return False
    cls = type(lane.instance)
    if call.method not in _loop_names(cls):
        return False
    try:
        args, kwargs = loads(call.payload)
    except Exception:
        return False  # the lane reports it, as for any call
    if any(isinstance(a, ObjectRef) for a in args) or any(
        isinstance(v, ObjectRef) for v in kwargs.values()
    ):
        return False
    label = f"{lane.info.label}.{call.method}"
    fn = getattr(lane.instance, call.method)
    if not lane.take_for_inline():  # (a pool thread queued a call meanwhile)
        return False
    try:
        watch.started(label)
        try:
            with output_source(lane.info.name or lane.info.label, call.peer, call.root):
                try:
                    value = fn(*args, **kwargs)
                except (Exception, SystemExit) as exc:
                    ok, payload = False, box_error(exc, _where(label, address))
                else:
                    ok, payload = host.result_of(value, label)
        finally:
            elapsed = watch.ended()
        if elapsed > INLINE_BUDGET_S and _demoted(cls, call.method, watch.cpu_since):
            declared = call.method in _inline_names(cls)
            log.warning(
                "%s %s but held worker %s's event loop for %.3f s (over %.1f s): pulses, messages "
                "and every other actor there waited. Its calls run on pool threads from now on, in "
                "this worker process; %s",
                label,
                "is declared @ag.method(inline=True)"
                if declared
                else "ran on the loop (no call or loop in its code)",
                address,
                elapsed,
                INLINE_BUDGET_S,
                "remove inline=True from it, or keep it to non-blocking work of a few milliseconds"
                if declared
                else "mark it @ag.method(inline=False) to keep it on pool threads from the start",
            )
        host.call_done(call, ok, payload)
    finally:
        lane.end_inline()  # (answered first: a drain it starts answers after it)
    return True


def _demoted(cls: type, method: str, cpu_since: float) -> bool:
    """Loop, after a run on the loop over the budget in wall time: whether ``method`` leaves
    the loop. A declared method does (it may have blocked). One chosen by its code cannot
    block, so a long wall time with little CPU of this thread was the process or the loop
    thread being preempted on a loaded machine (or a GIL wait), not the method: it stays."""
    if method not in _inline_names(cls) and time.thread_time() - cpu_since < INLINE_BUDGET_S / 2:
        return False
    _by_class[cls].discard(method)
    return True


def _where(label: str, address: str) -> str:
    return f"{label} on worker {address} (pid {os.getpid()}, inline)"


class _Watch:
    """The inline call running on this process's loop, if any, and a thread that reports one
    that holds the loop too long. Written by the loop only; read by the watchdog thread."""

    def __init__(self) -> None:
        self.label = ""
        self.since = 0.0  # time.monotonic() when the running call started; 0.0: none runs
        self.cpu_since = 0.0  # the loop thread's CPU time (time.thread_time()) then, or earlier
        self._cpu_read = -1.0  # time.monotonic() when cpu_since was read
        self._thread: threading.Thread | None = None

    def started(self, label: str) -> None:
        self.label = label
        self.since = now = time.monotonic()
        # cpu_since is the thread's CPU time at most CPU_READ_EVERY_S before this call began:
        # _demoted's CPU figure is high by at most that much (10 ms against its 50 ms), and a
        # burst of calls reads the clock once per 10 ms rather than once per call.
        if now - self._cpu_read > CPU_READ_EVERY_S:
            self._cpu_read = now
            self.cpu_since = time.thread_time()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="actorgrid-inline-watchdog", daemon=True
            )
            self._thread.start()

    def ended(self) -> float:
        elapsed = time.monotonic() - self.since
        self.since = 0.0
        return elapsed

    def stalled(self, now: float) -> tuple[str, float] | None:
        """The running call's label and how long it has run, if over INLINE_STALL_S."""
        label, since = self.label, self.since
        if since and now - since > INLINE_STALL_S and since == self.since:
            return label, now - since
        return None

    def _watch(self) -> None:
        reported = 0.0
        while True:
            time.sleep(WATCH_PERIOD_S)
            stall = self.stalled(time.monotonic())
            if stall is not None and self.since != reported:
                reported = self.since  # once per stalled call
                log.warning(
                    "%s (run on the loop: declared @ag.method(inline=True), or no call in its "
                    "code) has been running on this worker's event loop for %.1f s and blocks "
                    "it: no pulse, message or other actor gets through until it returns; "
                    "declare it @ag.method(inline=False)",
                    *stall,
                )


watch = _Watch()
