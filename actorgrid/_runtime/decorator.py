"""``@ag.remote`` before the runtime is loaded: a light stand-in, made real on first use.

A script decorates its remote functions and classes at import, long before it calls
``ag.init``. If ``@ag.remote`` imported the runtime (Trio, the message classes, the codec),
that import would run before ``ag.init`` could start the worker template process, and the two
would not overlap (``_node/prestart.py``). So ``actorgrid.remote`` is ``remote`` here: while
``actorgrid._runtime.remote`` is not imported, it returns a ``Deferred`` that holds the target
and its options, and imports nothing.

A ``Deferred`` becomes the real ``RemoteFunction`` or ``ActorClass`` in place (its class and
attributes switched, so every name bound to it sees the real object) the first time anything
but its name, qualname, doc or ``__wrapped__`` is asked of it: ``.remote()``, ``.options()``,
``.key()``, a call, a repr, pickling, an ``isinstance`` check. What the real decorator checks
(an ``ag.Context`` on a sync function, an unknown option) is raised then, at the first use,
and again at each use after that, as long as it fails. Once the runtime is imported,
``remote`` hands straight to the real decorator.
"""

from __future__ import annotations

import _thread
import sys
from typing import Any, Generic, TypeVar

__all__ = ["Deferred", "remote"]

_REAL_MODULE = "actorgrid._runtime.remote"
# object's own __class__ setter: Deferred shadows __class__ with a property.
_SET_CLASS = object.__dict__["__class__"].__set__
# One switch at a time (threads may use one object at once); reentrant, as making the real
# object may import modules whose import touches another Deferred.
_LOCK = _thread.RLock()

T = TypeVar("T")


# Generic as a base, as RemoteFunction and ActorClass have it: a class may be switched only
# for one of the same layout, bases included.
class Deferred(Generic[T]):
    """A function or class decorated with ``@ag.remote`` while the runtime was not yet
    imported; it turns into the real thing on first use (see the module docstring)."""

    _deferred: tuple[Any, dict[str, Any]]

    def __init__(self, target: Any, options: dict[str, Any]) -> None:
        self._deferred = (target, options)
        self.__name__ = getattr(target, "__name__", "remote_function")
        self.__qualname__ = getattr(target, "__qualname__", self.__name__)
        self.__doc__ = target.__doc__
        if not isinstance(target, type):
            self.__wrapped__ = target  # as RemoteFunction has it

    def _real(self) -> Any:
        """The real object, made once (not yet switched to: see ``__class__``)."""
        with _LOCK:
            real = self.__dict__.get("_made")
            if real is None:
                target, options = self._deferred
                from .remote import remote as real_remote

                real = self.__dict__["_made"] = real_remote(target, **options)
            return real

    def _become_real(self) -> None:
        # In this order, so that another thread never finds it half switched: the real
        # attributes are in place before the class is the real one, and "_deferred" (which
        # sends a missing attribute to __getattr__, and so to this lock) goes last.
        with _LOCK:
            if "_deferred" not in self.__dict__:
                return  # switched by another thread meanwhile
            real = self._real()
            self.__dict__.update(real.__dict__)
            _SET_CLASS(self, type(real))  # raises if the layouts differ: still deferred
            del self.__dict__["_made"], self.__dict__["_deferred"]

    def __getattr__(self, name: str) -> Any:
        # Only for attributes this object lacks: the real one's, once switched to.
        self._become_real()
        if type(self) is Deferred:  # nothing to switch to (a half-made object)
            raise AttributeError(name)
        return getattr(self, name)

    # isinstance() asks for __class__ when type() does not match, and trusts it only if it
    # differs from type(): so this names the real class and leaves the switch to the next use.
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._real())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._become_real()
        return self(*args, **kwargs)

    def __repr__(self) -> str:
        self._become_real()
        return repr(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        self._become_real()
        return self.__reduce_ex__(protocol)


def remote(target: Any = None, **options: Any) -> Any:
    """Make a function, coroutine function or class remote: ``@ag.remote`` or
    ``@ag.remote(num_cpus=2, max_restarts=3, ...)`` (see ``actorgrid._runtime.remote.remote``
    for what each becomes)."""
    module = sys.modules.get(_REAL_MODULE)
    if module is not None:
        return module.remote(target, **options)

    def wrap(obj: Any) -> Any:
        if not callable(obj):
            raise TypeError(
                f"@ag.remote applies to functions and classes, not {type(obj).__name__}"
            )
        return Deferred(obj, options)

    return wrap if target is None else wrap(target)
