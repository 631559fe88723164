"""Sync actor methods that cannot block run on the worker's loop, not on a pool thread.

A sync actor method runs on a pool thread, so that blocking user code never stops the worker
from answering pulses and messages. That costs two thread hand-offs a call (loop to pool thread,
and the answer's bookkeeping back), the larger part of a round trip on a small machine. Three
kinds of method run right on the worker's Trio loop instead, in the turn that received the
call (its answer and the calls it makes leave in one write):

- one its author declares cheap and non-blocking, ``@ag.method(inline=True)``;
- one that is brief by its code (``_brief``): a plain function whose bytecode has no call and
  no loop and touches attributes of ``self`` only (getters, setters, counters: ``return
  self.n``, ``self.n += k``), of a class with no properties, other descriptors or attribute
  hooks, so that nothing of user code it did not write in that body runs. Such a method
  cannot reach ``time.sleep``, a lock, I/O or ``ag.get`` (each is a call) nor spin (a
  loop); what is left that could take long is a C operation on large data (``x in huge_list``,
  ``self.array + 1``) or a ``__del__``/operator of the user's own types that a line triggers:
  the same watchdog and budget as for declared methods report and demote it.
  ``@ag.method(inline=False)`` keeps one on pool threads (and out of any trial).

A third kind earns its place by its code and its record: a method whose calls are all
fire-and-forget and that has no loop (``_quiet_caller``: each call is ``x.remote(...)`` or
``ag.send(...)`` as a statement), the step of an actor ring or pipeline. It runs on pool threads
while on trial (``trial_ran``); after ``TRIAL_RUNS`` runs there of at most ``TRIAL_RUN_S`` each
it runs on the loop from then on, and a run over ``INLINE_BUDGET_S`` there ends its trial for
good (logged). Its code cannot reach ``ag.get``, ``time.sleep`` or a lock but through what its
calls and attribute reads run of other objects (a ``.remote`` that is not a handle's, a
property): its trial is the evidence that those are cheap, and the watchdog and budget below
report and demote one that still blocks on the loop. On the loop, its ``.remote()`` calls are
queued as any call the loop makes, and an ``ag.send`` (which may wait: a name not cached yet, a
full mailbox) is sent by a task after the method returns (``send_later``), the actor's lane
held until then, as on a pool thread the method would have waited in it: the actor's next call
runs after the send, and a send's error is the call's error. Any other API that blocks
(``ag.get``, ``ag.ask``) raises on the loop, as in a declared method.

Its pulses are the risk of running user code on the loop: while it runs, the worker sends none,
and one that held the loop for 5 pulse intervals would have the worker taken for dead. This is
why a method is chosen first by what its code cannot do, not by how fast its calls were so far:
a method measured fast a thousand times may block on its next call (a branch that sleeps, a
lock held elsewhere), and then it is too late to move it. A trial only ever admits methods
whose code has no such branch of its own.

Invariants:

- An inline call runs only while nothing of its actor is queued or running (the actor's feeder
  is parked in receive and its lane is idle), and holds the lane meanwhile (a pool thread's
  quiet call to it, ``Executor.call_from_thread``, only queues there), so an actor's calls
  still run one at a time, in the order sent; otherwise the call takes the lane like any
  other. A call whose arguments hold ObjectRefs takes the lane too (waiting for them would
  block the loop). A call that left sends for later (``send_later``) holds the lane until they
  are sent and it is answered.
- Blocking is never silent. While an inline call runs, the worker does nothing else (no
  pulses, no messages, no other actor), so: a watchdog thread, started with the worker's first
  inline call, logs a warning naming the method once it has held the loop for
  ``INLINE_STALL_S``; and a call that took over ``INLINE_BUDGET_S`` is logged when it returns
  and its method runs on pool threads from then on, in this worker.

Costs: one set lookup per call of a sync actor whose feeder is parked; one dict lookup per run
on a pool thread (whether its method is on trial), and a wrapper that times a method on trial;
the watchdog looks at two attributes every ``WATCH_PERIOD_S`` and costs nothing per call.
"""

from __future__ import annotations

import dis
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from types import FunctionType, GetSetDescriptorType, MemberDescriptorType, ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .output import output_source
from .refs import ObjectRef
from .serialization import box_error, dumps, loads

if TYPE_CHECKING:
    import trio

    from .._protocol.messages import Payload
    from .lanes import _Call, _Lane

__all__ = [
    "INLINE_ATTRIBUTE",
    "INLINE_BUDGET_S",
    "INLINE_STALL_S",
    "TRIAL_RUNS",
    "TRIAL_RUN_S",
    "method",
    "run_inline",
    "send_later",
    "trial_methods",
    "trial_ran",
]

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
# A method that makes only fire-and-forget calls runs on the loop after this many runs on pool
# threads of at most TRIAL_RUN_S each (a hop of a ring takes some 20-50 us there).
TRIAL_RUNS = 16
TRIAL_RUN_S = 0.002


