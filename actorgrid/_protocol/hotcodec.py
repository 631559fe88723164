"""The positional wire form of the hottest messages: calls, their results, mailbox messages.

A call and its reply cross the wire once each per ``handle.method.remote()``, a mailbox
message once per ``ctx.send``: through cattrs (an envelope map keyed by field name, then a
generated structuring function) they cost ~20-30 µs to decode and ~9 µs to encode on a 2-core
machine, more than a TCP ping-pong leaves for the whole round trip. Here each is a msgpack
array ``[tag, field, field, ...]`` in ``attrs.fields`` order, packed and checked by hand:
~2-4 µs each way. Every other message stays a map (``codec.py``); so does any of these that
the fast form cannot hold (a SubmitTask creating an agent carries an ActorInfo).

The batch messages (``batches.py``: ActorCalls, SubmitTasks, TaskResults) hold the same
forms, tag dropped, in one list: a burst's envelope is packed and unpacked once.

The tag is a small int (an array's first item), distinct from a map envelope's ``"t"``, so
``codec.decode`` tells the two forms apart by the envelope's msgpack type alone. A new field
goes at the end of its form, with its default. Malformed input raises ProtocolError, never
anything else: each field's type is checked exactly (``bytes`` is bytes, never an int that
``bytes()`` would turn into that many zero bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .._exceptions import ProtocolError
from .messages import (
    ActorCalls,
    AskReply,
    CallActor,
    Credit,
    Deliver,
    DeliverToKey,
    SubmitTask,
    SubmitTasks,
    TaskResult,
    TaskResults,
)
from .records import Payload

__all__ = ["decode_positional", "encode_positional"]

_CALL_ACTOR = 1
_TASK_RESULT = 2
_SUBMIT_TASK = 3
_DELIVER = 4
_ASK_REPLY = 5
_CREDIT = 6
_DELIVER_TO_KEY = 7
_TASK_RESULTS = 8
_ACTOR_CALLS = 9
_SUBMIT_TASKS = 10


def _payload_out(p: Payload, sink: list[memoryview]) -> tuple[bytes, tuple[int, ...]]:
    if not p.buffers:
        return (p.data, ())
    sink.extend(p.buffers)
    return (p.data, tuple(b.nbytes for b in p.buffers))


def _call_actor(m: CallActor, sink: list[memoryview]) -> tuple[Any, ...]:
    args = _payload_out(m.args, sink)
    return (_CALL_ACTOR, m.task_id, m.actor_id, m.method, args, m.root, m.quiet)


def _task_result(m: TaskResult, sink: list[memoryview]) -> tuple[Any, ...]:
    return (_TASK_RESULT, m.task_id, m.ok, _payload_out(m.value, sink))


def _task_results(m: TaskResults, sink: list[memoryview]) -> tuple[Any, ...]:
    # One flat list, three items a result: [tag, [id, ok, payload, id, ok, payload, ...]].
    flat: list[Any] = []
    add = flat.extend
    for r in m.results:
        v = r.value
        add((r.task_id, r.ok, (v.data, ()) if not v.buffers else _payload_out(v, sink)))
    return (_TASK_RESULTS, flat)


def _actor_calls(m: ActorCalls, sink: list[memoryview]) -> tuple[Any, ...]:
    # [tag, [call, call, ...]], each call its CallActor form without the tag (built here, not
    # sliced from _call_actor's: one tuple a call, not two).
    return (
        _ACTOR_CALLS,
        [
            (
                c.task_id,
                c.actor_id,
                c.method,
                (c.args.data, ()) if not c.args.buffers else _payload_out(c.args, sink),
                c.root,
                c.quiet,
            )
            for c in m.calls
        ],
    )


def _submit_tasks(m: SubmitTasks, sink: list[memoryview]) -> tuple[Any, ...] | None:
    if any(t.actor is not None for t in m.tasks):
        return None  # one creates an agent: the whole batch goes as a map
    # Each task its SubmitTask form without the tag, built here (one tuple a task, not two).
    return (
        _SUBMIT_TASKS,
        [
            (
                t.task_id,
                t.function_id,
                t.function,
                (t.args.data, ()) if not t.args.buffers else _payload_out(t.args, sink),
                t.num_cpus,
                t.resources,
                t.root,
            )
            for t in m.tasks
        ],
    )


def _submit_task(m: SubmitTask, sink: list[memoryview]) -> tuple[Any, ...] | None:
    if m.actor is not None:
        return None  # the map form, with ActorInfo's own compact hooks
    return (
        _SUBMIT_TASK,
        m.task_id,
        m.function_id,
        m.function,
        _payload_out(m.args, sink),
        m.num_cpus,
        m.resources,
        m.root,
    )


def _deliver(m: Deliver, sink: list[memoryview]) -> tuple[Any, ...]:
    return (_DELIVER, m.rid, m.actor_id, _payload_out(m.payload, sink))


def _ask_reply(m: AskReply, sink: list[memoryview]) -> tuple[Any, ...]:
    return (_ASK_REPLY, m.rid, m.ok, _payload_out(m.value, sink))


def _credit(m: Credit, sink: list[memoryview]) -> tuple[Any, ...]:
    return (_CREDIT, m.actor_id, m.n)


def _deliver_to_key(m: DeliverToKey, sink: list[memoryview]) -> tuple[Any, ...]:
    return (
        _DELIVER_TO_KEY,
        m.kind,
        m.key,
        m.code_id,
        m.code,
        m.idle_timeout_s,
        m.mailbox_size,
        _payload_out(m.payload, sink),
        m.hops,
        m.rid,
    )


# The fields each form holds, in order. A field added to one of these classes must be added to
# its encoder and decoder here too (at the end of the form): until then, importing this module
# fails rather than drop the field on the wire.
_FORMS: dict[type, tuple[str, ...]] = {
    CallActor: ("task_id", "actor_id", "method", "args", "root", "quiet"),
    TaskResult: ("task_id", "ok", "value"),
    TaskResults: ("results",),
    ActorCalls: ("calls",),
    SubmitTasks: ("tasks",),
    SubmitTask: (
        "task_id", "function_id", "function", "args", "num_cpus", "actor", "resources", "root"
    ),
    Deliver: ("rid", "actor_id", "payload"),
    AskReply: ("rid", "ok", "value"),
    Credit: ("actor_id", "n"),
    DeliverToKey: (
        "kind", "key", "code_id", "code", "idle_timeout_s", "mailbox_size", "payload", "hops",
        "rid",
    ),
}  # fmt: skip
for _cls, _form in _FORMS.items():
    if tuple(f.name for f in attrs.fields(_cls)) != _form:
        raise RuntimeError(
            f"{_cls.__name__}'s fields changed: add the new ones to its positional form in "
            f"actorgrid/_protocol/hotcodec.py (they are {[f.name for f in attrs.fields(_cls)]}, "
            f"the form has {list(_form)})"
        )

_ENCODERS: dict[type, Callable[[Any, list[memoryview]], tuple[Any, ...] | None]] = {
    CallActor: _call_actor,
    TaskResult: _task_result,
    TaskResults: _task_results,
    ActorCalls: _actor_calls,
    SubmitTasks: _submit_tasks,
    SubmitTask: _submit_task,
    Deliver: _deliver,
    AskReply: _ask_reply,
    Credit: _credit,
    DeliverToKey: _deliver_to_key,
}


def encode_positional(message: Any, sink: list[memoryview]) -> tuple[Any, ...] | None:
    """The positional envelope of ``message``, its buffers appended to ``sink``; None when
    ``message`` has no positional form (it goes as a map)."""
    encoder = _ENCODERS.get(type(message))
    return None if encoder is None else encoder(message, sink)


# --- decoding -------------------------------------------------------------------------------


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise ProtocolError(f"expected bytes, got {type(v).__name__}")
    return v


def _id(v: Any) -> Any:
    """An ActorId or ObjectId (NewTypes of bytes: the type is the caller's to name)."""
    if type(v) is not bytes:
        raise ProtocolError(f"expected an id (bytes), got {type(v).__name__}")
    return v


def _opt_bytes(v: Any) -> bytes | None:
    return None if v is None else _bytes(v)


def _str(v: Any) -> str:
    if type(v) is not str:
        raise ProtocolError(f"expected a str, got {type(v).__name__}")
    return v


def _int(v: Any) -> int:
    if type(v) is not int:
        raise ProtocolError(f"expected an int, got {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise ProtocolError(f"expected a bool, got {type(v).__name__}")
    return v


def _float(v: Any) -> float:
    if type(v) is not float and type(v) is not int:
        raise ProtocolError(f"expected a number, got {type(v).__name__}")
    return float(v)


def _resources(v: Any) -> tuple[tuple[str, float], ...]:
    if type(v) is not tuple:
        raise ProtocolError(f"expected resource pairs, got {type(v).__name__}")
    out = []
    for pair in v:
        if type(pair) is not tuple or len(pair) != 2:
            raise ProtocolError("a resource is not a [name, amount] pair")
        out.append((_str(pair[0]), _float(pair[1])))
    return tuple(out)


class _Body:
    """The frame being decoded, and where its next out-of-band buffer starts."""

    __slots__ = ("offset", "view")

    def __init__(self, view: memoryview, offset: int) -> None:
        self.view = view
        self.offset = offset

    def payload(self, v: Any) -> Payload:
        if type(v) is not tuple or len(v) != 2:
            raise ProtocolError("payload is not a [data, lengths] pair")
        data, lengths = v
        if type(data) is not bytes:
            raise ProtocolError("payload data is not bytes")
        if type(lengths) is not tuple:
            raise ProtocolError("payload buffer lengths are not a list")
        if not lengths:
            return Payload(data)
        buffers = []
        view, offset = self.view, self.offset
        for n in lengths:
            if type(n) is not int or n < 0 or offset + n > view.nbytes:
                raise ProtocolError("payload buffers run past the end of the frame")
            buffers.append(view[offset : offset + n])
            offset += n
        self.offset = offset
        return Payload(data, tuple(buffers))


def _d_call_actor(f: tuple[Any, ...], b: _Body) -> CallActor:
    _, task_id, actor_id, method, args, root, quiet = f
    return CallActor(
        _id(task_id), _id(actor_id), _str(method), b.payload(args), _str(root), _bool(quiet)
    )


def _d_task_result(f: tuple[Any, ...], b: _Body) -> TaskResult:
    _, task_id, ok, value = f
    return TaskResult(_id(task_id), _bool(ok), b.payload(value))


def _d_task_results(f: tuple[Any, ...], b: _Body) -> TaskResults:
    _, flat = f
    if type(flat) is not tuple or len(flat) % 3:
        raise ProtocolError("task results are not a list of [id, ok, payload] triples")
    payload = b.payload
    results: list[TaskResult] = []
    add = results.append
    it = iter(flat)
    # The checks of _id, _bool and _Body.payload, inline: this runs once per answer.
    for task_id, ok, value in zip(it, it, it, strict=True):
        if type(task_id) is not bytes or type(ok) is not bool:
            raise ProtocolError("a task result is not an [id, ok, payload] triple")
        if type(value) is tuple and len(value) == 2 and value[1] == () and type(value[0]) is bytes:
            add(TaskResult(task_id, ok, Payload(value[0])))  # type: ignore[arg-type]
        else:
            add(TaskResult(task_id, ok, payload(value)))  # type: ignore[arg-type]
    return TaskResults(tuple(results))


def _d_submit_task(f: tuple[Any, ...], b: _Body) -> SubmitTask:
    _, task_id, function_id, function, args, num_cpus, resources, root = f
    return SubmitTask(
        _id(task_id),
        _bytes(function_id),
        _opt_bytes(function),
        b.payload(args),
        _float(num_cpus),
        None,  # actor: a SubmitTask with one goes as a map
        _resources(resources),
        _str(root),
    )


def _items(v: Any, n: int, what: str) -> tuple[Any, ...]:
    if type(v) is not tuple or not all(type(x) is tuple and len(x) == n for x in v):
        raise ProtocolError(f"{what} are not a list of {n}-field forms")
    return v


def _d_actor_calls(f: tuple[Any, ...], b: _Body) -> ActorCalls:
    _, calls = f
    payload = b.payload
    out: list[CallActor] = []
    add = out.append
    # The checks of _id, _str, _bool and _Body.payload, inline: this runs once per call.
    for t, a, m, args, root, q in _items(calls, 6, "actor calls"):
        if type(t) is not bytes or type(a) is not bytes or type(m) is not str:
            raise ProtocolError("an actor call's ids are not bytes or its method not a str")
        if type(root) is not str or type(q) is not bool:
            raise ProtocolError("an actor call's root is not a str or its quiet not a bool")
        if type(args) is tuple and len(args) == 2 and args[1] == () and type(args[0]) is bytes:
            add(CallActor(t, a, m, Payload(args[0]), root, q))  # type: ignore[arg-type]
        else:
            add(CallActor(t, a, m, payload(args), root, q))  # type: ignore[arg-type]
    return ActorCalls(tuple(out))


def _d_submit_tasks(f: tuple[Any, ...], b: _Body) -> SubmitTasks:
    _, tasks = f
    payload = b.payload
    return SubmitTasks(
        tuple(
            [
                SubmitTask(
                    _id(task_id),
                    _bytes(function_id),
                    _opt_bytes(function),
                    payload(args),
                    _float(num_cpus),
                    None,  # actor: a SubmitTask with one goes as a map
                    () if resources == () else _resources(resources),
                    _str(root),
                )
                for task_id, function_id, function, args, num_cpus, resources, root in _items(
                    tasks, 7, "tasks"
                )
            ]
        )
    )


def _d_deliver(f: tuple[Any, ...], b: _Body) -> Deliver:
    _, rid, actor_id, payload = f
    return Deliver(_int(rid), _id(actor_id), b.payload(payload))


def _d_ask_reply(f: tuple[Any, ...], b: _Body) -> AskReply:
    _, rid, ok, value = f
    return AskReply(_int(rid), _bool(ok), b.payload(value))


def _d_credit(f: tuple[Any, ...], b: _Body) -> Credit:
    _, actor_id, n = f
    return Credit(_id(actor_id), _int(n))


def _d_deliver_to_key(f: tuple[Any, ...], b: _Body) -> DeliverToKey:
    _, kind, key, code_id, code, idle_timeout_s, mailbox_size, payload, hops, rid = f
    return DeliverToKey(
        _str(kind),
        _str(key),
        _bytes(code_id),
        _bytes(code),
        _float(idle_timeout_s),
        _int(mailbox_size),
        b.payload(payload),
        _int(hops),
        _int(rid),
    )


_DECODERS: dict[int, Callable[[tuple[Any, ...], _Body], Any]] = {
    _CALL_ACTOR: _d_call_actor,
    _TASK_RESULT: _d_task_result,
    _TASK_RESULTS: _d_task_results,
    _ACTOR_CALLS: _d_actor_calls,
    _SUBMIT_TASKS: _d_submit_tasks,
    _SUBMIT_TASK: _d_submit_task,
    _DELIVER: _d_deliver,
    _ASK_REPLY: _d_ask_reply,
    _CREDIT: _d_credit,
    _DELIVER_TO_KEY: _d_deliver_to_key,
}


# The class name of each positional form's tag (for traces that name frames by type).
POSITIONAL_NAMES: dict[int, str] = {
    _CALL_ACTOR: CallActor.__name__,
    _TASK_RESULT: TaskResult.__name__,
    _TASK_RESULTS: TaskResults.__name__,
    _ACTOR_CALLS: ActorCalls.__name__,
    _SUBMIT_TASKS: SubmitTasks.__name__,
    _SUBMIT_TASK: SubmitTask.__name__,
    _DELIVER: Deliver.__name__,
    _ASK_REPLY: AskReply.__name__,
    _CREDIT: Credit.__name__,
    _DELIVER_TO_KEY: DeliverToKey.__name__,
}


def decode_positional(fields: tuple[Any, ...], view: memoryview, offset: int) -> Any:
    """The message of a positional envelope whose buffers start at ``offset`` in ``view``;
    checks that the buffers end exactly at the end of the frame."""
    tag = fields[0] if fields else None
    decoder = _DECODERS.get(tag) if type(tag) is int else None
    if decoder is None:
        raise ProtocolError(f"frame envelope is not a known message: tag {tag!r}")
    body = _Body(view, offset)
    try:
        message = decoder(fields, body)
    except ProtocolError:
        raise
    except ValueError:  # a form with too few or too many fields for its tag
        raise ProtocolError(f"malformed message with tag {tag}: {len(fields)} fields") from None
    if body.offset != view.nbytes:
        raise ProtocolError("frame has trailing bytes after its payload buffers")
    return message
