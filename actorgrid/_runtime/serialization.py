"""User values to Payloads and back: cloudpickle, pickle protocol 5, out-of-band buffers.

Errors travel boxed: a RemoteError's text parts (type name, message, traceback, where) are
always readable by the caller, and the original exception object rides along separately, so a
cause whose class cannot be loaded on the caller still gives a useful RemoteError.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import mmap
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from .._exceptions import RemoteError, SerializationError, portable
from .._protocol.messages import Payload
from .segments import INLINE_BYTES, place, shared_source

__all__ = [
    "NO_ARGS",
    "box_error",
    "dumps",
    "dumps_call",
    "dumps_code",
    "dumps_result",
    "loads",
    "loads_error",
    "system_error",
]

_EMPTY = Payload(b"")
# The arguments of every call that passes none, pickled once: the bytes dumps_call makes for
# ((), {}) (immutable, and small: never placed in the store).
NO_ARGS = Payload(pickle.dumps(((), {}), protocol=5))


# Values made only of these are pickled by the C pickler directly: the bytes are the same as
# cloudpickle's, without building a CloudPickler per call.
_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})


def _plain(value: Any) -> bool:
    t = type(value)
    if t in _SCALARS:
        return t is not bytes or len(value) < INLINE_BYTES
    if t is tuple or t is list:
        return all(_plain_scalar(v) for v in value)
    if t is dict:
        return all(_plain_scalar(v) for v in value.values())
    return False


def _plain_scalar(v: Any) -> bool:
    t = type(v)
    return t in _SCALARS and (t is not bytes or len(v) < INLINE_BYTES)


class _OutOfBand:
    """A large ``bytes`` or ``bytearray`` pickled as an out-of-band buffer: pickle writes
    both in the pickle data itself (a copy, then another into the object store), while an
    out-of-band buffer is written once, straight from the value, into the store. It loads as
    the same type: a large ``bytes`` as the store's own pages (``load_bytes``), a
    ``bytearray`` with one copy out of the store's mapping."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        if type(self.value) is bytes:
            return load_bytes, (pickle.PickleBuffer(self.value),)
        return type(self.value), (pickle.PickleBuffer(self.value),)


def _bytes_calls() -> tuple[Callable[..., Any], ...] | None:
    """On Linux CPython: (madvise, PyBytes_FromStringAndSize, PyBytes_AsString) for
    :func:`load_bytes`; None elsewhere."""
    if sys.platform != "linux" or sys.implementation.name != "cpython":
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
        new.restype = ctypes.py_object
        address_of = ctypes.pythonapi.PyBytes_AsString
        address_of.argtypes = (ctypes.py_object,)
        address_of.restype = ctypes.c_void_p
        mmap.MADV_HUGEPAGE  # noqa: B018 (missing on kernels without transparent huge pages)
    except (AttributeError, OSError):
        return None
    return madvise, new, address_of


_HUGE_BYTES = 4 << 20  # smaller values are loaded plainly (few pages: few faults)
_calls = _bytes_calls()


@functools.cache
def _mmap_call() -> Callable[..., Any] | None:
    """libc's mmap, when a large bytes object's memory is known to be a mapping of its own
    that ``free`` unmaps whole: glibc's malloc, not replaced (LD_PRELOAD) nor wrapped by
    Python's debug allocators, nor mimalloc's pages (free-threaded builds); None otherwise
    (values are copied). Found on first use: nothing at import."""
    if _calls is None or sys.flags.dev_mode or "t" in getattr(sys, "abiflags", ""):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError):
        return None
    if os.environ.get("PYTHONMALLOC", "") not in ("", "pymalloc", "malloc"):
        return None
    try:
        here, libc = ctypes.CDLL(None), ctypes.CDLL("libc.so.6", use_errno=True)
        if (
            ctypes.cast(here.malloc, ctypes.c_void_p).value
            != ctypes.cast(libc.malloc, ctypes.c_void_p).value
        ):
            return None
        call = libc.mmap
    except (AttributeError, OSError):
        return None
    call.restype = ctypes.c_void_p
    call.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int)
    call.argtypes += (ctypes.c_long,)
    return call


