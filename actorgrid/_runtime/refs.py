"""ObjectRef and the per-process table entry behind it.

An object lives in its owner: the process that submitted the task or called ``ag.put``. The
owner's entry holds the serialized value until every local ObjectRef to it is gone (the table
holds entries weakly). A ref that is pickled away (passed to another task or actor) is counted
from then on by reference counting (``refcounting.py``): the owner keeps the value until no
process holds a ref to it, borrowers fetch it from the owner meanwhile.

Entries are resolved on the runtime's loop (or by the thread that read a call's answer off its
link itself: ``getting._resolve``). Threads wait on them without locks: a waiter is appended
and then ``state`` is re-checked, while the resolver sets ``state`` and then reads the
waiters, so under the GIL one side always sees the other. An entry nobody waited on has no
list of waiters (``None``: 56 bytes less for each of the 100,000 agents a driver created and
holds the refs of); the first waiter makes it under ``_FIRST_WAITER`` (two threads making one
each would lose one's waiter), the resolver takes it and leaves ``None``.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from .._exceptions import NotInitializedError
from .._protocol.ids import ObjectId, short
from .._protocol.messages import ActorInfo, Payload
from . import current, segments
from .serialization import loads, loads_error

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ["ObjectEntry", "ObjectRef"]

T = TypeVar("T")

PENDING, READY, FAILED = 0, 1, 2


class Waiter(Protocol):
    def set(self) -> None: ...


class RefCounter(Protocol):
    """What a ref needs of reference counting (``refcounting.RefCounts`` is one)."""

    def sent(self, entry: ObjectEntry) -> tuple[str, int, bool]: ...

    def rebuild(
        self,
        object_id: ObjectId,
        owner: str,
        actor: ActorInfo | None,
        sender: str,
        token: int,
        inline: bytes | None = None,
    ) -> ObjectEntry: ...


class RefOwner(Protocol):
    """What a ref needs of this process's runtime (``current.py``); Runtime is one."""

    async def get_async(self, refs: Any, timeout: float | None = None) -> Any: ...

    @property
    def refs(self) -> RefCounter: ...


_FIRST_WAITER = threading.Lock()


class _EntryRef(weakref.ref):  # type: ignore[type-arg]
    __slots__ = ("key",)
    key: ObjectId


class EntryTable:
    """This process's object entries by id, held weakly: an entry leaves when it is collected.

    A ``WeakValueDictionary`` builds a KeyedRef per entry in Python code (~4 µs, on every
    ``.remote()``); here the weak reference is a C one with the key in a slot (~1 µs), and
    its callback drops the key only if it still maps to that very reference (an entry
    revived under the same id replaces it: ``refcounting.py``). Any thread.
    """

    __slots__ = ("__weakref__", "_drop", "_refs")

    def __init__(self) -> None:
        refs: dict[ObjectId, _EntryRef] = {}
        self._refs = refs

        def drop(ref: _EntryRef) -> None:
            if refs.get(ref.key) is ref:
                del refs[ref.key]

        self._drop = drop

    def __setitem__(self, object_id: ObjectId, entry: ObjectEntry) -> None:
        ref = _EntryRef(entry, self._drop)
        ref.key = object_id
        self._refs[object_id] = ref

    def get(self, object_id: ObjectId) -> ObjectEntry | None:
        ref = self._refs.get(object_id)
        return None if ref is None else ref()

    def __contains__(self, object_id: ObjectId) -> bool:
        ref = self._refs.get(object_id)
        return ref is not None and ref() is not None

    def __len__(self) -> int:
        return len(self._refs)