def method(*, inline: bool | None = None) -> Callable[[F], F]:
    """Options of one actor method: ``@ag.method(inline=True)`` above a ``def`` in an actor
    class.

    By default (``inline=None``) a sync method runs on a pool thread unless its code cannot
    block: no call and no loop in its body (a getter, a setter, a counter), which runs on the
    worker's loop as if declared inline; so does one whose only calls are fire-and-forget
    (``x.remote(...)`` or ``ag.send(...)`` as statements, no loop) once its first runs on pool
    threads were short. ``inline=False`` keeps it on pool threads always.

    ``inline=True`` declares a sync method cheap and non-blocking: the worker runs it on its
    own event loop rather than on a pool thread, which saves two thread hand-offs a call (a
    round trip or a fire-and-forget ring by handle gets markedly faster). Keep such a method
    to a few milliseconds of pure Python: no ``time.sleep``, I/O, locks or ``ag.get`` (which
    raises there; an ``ag.send`` is sent after it returns). A call that runs longer than 0.1 s is logged by name, and its method runs on
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


_DROPPED = dumps(None)  # the answer of a quiet call, which no one reads

# The methods of each actor class hosted here that run on the loop (declared inline, or
# brief), found on first use; a demoted method leaves its class's set.
_by_class: dict[type, set[str]] = {}
# The methods of each such class on trial (``_quiet_caller``): their short runs on pool threads
# so far. Shared with the class's lanes (``_Lane.trial``), which time only these.
_trials: dict[type, dict[str, int]] = {}
# The methods that passed their trial (they leave the loop as declared ones do, on one slow run).
_promoted: set[tuple[type, str]] = set()

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


def _is_actorgrid(value: object) -> bool:
    return isinstance(value, ModuleType) and value.__name__ == "actorgrid"


def _loop_names(cls: type) -> set[str]:
    """The methods of ``cls`` that run on the loop: declared inline, or brief and not
    declared ``inline=False``. Found once per class."""
    names = _by_class.get(cls)
    if names is None:
        declared = _declared(cls)
        names = {name for name, (inline, _) in declared.items() if inline}
        trials: dict[str, int] = {}
        if _plain(cls):
            for name, (inline, value) in declared.items():
                if inline is not None or name.startswith("__"):
                    continue
                if _brief(value):
                    names.add(name)  # (a static or class method is not a plain function)
                elif _quiet_caller(value):
                    trials[name] = 0
        _trials[cls] = trials
        _by_class[cls] = names
    return names


def trial_methods(cls: type) -> dict[str, int]:
    """The methods of ``cls`` on trial, by their short runs so far: a lane of the class
    times their runs and reports each to ``trial_ran``."""
    _loop_names(cls)
    return _trials[cls]


def trial_ran(cls: type, name: str, elapsed: float) -> None:
    """A pool thread: ``cls.name``, on trial, ran for ``elapsed`` seconds there. Moves it to
    the loop after TRIAL_RUNS short runs; a run over INLINE_BUDGET_S ends its trial."""
    trials = _trials[cls]
    n = trials.get(name)
    if n is None:
        return  # (its trial ended meanwhile, on another thread)
    if elapsed > INLINE_BUDGET_S:
        trials.pop(name, None)
        log.info(
            "%s.%s ran for %.3f s on a pool thread: it stays there (only methods that ran "
            "under %.3f s %d times move to the worker's loop)",
            cls.__qualname__,
            name,
            elapsed,
            TRIAL_RUN_S,
            TRIAL_RUNS,
        )
    elif elapsed <= TRIAL_RUN_S:
        if n + 1 < TRIAL_RUNS:
            trials[name] = n + 1
        elif trials.pop(name, None) is not None:
            _promoted.add((cls, name))
            _by_class[cls].add(name)


def _quiet_caller(fn: object) -> bool:
    """A plain function whose calls are all fire-and-forget (``x.remote(...)`` or
    ``ag.send(...)``, each a statement whose value is dropped) and that has no loop, with,
    yield or import: what it may do besides is bounded, as for ``_brief``, and what it sends
    leaves without waiting for an answer. Reads of other objects' attributes are allowed
    (``self.next.hop``); its trial on pool threads is the evidence that they are cheap."""
    code = getattr(fn, "__code__", None)
    if type(fn) is not FunctionType or code is None:
        return False
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        return False
    names = fn.__globals__
    ops = list(dis.get_instructions(code))
    calls = sends = 0
    for i, op in enumerate(ops):
        following = ops[i + 1].opname if i + 1 < len(ops) else ""
        if op.opname == "CALL":
            calls += 1
            if following != "POP_TOP":
                return False  # its value is used: not fire-and-forget, or a nested call
            continue
        if op.opname in ("PRECALL", "KW_NAMES", "PUSH_NULL"):
            continue
        if op.opname.startswith(_UNBOUNDED):
            return False
        if op.opcode in _JUMPS and isinstance(op.argval, int) and op.argval <= op.offset:
            return False
        if op.opname.startswith("LOAD_GLOBAL") and not _is_actorgrid(names.get(op.argval)):
            return False  # a global may be any function (only the actorgrid module is read)
        if op.opname in ("LOAD_ATTR", "LOAD_METHOD") and (
            op.argval == "remote"
            or (op.argval == "send" and i and ops[i - 1].opname.startswith("LOAD_GLOBAL"))
        ):
            if following.startswith(("STORE", "BUILD", "RETURN", "POP_TOP", "LIST_", "MAP_")):
                return False  # kept rather than called
            sends += 1
    return 0 < calls == sends


class InlineHost(Protocol):
    """What an inline call needs of the executor (ExecutorTasks is one)."""

    def result_of(self, value: Any, label: str) -> tuple[bool, Payload]: ...

    def call_done(self, call: _Call, ok: bool, payload: Payload) -> None: ...

    @property
    def nursery(self) -> trio.Nursery: ...


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
    later: list[Callable[[], Awaitable[None]]] = []
    handed = False  # the lane held on, by the task that finishes the call
    try:
        watch.started(label, later)
        try:
            with output_source(lane.info.name or lane.info.label, call.peer, call.root):
                try:
                    value = fn(*args, **kwargs)
                except (Exception, SystemExit) as exc:
                    ok, payload = False, box_error(exc, _where(label, address))
                else:
                    # A quiet call's value goes nowhere (quiet.py): not serialized (2 us).
                    ok, payload = (True, _DROPPED) if call.quiet else host.result_of(value, label)
        finally:
            elapsed = watch.ended()
        if elapsed > INLINE_BUDGET_S and _demoted(cls, call.method, watch.cpu_since):
            _report_demoted(cls, call.method, label, address, elapsed)
        if later:  # sends that wait: the lane stays held until they are done
            where = _where(label, address)
            host.nursery.start_soon(_finish_later, host, lane, call, (ok, payload), later, where)
            handed = True
        else:
            host.call_done(call, ok, payload)
    finally:
        if not handed:
            lane.end_inline()  # (answered first: a drain it starts answers after it)
    return True


async def _finish_later(
    host: InlineHost,
    lane: _Lane,
    call: _Call,
    answer: tuple[bool, Payload],
    later: list[Callable[[], Awaitable[None]]],
    where: str,
) -> None:
    """Loop, a task: the sends an inline call left to wait (``send_later``), in order; then
    its answer (the first send's error, if one failed) and its lane given back."""
    ok, payload = answer
    try:
        for send in later:
            try:
                await send()
            except Exception as exc:
                if ok:
                    ok, payload = False, box_error(exc, where)
        host.call_done(call, ok, payload)
    finally:
        lane.end_inline()


def send_later(
    send: Callable[[Any, Any, str | None], Awaitable[None]],
    target: Any,
    message: Any,
    namespace: str | None,
) -> bool:
    """The loop thread, in ``ag.send`` from a sync method run there: queue the send, of the
    message as it is now, for a task after the method returns (True). False: no such method
    runs on this thread (``ag.send`` then refuses to block a Trio loop)."""
    if not watch.since or watch.later is None or threading.get_ident() != watch.thread:
        return False
    watch.later.append(partial(send, target, loads(dumps(message)), namespace))
    return True


def _report_demoted(cls: type, name: str, label: str, address: str, elapsed: float) -> None:
    declared = name in _inline_names(cls)
    promoted = (cls, name) in _promoted
    log.warning(
        "%s %s but held worker %s's event loop for %.3f s (over %.1f s): pulses, messages "
        "and every other actor there waited. Its calls run on pool threads from now on, in "
        "this worker process; %s",
        label,
        "is declared @ag.method(inline=True)"
        if declared
        else "ran on the loop (it makes only fire-and-forget calls, and its first runs were short)"
        if promoted
        else "ran on the loop (no call or loop in its code)",
        address,
        elapsed,
        INLINE_BUDGET_S,
        "remove inline=True from it, or keep it to non-blocking work of a few milliseconds"
        if declared
        else "mark it @ag.method(inline=False) to keep it on pool threads from the start",
    )


def _demoted(cls: type, method: str, cpu_since: float) -> bool:
    """Loop, after a run on the loop over the budget in wall time: whether ``method`` leaves
    the loop. A declared method does (it may have blocked). One chosen by its code cannot
    block, so a long wall time with little CPU of this thread was the process or the loop
    thread being preempted on a loaded machine (or a GIL wait), not the method: it stays."""
    if (
        method not in _inline_names(cls)
        and (cls, method) not in _promoted
        and time.thread_time() - cpu_since < INLINE_BUDGET_S / 2
    ):
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
        self.thread = 0  # the loop thread's id (threading.get_ident())
        # The running call's sends left for later (send_later); None while none runs.
        self.later: list[Callable[[], Awaitable[None]]] | None = None
        self._thread: threading.Thread | None = None

    def started(self, label: str, later: list[Callable[[], Awaitable[None]]]) -> None:
        self.label = label
        self.later = later
        self.thread = threading.get_ident()
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
        self.later = None
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
