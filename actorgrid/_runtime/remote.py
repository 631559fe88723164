"""``@ag.remote``: remote functions, remote coroutine actors and actor classes."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import attrs
import trio

from .._protocol.messages import ActorInfo, KillActor
from .._scheduler.demand import Demand
from .._scheduler.streams import check_backpressure
from .context import Context
from .core import current_runtime
from .envship import for_call, use_env
from .generators import STREAM_KWARG, ObjectRefGenerator, StreamMarker, is_generator_function
from .handles import ActorHandle
from .lineage import current_task
from .options import _NAMING, _Code, _takes_context
from .options import Options as Options  # where _pool/ finds it
from .output import current_root
from .records import OwnedActor
from .refs import ObjectRef
from .serialization import NO_ARGS, dumps_call
from .signatures import MethodChecks, call_check
from .virtual import AgentKey

if TYPE_CHECKING:
    from .refs import ObjectEntry

__all__ = ["ActorClass", "RemoteFunction", "remote"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class RemoteFunction(Generic[P, R]):
    """A function made remote with ``@ag.remote``: call ``f.remote(...)`` for an ObjectRef."""

    def __init__(self, fn: Callable[..., Any], options: Options) -> None:
        self._fn = fn
        self._options = options
        self._code = _Code(fn)
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        self._stream = is_generator_function(fn)
        self._actor = _takes_context(fn)
        if self._actor and self._stream:
            raise TypeError(
                f"{fn.__qualname__} takes an ag.Context and is a generator: a remote coroutine "
                "actor returns one value; drop the Context to make it a remote generator, or "
                "send its values with ctx.send()"
            )
        if self._actor and not self._is_async:
            raise TypeError(
                f"{fn.__qualname__} takes an ag.Context, so it must be `async def`: a "
                "remote coroutine with a mailbox"
            )
        self.__name__ = getattr(fn, "__name__", "remote_function")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self._label = f"{self.__qualname__}()"  # what check_size names
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._check = call_check(self.__qualname__, fn, skip=int(self._actor))

    def __repr__(self) -> str:
        kind = "remote coroutine actor" if self._actor else "remote function"
        return f"<{kind} {self.__qualname__}>"

    def key(self, key: str) -> AgentKey:
        """The agent of this kind with this key, a target for ``ctx.send``/``ag.send``.

        It is activated on its first message, on the worker that hashing ``key`` picks, and
        runs this coroutine with ``ctx.key == key``; with ``.options(idle_timeout=s)`` it is
        deactivated after ``s`` seconds without a message (its mailbox ends) and comes back
        on its next one."""
        if not self._actor:
            raise TypeError(
                f"{self.__qualname__} is a plain remote function, not an agent kind: a kind "
                "is an `async def` whose first parameter is `ctx: ag.Context`"
            )
        opts = self._options
        return AgentKey._make(
            self.__qualname__,
            str(key),
            self._code.id,
            self._code.blob(),
            float(opts.idle_timeout or 0.0),
            opts.mailbox_size,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self.__qualname__}() cannot be called directly; use "
            f"{self.__name__}.remote(...) to run it on the cluster"
        )

    def options(self, **options: Any) -> RemoteFunction[P, R]:
        """A variant with other options: name, namespace, get_if_exists, num_cpus, ..."""
        variant: RemoteFunction[P, R] = object.__new__(RemoteFunction)
        variant.__dict__ = self.__dict__.copy()  # one copy of the table, not key by key
        variant._options = self._options.merge(**options)
        if options.keys() <= _NAMING and not options.get("get_if_exists"):
            return variant  # ``.options(name=...)`` per agent: nothing else changed
        if variant._options.lifetime is not None and not self._actor:
            raise ValueError(
                f"{self.__qualname__} is a plain remote function: lifetime applies to actors "
                "(actor classes and remote coroutines that take an ag.Context)"
            )
        if variant._options.get_if_exists and not self._actor:
            raise ValueError(
                f"{self.__qualname__} is a plain remote function: its name only labels its "
                "tasks, so get_if_exists does not apply (actors have registered names)"
            )
        return variant

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]:
        if self._check is not None:
            self._check.check(args, kwargs)
        code = self._code
        code_id = code.id  # pickles the function once: what it captures fails here, not later
        rt = current_runtime()
        opts = self._options
        if opts.runtime_env is not None:
            if (env := for_call(rt, opts.runtime_env)) is not opts.runtime_env:
                opts = attrs.evolve(opts, runtime_env=env)  # merged over the driver's own
            rt.on_loop(use_env, rt, opts.runtime_env)
        num_cpus = opts.demand(
            opts.num_cpus if opts.num_cpus is not None else (0.0 if self._is_async else 1.0)
        )
        if self._stream:
            return self._remote_stream(args, kwargs, num_cpus)  # type: ignore[return-value]
        keep: Sequence[ObjectEntry]
        if not args and not kwargs and not self._actor:
            # No arguments: no refs to keep, nothing to pickle or size (a loop of no-op
            # tasks); the same bytes dumps_call makes for ((), {}).
            payload, keep = NO_ARGS, ()
        else:
            keep = rt.refs.collect()  # the refs in its arguments, kept while it may be retried
            try:
                payload = dumps_call(
                    self.__qualname__, self._fn, args, kwargs, skip=int(self._actor)
                )
            finally:
                rt.refs.collect_end()
            rt.check_size(payload, self._label)
        if not self._actor:
            entry = rt.new_entry()
            rt.on_loop(
                rt.send_task,
                entry,
                code_id,
                code.blob,
                payload,
                num_cpus,
                None,
                opts.max_retries,
                opts.retry_exceptions,
                current_task.get(),
                keep,
                current_root(),
            )
            return ObjectRef._make(entry)
        info = rt.new_actor_info(
            "coroutine",
            self.__qualname__,
            num_cpus,
            opts.name,
            opts.namespace,
            max_restarts=opts.max_restarts,
            detached=_detached(opts, self.__qualname__),
            mailbox_size=opts.mailbox_size,
        )
        entry = rt.new_entry(info)
        if info.name is None:
            rt.on_loop(rt.send_task, entry, code.id, code.blob, payload, num_cpus, info)
            return ObjectRef._make(entry)
        if info.address and not opts.get_if_exists:
            # Placed at once: .remote() returns without waiting for the head. The claim is
            # queued to the head now, ahead of anything sent after it (claims of many
            # .remote() calls in a row share frames), and the creator may use the name at
            # once; a taken name fails the ref (ag.get raises ValueError).
            rt.on_loop(
                rt.claim_name_batched,
                info,
                _Claimed(rt, entry, code_id, code.blob, payload, num_cpus, info),
            )
            return ObjectRef._make(entry)

        async def finish_then_start(placed: ActorInfo, pending: Any) -> None:
            try:
                holder = await rt.finish_register(pending)
            except Exception as exc:
                rt.forget_actor(placed.actor_id)  # the creator's optimistic name, if any
                entry.set_error(exc)
                raise
            if holder.actor_id == placed.actor_id:
                rt.send_task(entry, code.id, code.blob, payload, num_cpus, placed)
            else:
                # An existing actor holds the name: this ref targets it, and resolves (to
                # None; its result is its creator's) when it ends.
                entry.actor = holder
                rt.watch_end(holder, entry)

        async def register_then_start() -> None:
            try:
                placed = entry.actor = await rt.waiting.place_actor(info, num_cpus)
            except Exception as exc:  # its runtime_env could not be made ready
                entry.set_error(exc)
                raise
            await finish_then_start(placed, rt.register_name_nowait(placed, opts.get_if_exists))

        _start_registration(rt, register_then_start, wait=bool(info.address))
        return ObjectRef._make(entry)

    def _remote_stream(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], num_cpus: Demand
    ) -> ObjectRefGenerator[Any]:
        """``.remote()`` of a generator function: its stream of refs."""
        rt = current_runtime()
        opts = self._options
        entry = rt.new_entry()
        window = check_backpressure(opts.generator_backpressure)
        kwargs = {**kwargs, STREAM_KWARG: StreamMarker(entry.object_id, window)}
        payload = dumps_call(self.__qualname__, self._fn, args, kwargs)
        rt.check_size(payload, f"{self.__qualname__}()")
        gen: ObjectRefGenerator[Any] = ObjectRefGenerator._make(rt, rt.streams, entry, window)
        rt.on_loop(
            rt.send_task,
            entry,
            self._code.id,
            self._code.blob,
            payload,
            num_cpus,
            None,
            opts.max_retries,
            opts.retry_exceptions,
            current_task.get(),
            (),
            current_root(),
        )
        return gen


class ActorClass(Generic[T]):
    """A class made remote with ``@ag.remote``: ``Cls.remote(...)`` starts an actor."""

    def __init__(self, cls: type[T], options: Options) -> None:
        self._cls = cls
        self._options = options
        self._code = _Code(cls)
        self._methods = tuple(
            n for n, v in inspect.getmembers(cls) if callable(v) and not n.startswith("_")
        )
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self._check = call_check(cls.__qualname__, cls)
        self._method_checks = MethodChecks(cls)

    def __repr__(self) -> str:
        return f"<actor class {self.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor class {self.__qualname__} cannot be instantiated directly; use "
            f"{self.__name__}.remote(...) to start an actor"
        )

    def options(self, **options: Any) -> ActorClass[T]:
        variant: ActorClass[T] = object.__new__(ActorClass)
        variant.__dict__ = self.__dict__.copy()
        variant._options = self._options.merge(**options)
        return variant

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[T]:
        if self._check is not None:
            self._check.check(args, kwargs)
        code = self._code
        code.id  # noqa: B018  pickles the class once: what it captures fails here, not later
        rt = current_runtime()
        opts = self._options
        if opts.runtime_env is not None:
            if (env := for_call(rt, opts.runtime_env)) is not opts.runtime_env:
                opts = attrs.evolve(opts, runtime_env=env)  # merged over the driver's own
            rt.on_loop(use_env, rt, opts.runtime_env)
        label = f"{self.__qualname__}.__init__"
        # Inline: a creation's arguments may be sent again by the head, after their caller.
        payload = dumps_call(label, self._cls.__init__, args, kwargs, skip=1, inline=True)
        rt.check_size(payload, label)
        num_cpus = opts.demand(opts.num_cpus if opts.num_cpus is not None else 0.0)
        info = rt.new_actor_info(
            "class",
            self.__qualname__,
            num_cpus,
            opts.name,
            opts.namespace,
            self._methods,
            max_restarts=opts.max_restarts,
            mailbox_size=opts.mailbox_size,
            max_task_retries=opts.max_task_retries,
            detached=_detached(opts, self.__qualname__),
        )
        created = rt.new_entry()
        owned = (  # a detached actor is restarted by the head, not by its creator
            OwnedActor(info, code.id, code.blob, payload, opts.max_concurrency)
            if opts.max_restarts and not info.detached
            else None
        )

        def start(actor: Any) -> None:
            if owned is not None:
                owned.info = actor
            rt.send_create(created, actor, code.id, code.blob, payload, opts.max_concurrency)

        if info.name is None and info.address:
            handle: ActorHandle[T] = ActorHandle._make(info, self._cls, self._method_checks)
            if owned is not None:
                rt.on_loop(rt.own, handle, owned)
            rt.on_loop(start, info)
            return handle

        if info.address and not opts.get_if_exists:
            # Placed at once: as for named coroutine agents, .remote() returns without
            # waiting for the head, and the handle is usable at once (its calls wait at the
            # worker for the creation, which follows once the claim holds).
            handle = ActorHandle._make(info, self._cls, self._method_checks)
            handle._claimed = trio.Event()
            if owned is not None:
                rt.on_loop(rt.own, handle, owned)
            rt.on_loop(_claim_class_name, rt, info, handle, start)
            return handle
        handle = ActorHandle._make(None, self._cls, self._method_checks)
        if owned is not None:
            rt.on_loop(rt.own, handle, owned)

        async def register_then_start() -> None:
            # No worker fitted when .remote() was called: the actor waits for one (in the
            # background; calls on the handle queue meanwhile).
            try:
                placed = await rt.waiting.place_actor(info, num_cpus)
            except Exception as exc:  # its runtime_env could not be made ready
                handle._fail(exc)
                raise
            if placed.name is None:
                start(placed)
                handle._resolve(placed, rt.send_call)
                return
            pending = rt.register_name_nowait(placed, opts.get_if_exists)
            try:
                holder = await rt.finish_register(pending)
            except Exception as exc:
                handle._fail(exc)
                raise
            if holder.actor_id == placed.actor_id:
                start(placed)
            handle._resolve(holder, rt.send_call)

        _start_registration(rt, register_then_start, wait=bool(info.address))
        return handle


class _Claimed:
    """A named coroutine agent placed at once, waiting for its batched name claim
    (``claim_name_batched``): once it holds, its creation is sent; a taken name fails its
    ref. One small object per agent in flight, not three closures."""

    __slots__ = ("blob", "code_id", "entry", "info", "need", "payload", "rt")

    # It sends nothing but its agent's creation (names.py batches those per worker).
    sends_creation_only = True

    def __init__(
        self,
        rt: Any,
        entry: Any,
        code_id: bytes,
        blob: Callable[[], bytes],
        payload: Any,
        need: Demand,
        info: ActorInfo,
    ) -> None:
        self.rt = rt
        self.entry = entry
        self.code_id = code_id
        self.blob = blob
        self.payload = payload
        self.need = need
        self.info = info

    def __call__(self, error: Exception | None) -> None:
        if error is None:
            self.rt.send_task(
                self.entry, self.code_id, self.blob, self.payload, self.need, self.info
            )
        else:
            self.entry.set_error(error)


def _detached(opts: Options, label: str) -> bool:
    if opts.lifetime != "detached":
        return False
    if opts.name is None:
        raise ValueError(
            f"a detached actor needs a name: {label} would outlive its creator with no way "
            f'to reach it; pass .options(name="...", lifetime="detached") and find it later '
            "with ag.get_actor(name)"
        )
    return True


async def _quietly(fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    try:
        await fn(*args)
    except Exception:
        pass  # delivered to the handle or ref, which raises it where it is used


def _claim_class_name(
    rt: Any, info: ActorInfo, handle: ActorHandle[Any], start: Callable[[ActorInfo], None]
) -> None:
    """Loop: queue a placed class actor's name claim (ahead of anything sent after it), make
    the name usable by this process at once, and create the actor once the claim holds. A
    taken name fails the handle (its calls raise the ValueError), and the calls already sent
    are refused at the worker, which is told the actor will never come."""

    def claimed(error: Exception | None) -> None:
        try:
            if error is not None:
                handle._fail(error)
                rt.peer_for(info.address).send(KillActor(0, info.actor_id))
            else:
                start(info)
        finally:
            if handle._claimed is not None:
                handle._claimed.set()

    rt.claim_name_batched(info, claimed)


def _start_registration(
    rt: Any, register: Callable[[], Awaitable[None]], *, wait: bool = True
) -> None:
    """Run a name registration: blocking from a plain thread (the name is registered when
    ``.remote()`` returns), in the background from the loop (the claim is already queued to
    the head, ahead of anything sent after it). ``wait=False``: in the background from any
    thread (an actor waiting for a worker must not block ``.remote()``)."""

    async def quiet() -> None:
        try:
            await register()
        except Exception:
            pass  # delivered to the handle or ref, which raises it where it is used

    if rt.portal.in_loop_thread():
        rt.nursery.start_soon(quiet)
    elif not wait:
        rt.on_loop(rt.nursery.start_soon, quiet)
    else:
        rt.portal.run(register)


@overload
def remote(target: type[T]) -> ActorClass[T]: ...  # type: ignore[overload-overlap]
@overload
def remote(target: Callable[Concatenate[Context, P], Awaitable[R]]) -> RemoteFunction[P, R]: ...
@overload
def remote(target: Callable[P, Awaitable[R]]) -> RemoteFunction[P, R]: ...
@overload
def remote(target: Callable[P, R]) -> RemoteFunction[P, R]: ...
@overload
def remote(target: None = None, **options: Any) -> Callable[[Any], Any]: ...
def remote(target: Any = None, **options: Any) -> Any:
    """Make a function, coroutine function or class remote. ``@ag.remote`` or
    ``@ag.remote(num_cpus=2, max_restarts=3, ...)``.

    - a function: ``f.remote(*args)`` runs it on a worker and returns an ObjectRef;
    - an ``async def`` whose first parameter is ``ctx: ag.Context``: each ``.remote()`` starts
      an actor with a mailbox, addressable by the returned ref or by name;
    - a class: ``Cls.remote(*args)`` starts an actor and returns an ActorHandle.

    Every ``.remote(...)`` (also ``handle.method.remote(...)``) checks its arguments against
    the signature first and raises TypeError, showing it, if they cannot bind; the function
    or class is pickled on its first call, and what it captures that cannot be pickled is a
    SerializationError naming the variable. Neither sends anything.
    """
    opts = Options().merge(**options)

    def wrap(obj: Any) -> Any:
        if isinstance(obj, type):
            return ActorClass(obj, opts)
        if callable(obj):
            return RemoteFunction(obj, opts)
        raise TypeError(f"@ag.remote applies to functions and classes, not {type(obj).__name__}")

    return wrap if target is None else wrap(target)
