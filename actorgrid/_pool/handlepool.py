"""Ray's ``ActorPool`` semantics over actor handles the caller made (``ag.ActorPool([a, b])``).

``submit(fn, value)`` runs ``fn(actor, value)`` (which returns an ObjectRef) on an idle
actor, or queues it until one is free; ``get_next`` returns results in submission order,
``get_next_unordered`` as they finish (after which ``get_next`` is refused, as in Ray).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._runtime.api import get, wait
from .._runtime.handles import ActorHandle
from .._runtime.refs import ObjectRef

__all__ = ["HandlePool"]

Submit = Callable[[ActorHandle[Any], Any], ObjectRef[Any]]


class HandlePool:
    def __init__(self, actors: list[ActorHandle[Any]]) -> None:
        for actor in actors:
            if not isinstance(actor, ActorHandle):
                raise TypeError(
                    f"ActorPool takes a class or a list of actor handles; got {actor!r} in the list"
                )
        if not actors:
            raise ValueError("ActorPool needs at least one actor handle")
        self.size = len(actors)
        self._idle = list(actors)
        self._running: dict[ObjectRef[Any], tuple[int, ActorHandle[Any]]] = {}
        self._by_index: dict[int, ObjectRef[Any]] = {}
        self._next_submit = 0
        self._next_return = 0
        self._queued: deque[tuple[Submit, Any]] = deque()

    def __repr__(self) -> str:
        return (
            f"<ag.ActorPool of {self.size} actors, {len(self._running)} running, "
            f"{len(self._queued)} queued>"
        )

    def submit(self, fn: Submit, value: Any) -> None:
        if not self._idle:
            self._queued.append((fn, value))
            return
        actor = self._idle.pop()
        ref = fn(actor, value)
        if not isinstance(ref, ObjectRef):
            raise TypeError(
                f"fn(actor, value) must return an ObjectRef (actor.method.remote(...)), not {ref!r}"
            )
        self._running[ref] = (self._next_submit, actor)
        self._by_index[self._next_submit] = ref
        self._next_submit += 1

    def has_next(self) -> bool:
        return bool(self._running)

    def _returned(self, ref: ObjectRef[Any]) -> None:
        index, actor = self._running.pop(ref)
        del self._by_index[index]
        self._idle.append(actor)
        if self._queued:
            self.submit(*self._queued.popleft())

    def get_next(self, timeout: float | None = None) -> Any:
        if not self.has_next():
            raise StopIteration("no more results to get: submit() first")
        if self._next_return not in self._by_index:
            raise ValueError("get_next() cannot follow get_next_unordered(); keep to one of them")
        ref = self._by_index[self._next_return]
        if timeout is not None and not wait([ref], timeout=timeout)[0]:
            raise TimeoutError(f"the next result was not ready after {timeout} s")
        self._next_return += 1
        self._returned(ref)
        return get(ref)

    def get_next_unordered(self, timeout: float | None = None) -> Any:
        if not self.has_next():
            raise StopIteration("no more results to get: submit() first")
        ready, _ = wait(list(self._running), num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError(f"no result was ready after {timeout} s")
        ref = ready[0]
        index = self._running[ref][0]
        self._next_return = max(self._next_return, index + 1)
        self._returned(ref)
        return get(ref)

    def map(self, fn: Submit, values: Iterable[Any]) -> Iterator[Any]:
        for value in values:
            self.submit(fn, value)
        while self.has_next():
            yield self.get_next()

    def map_unordered(self, fn: Submit, values: Iterable[Any]) -> Iterator[Any]:
        for value in values:
            self.submit(fn, value)
        while self.has_next():
            yield self.get_next_unordered()
