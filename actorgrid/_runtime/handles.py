"""ActorHandle and ActorMethod: how callers reach an actor."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast

import trio

from .._exceptions import SerializationError
from .._protocol.ids import ActorId, ObjectId, short
from .._protocol.messages import ActorInfo, Payload
from .._scheduler.streams import check_backpressure
from . import current
from .generators import (
    STREAM_KWARG,
    CallerStreams,
    ObjectRefGenerator,
    StreamMarker,
    is_generator_function,
)
from .quiet import result_discarded
from .refs import ObjectEntry, ObjectRef
from .serialization import NO_ARGS, dumps_call
from .signatures import MethodChecks

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ["ActorHandle", "ActorMethod"]

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class _InLoop(Protocol):
    def in_loop_thread(self) -> bool: ...

    def idle(self) -> bool: ...

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None: ...


class _CallRoots(Protocol):
    def call_made(self, task_id: ObjectId) -> None: ...


class CallerRuntime(Protocol):
    """What an actor method call needs of this process's runtime (``current.py``); Runtime is
    one."""

    @property
    def portal(self) -> _InLoop: ...

    @property
    def observe(self) -> _CallRoots: ...

    def check_size(self, payload: Payload, label: str) -> None: ...

    def new_entry(self, actor: ActorInfo | None = None) -> ObjectEntry: ...

    def send_call_direct(
        self, handle: ActorHandle[Any], entry: ObjectEntry, method: str, payload: Payload
    ) -> bool: ...

    def send_call(
        self, handle: ActorHandle[Any], entry: ObjectEntry, method: str, payload: Payload
    ) -> None: ...

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> None: ...

    @property
    def streams(self) -> CallerStreams: ...


class ActorHandle(Generic[T]):
    """A reference to a live actor: call ``handle.method.remote(...)``.

    Picklable: pass it to tasks and other actors and they can call it too. Created by
    ``Cls.remote()`` and ``ag.get_actor()``; in Trio code a named actor's handle can be awaited
    until its name is registered.
    """

    __slots__ = (
        "__weakref__",
        "_checks",
        "_claimed",
        "_cls",
        "_error",
        "_info",
        "_methods",
        "_queued",
        "_ready",
    )

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError("ActorHandle has no public constructor: use Cls.remote() or ag.get_actor()")

    @classmethod
    def _make(
        cls,
        info: ActorInfo | None,
        klass: type | None = None,
        checks: MethodChecks | None = None,
    ) -> ActorHandle[Any]:
        h: ActorHandle[Any] = object.__new__(cls)
        h._info = info
        h._cls = klass
        h._checks = checks
        h._queued = ()  # (a list once a call waits for the actor's place)
        h._error = None
        h._claimed = None
        h._ready = None if info is not None else trio.Event()
        h._methods = None  # (a dict once a method is called)
        return h

    _info: ActorInfo | None
    _cls: type | None
    _checks: MethodChecks | None  # the class's, where this process has it (not unpickled)
    # Made when first needed: a handle that is only held (the 100,000 of a simulation's
    # driver) keeps no empty list nor dict (120 bytes).
    _queued: list[tuple[ObjectEntry, str, Payload]] | tuple[()]
    _error: BaseException | None
    # Set once the head has answered a named class actor's claim, which .remote() does not
    # wait for; `await handle` does, so a taken name raises there.
    _claimed: trio.Event | None
    _ready: trio.Event | None
    # Its methods reached so far (``handle.ping``), made and checked once: a loop of
    # ``handle.ping.remote()`` builds no ActorMethod per call.
    _methods: dict[str, ActorMethod[..., Any]] | None

    @property
    def actor_id(self) -> ActorId:
        return self._require_info().actor_id

    @property
    def name(self) -> str | None:
        return self._info.name if self._info else None

    def __repr__(self) -> str:
        info = self._info
        if info is None:
            return "ActorHandle(<being registered>)"
        name = f", name={info.name!r}" if info.name else ""
        return f"ActorHandle({info.label}{name}, {short(info.actor_id)} at {info.address})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ActorHandle)
            and self._info is not None
            and other._info is not None
            and self._info.actor_id == other._info.actor_id
        )

    def __hash__(self) -> int:
        return hash(self._info.actor_id if self._info else id(self))

    def __getattr__(self, name: str) -> ActorMethod[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        methods = self._methods
        method = None if methods is None else methods.get(name)
        if method is not None:
            return method
        info = self._info
        if info is not None:
            if info.kind != "class":
                raise AttributeError(
                    f"{info.label} is a remote coroutine actor: it has no methods to call; "
                    "send it messages with ctx.send()/ag.send() instead"
                )
            if info.methods and name not in info.methods:
                raise AttributeError(
                    f"actor class {info.label} has no method {name!r}; it has: "
                    + ", ".join(info.methods)
                )
            method = ActorMethod(self, name)
            if methods is None:  # (two threads making one each: one's is not kept, no harm)
                self._methods = {name: method}
            else:
                methods[name] = method
            return method  # checked against its class: kept (an actor's methods never change)
        return ActorMethod(self, name)

    def __reduce__(self) -> Any:
        return ActorHandle._make, (self._require_info(),)

    def __await__(self) -> Generator[Any, None, ActorHandle[T]]:
        return self._await_self().__await__()

    async def _await_self(self) -> ActorHandle[T]:
        if self._claimed is not None:
            await self._claimed.wait()
        await self._wait_info()
        return self

    async def _wait_info(self) -> ActorInfo:
        if self._info is None:
            assert self._ready is not None
            await self._ready.wait()
        if self._error is not None:
            raise self._error
        assert self._info is not None
        return self._info

    def _require_info(self) -> ActorInfo:
        if self._info is None:
            raise SerializationError(
                "this actor handle is still being registered under its name: "
                "`await handle` before passing it to another task or actor"
            )
        return self._info

    def _resolve(self, info: ActorInfo, send_call: Callable[..., None]) -> None:
        """Loop: the actor has its place; send the calls made meanwhile, in order."""
        self._info = info
        queued, self._queued = self._queued, ()
        for entry, method, payload in queued:
            send_call(self, entry, method, payload)
        if self._ready is not None:
            self._ready.set()

    def _unresolve(self) -> None:
        """Loop: the actor is being restarted elsewhere; queue calls until ``_resolve``."""
        self._info = None
        if self._ready is None or self._ready.is_set():
            self._ready = trio.Event()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        queued, self._queued = self._queued, ()
        for entry, _, _ in queued:
            entry.set_error(error)
        if self._ready is not None:
            self._ready.set()


class ActorMethod(Generic[P, R]):
    """A method of an actor, reached through its handle: ``handle.incr.remote(2)``.

    A generator method's ``.remote()`` returns an ``ObjectRefGenerator``; a handle that does
    not know the actor's class (unpickled, or from ``ag.get_actor``) needs
    ``.options(streaming=True)`` for that.
    """

    __slots__ = ("_handle", "_name", "_streaming", "_template", "_window")

    def __init__(self, handle: ActorHandle[Any], name: str) -> None:
        self._handle = handle
        self._name = name
        self._streaming: bool | None = None  # None: a generator method streams
        self._window = 0
        # What each call to it needs of its handle, worked out on the first call and again
        # whenever the handle's ActorInfo changes (a restart): see _Template.
        self._template: _Template | None = None

    def options(
        self, *, streaming: bool | None = None, generator_backpressure: int = 0
    ) -> ActorMethod[P, R]:
        """``streaming=True``: the call returns an ObjectRefGenerator (a generator method
        reached through a handle that does not know its class); ``generator_backpressure``:
        items the generator may run ahead of its consumer (0: the default)."""
        variant: ActorMethod[P, R] = ActorMethod(self._handle, self._name)
        variant._streaming = streaming
        variant._window = check_backpressure(generator_backpressure)
        return variant

    def __repr__(self) -> str:
        return f"<ActorMethod {self._name} of {self._handle!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor methods cannot be called directly; use handle.{self._name}.remote(...)"
        )

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]:
        rt = cast("CallerRuntime", current.get())
        h = self._handle
        t = self._template
        if t is None or t.info is not h._info:
            t = self._template = _Template(self, h)
        if t.check is not None:
            t.check.check(args, kwargs)
        if h._error is not None:
            raise h._error
        if t.streaming:
            return self._remote_stream(rt, t.fn, t.label, args, kwargs)  # type: ignore[return-value]
        if args or kwargs:
            payload = dumps_call(t.label, t.fn, args, kwargs, skip=1)
            rt.check_size(payload, t.label)
        else:
            payload = _NO_ARGS  # immutable, and small: never placed in the store
        entry = rt.new_entry()
        if t.quiet and result_discarded():  # x.remote() as a statement: no answer (quiet.py)
            entry.quiet = True
        rt.observe.call_made(entry.object_id)  # its call tree's root, taken in this thread
        portal = rt.portal
        if portal.in_loop_thread():
            rt.send_call(h, entry, self._name, payload)
        elif not portal.idle() or not rt.send_call_direct(h, entry, self._name, payload):
            # A burst (calls queued for the loop already) skips the direct try: it would
            # refuse anyway, and the queue keeps this thread's calls in order.
            portal.call_soon(rt.send_call, h, entry, self._name, payload)
        return ObjectRef._make(entry)

    def _remote_stream(
        self,
        rt: CallerRuntime,
        fn: Any,
        label: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ObjectRefGenerator[Any]:
        entry = rt.new_entry()
        rt.observe.call_made(entry.object_id)
        window = self._window or check_backpressure(0)
        kwargs = {**kwargs, STREAM_KWARG: StreamMarker(entry.object_id, window)}
        payload = dumps_call(label, fn, args, kwargs, skip=1)
        rt.check_size(payload, label)
        gen: ObjectRefGenerator[Any] = ObjectRefGenerator._make(rt, rt.streams, entry, window)
        rt.on_loop(rt.send_call, self._handle, entry, self._name, payload)
        return gen


_NO_ARGS = NO_ARGS


class _Template:
    """What a method's calls need of its handle, for as long as the handle's ActorInfo is
    this one: the argument check, the class's function (a generator streams), the label that
    errors name. Worked out once rather than per ``.remote()``."""

    __slots__ = ("check", "fn", "info", "label", "quiet", "streaming")

    def __init__(self, method: ActorMethod[..., Any], h: ActorHandle[Any]) -> None:
        name = method._name
        self.info = h._info
        self.check = h._checks[name] if h._checks is not None else None
        self.fn = fn = getattr(h._cls, name, None) if h._cls is not None else None
        self.label = f"{h._info.label if h._info else 'actor'}.{name}"
        streaming = method._streaming
        self.streaming = bool(
            streaming or (streaming is None and fn is not None and is_generator_function(fn))
        )
        # Its calls may go unanswered when their ref is dropped: never sent again (quiet.py).
        self.quiet = h._info is not None and h._info.max_task_retries == 0