class ObjectEntry:
    """The state of one object in this process: pending, ready (payload) or failed."""

    __slots__ = (
        "__weakref__",
        "actor",
        "error",
        "fetching",
        "object_id",
        "owner",
        "payload",
        "quiet",
        "state",
        "tracked",
        "waiters",
        "where",
    )

    def __init__(self, object_id: ObjectId, owner: str, actor: ActorInfo | None = None) -> None:
        self.object_id = object_id
        self.owner = owner
        self.actor = actor  # the actor a remote coroutine call became, if any
        self.state = PENDING
        self.payload: Payload | None = None
        self.error: BaseException | Payload | None = None
        self.waiters: list[Waiter] | None = None  # made by the first waiter
        self.fetching = False
        self.where: Any = None  # the Peer a pending call was sent on, for ag.cancel
        self.tracked = False  # watched by reference counting (refcounting.py)
        self.quiet = False  # a call whose ref its caller dropped at once (quiet.py)

    def set_value(self, payload: Payload) -> None:
        if self.state == PENDING:
            self.payload = payload
            self.state = READY
            self._wake()

    def set_error(self, error: BaseException | Payload) -> None:
        if self.state == PENDING:
            self.error = error
            self.state = FAILED
            self._wake()

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, None
        for w in waiters or ():
            w.set()

    def add_waiter(self, waiter: Waiter) -> bool:
        """Register ``waiter``; False if the entry is already resolved and ``waiter`` will not
        be set (then the caller acts on the outcome itself). True when the resolver took it
        (it resolved this entry meanwhile, from another thread): it sets it."""
        waiters = self.waiters
        if waiters is None:
            with _FIRST_WAITER:
                waiters = self.waiters
                if waiters is None:
                    waiters = self.waiters = []
        waiters.append(waiter)
        if self.state != PENDING:
            try:
                waiters.remove(waiter)
            except ValueError:
                return True  # the resolver already took it and sets it
            return False
        return True

    def value(self) -> Any:
        """The deserialized value; raises the task's error. Only valid once resolved."""
        if self.state == READY:
            assert self.payload is not None
            return loads(self.payload)
        error = self.error
        if isinstance(error, Payload):
            error = loads_error(error)
        assert error is not None
        raise error

    def describe(self) -> str:
        return ("pending", "ready", "failed")[self.state]


class ObjectRef(Generic[T]):
    """A future value computed by a task or stored with ``ag.put``.

    Get it with ``ag.get(ref)`` in sync code or ``await ref`` in async code; pass it to other
    tasks and actors, where top-level ref arguments are resolved before the call runs.
    Created by the runtime only.
    """

    __slots__ = ("__weakref__", "_entry", "_id")
    _id: ObjectId
    _entry: ObjectEntry

    def __init__(self, *_: Any, **__: Any) -> None:
        raise TypeError(
            "ObjectRef has no public constructor: refs come from .remote() and ag.put()"
        )

    @classmethod
    def _make(cls, entry: ObjectEntry) -> ObjectRef[T]:
        ref: ObjectRef[T] = object.__new__(cls)
        ref._id = entry.object_id
        ref._entry = entry
        return ref

    @property
    def id(self) -> ObjectId:
        return self._id

    @property
    def owner(self) -> str:
        """Address of the process that owns the value."""
        return self._entry.owner

    def __repr__(self) -> str:
        return f"ObjectRef({short(self._id)}, {self._entry.describe()})"

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __await__(self) -> Generator[Any, None, T]:
        return cast("RefOwner", current.get()).get_async(self).__await__()

    def __reduce__(self) -> Any:
        runtime = cast("RefOwner | None", current.get_or_none())
        e = self._entry
        if runtime is None:
            return _rebuild_ref, (self._id, e.owner, e.actor)
        sender, token, in_call = runtime.refs.sent(e)  # held until the receiver's receipt
        payload = e.payload
        if (
            in_call  # a task's argument, not a ref in a result or a message
            and e.state == READY  # (set after payload: a READY entry has its payload)
            and payload is not None
            and not payload.buffers
            and len(payload.data) <= INLINE_MAX_BYTES
            # A stored value's locator is small too, but its reader must go through the
            # owner, who can make it again if its node died (lineage).
            and not segments.is_stored(payload)
        ):
            # Small and ready: the value travels with the ref, which saves the task's worker
            # a fetch from the owner (the round trip that made ref arguments slow).
            return _rebuild_ref, (self._id, e.owner, e.actor, sender, token, payload.data)
        return _rebuild_ref, (self._id, e.owner, e.actor, sender, token)


# A ready value up to this size is pickled with its ref into a task's arguments (as Ray
# inlines small objects). Only there: a ref in a result or a message stays a ref, so that
# ag.get of it after its owner died raises ObjectLostError.
INLINE_MAX_BYTES = 64 * 1024


def _rebuild_ref(
    object_id: ObjectId,
    owner: str,
    actor: ActorInfo | None,
    sender: str = "",
    token: int = 0,
    inline: bytes | None = None,
) -> ObjectRef[Any]:
    runtime = cast("RefOwner | None", current.get_or_none())
    if runtime is None:
        entry = ObjectEntry(object_id, owner, actor)
        entry.set_error(
            NotInitializedError("this ObjectRef was unpickled outside an actorgrid process")
        )
        return ObjectRef._make(entry)
    return ObjectRef._make(runtime.refs.rebuild(object_id, owner, actor, sender, token, inline))
