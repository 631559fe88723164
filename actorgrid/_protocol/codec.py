"""One cattrs converter turns messages into msgpack envelopes and back.

A frame body is ``[u32 envelope length][envelope][buffer 0][buffer 1]...``: the envelope is the
msgpack form of the message, tagged with its class name, and each :class:`Payload` in it lists
the lengths of its out-of-band buffers, whose bytes follow the envelope unchanged. Large arrays
are therefore never copied into msgpack, and on the receiving side they are views into the
frame's own buffer.

The envelope is a tagged union (``{"t": <class name>, ...fields}``), dispatched here rather
than by cattrs' ``configure_tagged_union``, which generates the hooks of every message class
when the module loads (~150 classes, tens of ms of every process start). Here a class's hooks
are generated on its first use and kept: the same wire form, the same generated code.

The hottest messages (calls, results, mailbox messages) are msgpack arrays instead, packed and
checked by hand (``hotcodec.py``); ``decode`` tells the forms apart by the envelope's type.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import cattrs
import msgpack

from .._exceptions import ProtocolError
from .compact import register_compact_hooks
from .hotcodec import decode_positional, encode_positional
from .messages import MESSAGE_TYPES, Message, Payload

__all__ = ["ENVELOPE_LENGTH", "decode", "encode", "prepare"]

ENVELOPE_LENGTH = struct.Struct("!I")  # a frame body starts with its envelope's length

_converter = cattrs.Converter(detailed_validation=False)
_state = threading.local()


def _unstructure_payload(p: Payload) -> list[Any]:
    sink: list[memoryview] = _state.sink
    sink.extend(p.buffers)
    return [p.data, [b.nbytes for b in p.buffers]]


def _structure_payload(obj: Any, _: Any) -> Payload:
    data, lengths = obj
    if not isinstance(data, bytes):
        raise ProtocolError("payload data is not bytes")
    body: memoryview = _state.body
    buffers = []
    for n in lengths:
        if not isinstance(n, int) or n < 0 or _state.offset + n > body.nbytes:
            raise ProtocolError("payload buffers run past the end of the frame")
        buffers.append(body[_state.offset : _state.offset + n])
        _state.offset += n
    return Payload(data, tuple(buffers))


_converter.register_unstructure_hook(Payload, _unstructure_payload)
_converter.register_structure_hook(Payload, _structure_payload)
register_compact_hooks(_converter)  # ActorInfo as a list: compact.py

# Per class, built on first use. Two threads building one at once store equal hooks.
_unstructure_hooks: dict[type, Callable[[Any], dict[str, Any]]] = {}
_structure_hooks: dict[str, tuple[Callable[[Any, type], Any], type]] = {}
_CLASS_OF_TAG: dict[str, type] = {cls.__name__: cls for cls in MESSAGE_TYPES}


def _unstructure_message(message: Any) -> dict[str, Any]:
    cls = message.__class__
    hook = _unstructure_hooks.get(cls)
    if hook is None:
        hook = _unstructure_hooks[cls] = _converter.get_unstructure_hook(cls)
    out = hook(message)
    out["t"] = cls.__name__
    return out


def _structure_message(obj: Any, _: Any) -> Any:
    tag = obj["t"]
    entry = _structure_hooks.get(tag)
    if entry is None:
        cls = _CLASS_OF_TAG[tag]
        entry = _structure_hooks[tag] = (_converter.get_structure_hook(cls), cls)
    hook, cls = entry
    return hook(obj, cls)


def prepare(*types: type) -> None:
    """Build the hooks of the message classes ``types`` now rather than at their first use
    (0.3-0.5 ms a class and direction, several ms on a loaded machine): a process that forks
    workers builds those that every worker uses, once for all of them (templateproc.py)."""
    for cls in types:
        if cls not in _unstructure_hooks:
            _unstructure_hooks[cls] = _converter.get_unstructure_hook(cls)
        if cls.__name__ not in _structure_hooks:
            _structure_hooks[cls.__name__] = (_converter.get_structure_hook(cls), cls)


# Fields typed as the whole union (a message inside a message) go through the same dispatch.
_converter.register_unstructure_hook(Message, _unstructure_message)
_converter.register_structure_hook(Message, _structure_message)


def _new_packer() -> msgpack.Packer:
    # One per thread (encode runs on the loop and on callers' threads): msgpack.packb builds
    # a Packer per call, a third of an envelope's packing time. A pack that raises leaves
    # the packer empty (msgpack resets its buffer), so it is reused as is.
    packer = _state.packer = msgpack.Packer(use_bin_type=True)
    return packer


def encode(message: Message) -> list[bytes | memoryview]:
    """Return the frame body of ``message`` as parts to be written back to back."""
    if type(message) not in _KNOWN:
        raise TypeError(f"{type(message).__name__} is not a wire message")
    sink: list[memoryview] = []
    packer = getattr(_state, "packer", None) or _new_packer()
    positional = encode_positional(message, sink)
    if positional is not None:
        envelope = packer.pack(positional)
        return [ENVELOPE_LENGTH.pack(len(envelope)), envelope, *sink]
    _state.sink = sink
    try:
        envelope = packer.pack(_unstructure_message(message))
    finally:
        _state.sink = None
    return [ENVELOPE_LENGTH.pack(len(envelope)), envelope, *sink]


def decode(body: bytes | bytearray | memoryview) -> Message:
    """Parse one frame body. Any malformed input raises ProtocolError, nothing else."""
    view = memoryview(body)
    if view.nbytes < ENVELOPE_LENGTH.size:
        raise ProtocolError(f"frame of {view.nbytes} bytes is too short to hold an envelope")
    (env_len,) = ENVELOPE_LENGTH.unpack_from(view)
    end = ENVELOPE_LENGTH.size + env_len
    if end > view.nbytes:
        raise ProtocolError("envelope length runs past the end of the frame")
    try:
        obj = msgpack.unpackb(view[ENVELOPE_LENGTH.size : end], raw=False, use_list=False)
    except Exception as exc:
        raise ProtocolError(f"frame envelope is not valid msgpack: {exc}") from None
    if type(obj) is tuple:  # the hottest messages: hotcodec.py
        return decode_positional(obj, view, end)  # type: ignore[no-any-return]
    # The tag is checked to be a str first: a map or list tag is unhashable, and a set lookup
    # with it would raise TypeError instead of ProtocolError.
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str) or obj["t"] not in _TAGS:
        raise ProtocolError(f"frame envelope is not a known message: tag {_tag_of(obj)!r}")
    _state.body = view
    _state.offset = end
    try:
        message: Message = _structure_message(obj, None)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed {obj['t']} message: {exc!r}") from None
    finally:
        _state.body = None
    if _state.offset != view.nbytes:
        raise ProtocolError("frame has trailing bytes after its payload buffers")
    return message


def _tag_of(obj: Any) -> Any:
    return obj.get("t") if isinstance(obj, dict) else type(obj).__name__


_KNOWN = frozenset(MESSAGE_TYPES)
_TAGS = frozenset(cls.__name__ for cls in MESSAGE_TYPES)