_MAP_FIXED = getattr(mmap, "MAP_FIXED", 0x10)  # 0x10: Linux on x86 and ARM
_IS_MMAPPED = 0x2  # glibc: the chunk is a mapping of its own (its size field's bit 1)
_SIZE_BITS = 0x7


def load_bytes(buffer: Any) -> bytes:
    """A large ``bytes`` value loaded from its out-of-band buffer into memory that the kernel
    backs with transparent huge pages (Linux CPython). A fresh 100 MB allocation costs more
    in page faults (one per 4 KB page, each zeroing it) than the copy into it; with 2 MB pages
    they almost vanish (measured: 125 ms of CPU down to 35 ms for 100 MB). The object is made
    the C API's way for a value filled after it is made (``PyBytes_FromStringAndSize(NULL,
    n)``), advised before its first write, then filled; nothing else sees it before that.

    A buffer of an object file this process mapped (``segments.shared_source``) is not
    copied at all where the allocation allows (``_share``): the object's data pages become a
    private mapping of the file's, so a 100 MB value costs one ``mmap`` (measured: ~50 ms of
    CPU down to 0.2 ms), and its pages are faulted in as they are read."""
    view = memoryview(buffer).cast("B")
    n = view.nbytes
    if _calls is None or n < _HUGE_BYTES:
        return bytes(view)
    madvise, new, address_of = _calls
    value: bytes = new(None, n)
    address = int(address_of(value))
    source = shared_source(buffer)
    if source is not None and _share(value, address, view, *source):
        return value
    page = mmap.PAGESIZE
    start = -(-address // page) * page
    madvise(start, (address + n - start) // page * page, mmap.MADV_HUGEPAGE)  # a hint
    memoryview((ctypes.c_char * n).from_address(address)).cast("B")[:] = view
    return value


def _share(value: bytes, address: int, view: memoryview, fd: int, offset: int) -> bool:
    """Fill the new, untouched ``value`` (data at ``address``) with the object file's pages
    instead of a copy: the whole pages of its data become a private (copy-on-write) mapping
    of the file, the partial pages at either end are copied. Its reader holds the file's
    shared lock for as long as that mapping lives, so the store never rewrites those pages
    (a recycled segment is claimed only under the exclusive lock), and ``free`` of the
    object unmaps its whole allocation, this mapping included. False, having written
    nothing, where the allocation is not a mapping of its own (glibc serves one under its
    mmap threshold, which grows up to 32 MiB, from the heap) or the alignment differs (the
    caller copies)."""
    n, page = view.nbytes, mmap.PAGESIZE
    call = _mmap_call()
    if call is None or (address - offset) % page:
        return False
    size = ctypes.c_size_t.from_address(id(value) - ctypes.sizeof(ctypes.c_size_t)).value
    if not size & _IS_MMAPPED or size & ~_SIZE_BITS < n:
        return False
    first = -(-address // page) * page
    last = (address + n) // page * page
    if last - first < page:
        return False
    target = memoryview((ctypes.c_char * n).from_address(address)).cast("B")
    head, tail = first - address, last - address
    target[:head] = view[:head]
    target[tail:] = view[tail:]
    protection = mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_PRIVATE | _MAP_FIXED
    if call(first, last - first, protection, flags, fd, offset + head) == first:
        return True
    # A failed fixed mapping may have unmapped the range: make it plain memory again.
    flags |= mmap.MAP_ANONYMOUS
    if call(first, last - first, protection, flags, -1, 0) != first:
        raise MemoryError(f"could not map {last - first} bytes back into a bytes object")
    return False


_BYTES = (bytes, bytearray)


def _out_of_band(value: Any) -> Any:
    """``value``, or a large bytes value wrapped to be pickled out of band (top level only)."""
    if type(value) in _BYTES and len(value) >= INLINE_BYTES:
        return _OutOfBand(value)
    return value


def dumps(value: Any, *, out_of_band: bool = True) -> Payload:
    if _plain(value):
        return Payload(pickle.dumps(value, protocol=5))
    if out_of_band:
        value = _out_of_band(value)
    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps(
        value, protocol=5, buffer_callback=buffers.append if out_of_band else None
    )
    return Payload(data, tuple(b.raw() for b in buffers))


def dumps_result(value: Any, task_id: bytes | None = None) -> Payload:
    """A task's or method's result: a large one stays in this node's object store (its file
    named after ``task_id``, the result's object id), and its owner adopts the locator
    (``stored.RuntimeStored.adopt_result``) when it arrives."""
    return place(dumps(value), owned=False, object_id=task_id)


def loads(payload: Payload) -> Any:
    return pickle.loads(payload.data, buffers=payload.buffers)


def dumps_call(
    label: str,
    fn: Callable[..., Any] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    skip: int = 0,
    inline: bool = False,
) -> Payload:
    """Serialize call arguments; on failure, name the argument that could not be pickled.

    ``skip`` leading parameters of ``fn`` are not passed by the caller (``self``, ``ctx``).
    Large arguments go to this node's object store unless ``inline``; the caller keeps the
    returned payload for as long as the call may be sent (again), which keeps them there.
    """
    if _plain(args) and _plain(kwargs):
        payload = Payload(pickle.dumps((args, kwargs), protocol=5))
        return payload if inline else place(payload, owned=True)
    try:
        payload = dumps(
            (tuple(map(_out_of_band, args)), {k: _out_of_band(v) for k, v in kwargs.items()})
        )
    except Exception as exc:
        raise SerializationError(
            _describe_bad_argument(label, fn, args, kwargs, exc, skip)
        ) from exc
    return payload if inline else place(payload, owned=True)


def _describe_bad_argument(
    label: str,
    fn: Callable[..., Any] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    exc: Exception,
    skip: int,
) -> str:
    names: list[str] = []
    if fn is not None:
        try:
            names = list(inspect.signature(fn).parameters)[skip:]
        except (TypeError, ValueError):
            names = []
    culprits: list[tuple[int | None, str | None, Any]] = [
        (i, names[i] if i < len(names) else None, a) for i, a in enumerate(args)
    ]
    culprits += [(None, k, v) for k, v in kwargs.items()]
    for position, name, value in culprits:
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as inner:
            where = f"argument {name!r}" if name else "argument"
            if position is not None:
                where += f" (position {position})"
            return (
                f"{where} of {label}() could not be serialized to send it to a worker: "
                f"{type(inner).__name__}: {inner}. Pass a picklable value instead (for "
                "locks, files, sockets and clients, create them inside the task or actor)."
            )
    return f"the arguments of {label}() could not be serialized: {type(exc).__name__}: {exc}"


def dumps_code(obj: Any) -> bytes:
    """Pickle a remote function or actor class to ship it to workers; on failure, a
    SerializationError that names it and the captured variable that could not be pickled."""
    try:
        return cloudpickle.dumps(obj, protocol=5)  # type: ignore[no-any-return]
    except Exception as exc:
        kind = "actor class" if isinstance(obj, type) else "remote function"
        label = getattr(obj, "__qualname__", repr(obj))
        culprit = _unpicklable_capture(obj, label, depth=2)
        if culprit is None:
            raise SerializationError(
                f"{kind} {label} could not be serialized to send it to workers: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        where, value, inner = culprit
        raise SerializationError(
            f"{kind} {label} could not be serialized to send it to workers: {where} holds a "
            f"{_type_name(value)}, which cannot be pickled "
            f"({type(inner).__name__}: {inner}). Create such objects inside the function or "
            "actor (in __init__, for an actor) instead of capturing them, or pass picklable "
            "values as arguments."
        ) from exc


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")


def _unpicklable_capture(obj: Any, label: str, depth: int) -> tuple[str, Any, Exception] | None:
    """What ``obj`` (a function or class) captures that cannot be pickled: a description
    (``variable 'lock' captured by f``), the value and its error; None if nothing is found.
    Looks into captured functions and classes ``depth`` levels deep."""
    for where, value in _captures(obj, label):
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as inner:
            if depth > 0 and (inspect.isfunction(value) or isinstance(value, type)):
                deeper = _unpicklable_capture(
                    value, getattr(value, "__qualname__", where), depth - 1
                )
                if deeper is not None:
                    return deeper
            return where, value, inner
    return None


def _captures(obj: Any, label: str) -> list[tuple[str, Any]]:
    """The values a function or class carries along when pickled by value, described."""
    if isinstance(obj, type):
        found: list[tuple[str, Any]] = []
        for name, member in vars(obj).items():
            if name in ("__dict__", "__weakref__", "__doc__", "__module__", "__qualname__"):
                continue
            inner = getattr(member, "__func__", member)  # staticmethod, classmethod
            if inspect.isfunction(inner):
                found += _captures(inner, f"{label}.{name}")
            elif isinstance(member, property):
                for part in (member.fget, member.fset, member.fdel):
                    if part is not None:
                        found += _captures(part, f"{label}.{name}")
            else:
                found.append((f"class attribute {name!r} of {label}", member))
        found += [(f"base class {base.__qualname__} of {label}", base) for base in obj.__bases__]
        return found
    if not inspect.isfunction(obj):
        return []
    code = obj.__code__
    found = []
    for name, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
        try:
            found.append((f"variable {name!r} captured by {label}", cell.cell_contents))
        except ValueError:
            continue  # an empty cell: nothing to pickle
    names = set(code.co_names)
    for const in code.co_consts:  # names used by nested functions and comprehensions
        if inspect.iscode(const):
            names.update(const.co_names)
    found += [
        (f"global {name!r} used by {label}", obj.__globals__[name])
        for name in sorted(names)
        if name in obj.__globals__
    ]
    for i, default in enumerate(obj.__defaults__ or ()):
        found.append((f"default value {i} of {label}", default))
    for name, default in (obj.__kwdefaults__ or {}).items():
        found.append((f"default value of {name!r} of {label}", default))
    return found


def box_error(exc: BaseException, where: str) -> Payload:
    """Box an exception raised by user code, for the caller to re-raise as RemoteError.

    The exception object itself rides along when it pickles (see ``portable``); then the
    caller's error is also an instance of its type. One that does not (an attribute holding a
    lock, say) leaves the caller a plain RemoteError with its type name, text and traceback.
    """
    tb = "".join(traceback.format_exception(exc))
    try:
        cause: bytes | None = cloudpickle.dumps(portable(exc), protocol=5)
    except Exception:
        cause = None
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    return Payload(pickle.dumps(("user", type_name, str(exc), tb, where, cause), protocol=5))


def system_error(exc: BaseException) -> Payload:
    """Box an error raised by the runtime itself (ActorDiedError, TaskCancelledError...)."""
    return Payload(pickle.dumps(("system", exc), protocol=5))


def loads_error(payload: Payload) -> BaseException:
    """The exception a boxed error stands for, ready to raise in the caller."""
    try:
        box = pickle.loads(payload.data)
    except Exception as exc:
        return SerializationError(f"a remote error could not be deserialized: {exc!r}")
    if box[0] == "system":
        err: BaseException = box[1]
        return err
    _, type_name, message, tb, where, cause_blob = box
    cause = None
    if cause_blob is not None:
        try:
            cause = pickle.loads(cause_blob)
        except Exception:
            cause = None  # the type is not importable here; the text parts still tell the story
    return RemoteError(type_name, message, tb, where, cause).as_instance_of_cause()


EMPTY_PAYLOAD = _EMPTY
