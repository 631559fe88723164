"""The actorgrid exception tree: every error the runtime raises to users.

::

    Exception
    └── ActorgridError
        ├── RemoteError            user code raised remotely; also an instance of the original
        │                          type where that type can be subclassed
        ├── ActorDiedError         the actor is gone (killed, constructor failed, process died)
        ├── WorkerDiedError        the worker running a task went away before it answered
        ├── TaskCancelledError     ag.cancel() reached the task
        ├── ObjectLostError        an object's owner died, or the object was freed
        ├── GetTimeoutError        also a TimeoutError: ag.get(..., timeout=) ran out
        ├── SerializationError     also a TypeError: a value could not be pickled or unpickled
        ├── NameNotFoundError      also a LookupError: no live actor has that name
        ├── NotInitializedError    also a RuntimeError: no cluster to talk to
        ├── NoWorkerError          no live, unsuspended worker can take the call
        ├── RuntimeEnvError        a runtime_env could not be packed, shipped or set up
        ├── AuthenticationError    also a ConnectionError: the peer does not share our secret
        └── ProtocolError          also a ConnectionError: malformed, truncated or oversized input

Errors are translated at boundaries: the wire carries boxed errors, and the runtime turns them
into these classes where the caller receives them.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = [
    "ActorDiedError",
    "ActorgridError",
    "AuthenticationError",
    "GetTimeoutError",
    "NameNotFoundError",
    "NoWorkerError",
    "NotInitializedError",
    "ObjectLostError",
    "ProtocolError",
    "RemoteError",
    "RuntimeEnvError",
    "SerializationError",
    "TaskCancelledError",
    "WorkerDiedError",
]


class ActorgridError(Exception):
    """Base class of every error raised by actorgrid itself."""


class RemoteError(ActorgridError):
    """An exception raised by user code on another process, re-raised in the caller.

    ``cause`` is the original exception object when it could be unpickled here, ``type_name``
    its qualified type name, ``remote_traceback`` the traceback as text and ``where`` names the
    task or actor and the worker it ran on. Instances returned by :meth:`as_instance_of_cause`
    are also instances of the original type, so ``except ValueError`` keeps working.

    Which type the caller gets:

    - an exception that pickles (its class importable in the caller, or defined in the
      script; its attributes picklable) arrives as an instance of both its own type and
      RemoteError, with its ``args`` and attributes, whatever its ``__init__`` takes: it is
      rebuilt from its class, ``args`` and ``__dict__`` without calling ``__init__`` (classes
      with their own ``__reduce__`` pickle their own way);
    - one that does not (an attribute holding a lock or socket, a class the caller cannot
      import) arrives as a plain RemoteError: ``cause`` is None, and ``type_name``, the
      message and ``remote_traceback`` still say what was raised;
    - one whose type cannot be mixed with RemoteError (a final type, a layout conflict)
      arrives as a plain RemoteError whose ``cause`` is the original exception.
    """

    cause: BaseException | None
    type_name: str
    message: str
    remote_traceback: str
    where: str

    def __init__(
        self,
        type_name: str,
        message: str,
        remote_traceback: str,
        where: str,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(type_name, message)
        _fill(self, type_name, message, remote_traceback, where, cause)

    def __str__(self) -> str:
        return (
            f"{self.type_name}: {self.message}\n\n"
            f"Raised in {self.where}. Remote traceback:\n{self.remote_traceback.rstrip()}"
        )

    def __reduce__(self) -> Any:
        cause = None if self.cause is None else portable(self.cause)
        return (
            _rebuild_remote_error,
            (self.type_name, self.message, self.remote_traceback, self.where, cause),
        )

    def as_instance_of_cause(self) -> RemoteError:
        """Return an equivalent error that is also an instance of the original type.

        The original is ``self.cause``, or, when the cause is itself a RemoteError (an error
        re-raised by a task that got it from another task), the first cause down that chain
        that is not: ``except ValueError`` catches a ValueError raised any number of hops away.
        """
        original = self.cause
        while isinstance(original, RemoteError):
            original = original.cause
        if not isinstance(original, Exception):
            return self
        sub = _subclass_for(type(original))
        if sub is None:
            return self
        try:
            err: RemoteError = sub.__new__(sub)
            err.args = original.args
            err.__dict__.update(getattr(original, "__dict__", {}))
        except Exception:
            return self
        _fill(err, self.type_name, self.message, self.remote_traceback, self.where, self.cause)
        return err


def _fill(
    err: RemoteError,
    type_name: str,
    message: str,
    remote_traceback: str,
    where: str,
    cause: BaseException | None,
) -> None:
    err.type_name = type_name
    err.message = message
    err.remote_traceback = remote_traceback
    err.where = where
    err.cause = cause


def _rebuild_remote_error(
    type_name: str, message: str, tb: str, where: str, cause: BaseException | None
) -> RemoteError:
    return RemoteError(type_name, message, tb, where, cause).as_instance_of_cause()


def portable(exc: BaseException) -> object:
    """What to pickle to send ``exc`` to another process: a stand-in that unpickles as ``exc``
    rebuilt from its class, ``args`` and ``__dict__`` without calling its ``__init__``, or
    ``exc`` itself when its class pickles its own way (its own ``__reduce__``,
    ``__reduce_ex__`` or ``__setstate__``, as OSError has).

    The default pickling of exceptions calls ``cls(*args)``, which fails for any class whose
    ``__init__`` takes other arguments than it passes to ``Exception.__init__`` (say
    ``__init__(self, account, needed)`` with a formatted message): such errors would arrive
    without their type. The stand-in carries the same parts and never calls ``__init__``.
    """
    cls = type(exc)
    if (
        cls.__reduce__ is BaseException.__reduce__
        and cls.__reduce_ex__ is BaseException.__reduce_ex__
        and cls.__setstate__ is BaseException.__setstate__
    ):
        return _PortableException(exc)
    return exc


class _PortableException:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> Any:
        exc = self.exc
        return _rebuild_exception, (type(exc), exc.args, getattr(exc, "__dict__", None) or None)


def _rebuild_exception(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any] | None
) -> BaseException:
    try:
        exc = cls.__new__(cls, *args)  # sets args; C-level fields too (OSError's errno)
    except Exception:
        exc = cls.__new__(cls)
    exc.args = args
    if state:
        exc.__dict__.update(state)
    return exc


_subclasses: dict[type[BaseException], type[RemoteError] | None] = {}
_subclasses_lock = threading.Lock()


def _subclass_for(cls: type[BaseException]) -> type[RemoteError] | None:
    # One dynamic subclass per original type, so isinstance checks and pickling stay cheap.
    with _subclasses_lock:
        if cls in _subclasses:
            return _subclasses[cls]
        try:
            sub: type[RemoteError] | None = type(
                f"RemoteError[{cls.__qualname__}]",
                (RemoteError, cls),
                {"__module__": "actorgrid", "__init__": RemoteError.__init__},
            )
        except TypeError:
            sub = None  # final types and instance lay-out conflicts cannot be mixed in
        _subclasses[cls] = sub
        return sub


class ActorDiedError(ActorgridError):
    """The actor a call or message was meant for is no longer alive."""


class WorkerDiedError(ActorgridError):
    """The worker process running a task exited before it returned a result."""


class TaskCancelledError(ActorgridError):
    """The task was cancelled with ``ag.cancel()`` before it produced a result."""


class ObjectLostError(ActorgridError):
    """The value of an ObjectRef can no longer be had: the process that owns it (the one that
    called ``ag.put`` or submitted the task) died, or the object was freed. ``object_id`` and
    ``owner`` (the owner's address) name it."""

    def __init__(self, message: str, object_id: bytes = b"", owner: str = "") -> None:
        super().__init__(message)
        self.object_id = object_id
        self.owner = owner

    def __reduce__(self) -> Any:
        return type(self), (str(self), self.object_id, self.owner)


class GetTimeoutError(ActorgridError, TimeoutError):
    """``ag.get`` or ``ag.ask`` waited longer than its ``timeout``."""


class SerializationError(ActorgridError, TypeError):
    """A value could not be serialized to be sent, or deserialized where it arrived."""


class NameNotFoundError(ActorgridError, LookupError):
    """No live actor is registered under the requested name."""


class NotInitializedError(ActorgridError, RuntimeError):
    """An API call needs a cluster, but ``ag.init()`` or ``ag.connect()`` has not run."""


class NoWorkerError(ActorgridError):
    """No worker can take the call now: none is connected, every one is suspended, or none
    offers the resources asked for. The message says which, and what to do."""


class RuntimeEnvError(ActorgridError):
    """A ``runtime_env`` could not be made ready: a folder too big or missing, a package
    that did not arrive, or a ``worker_setup``/``node_setup`` hook that raised (the message
    names the hook and the node, with the hook's traceback)."""


class AuthenticationError(ActorgridError, ConnectionError):
    """A peer failed the handshake: it does not hold the same cluster secret."""


class ProtocolError(ActorgridError, ConnectionError):
    """A peer sent malformed, truncated, oversized or out-of-place data."""


def unwrap_group(exc: BaseException) -> BaseException:
    """The single error inside nested one-member exception groups, else ``exc`` itself.

    Nurseries wrap errors in groups; at the API boundary a lone error is shown as itself.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
