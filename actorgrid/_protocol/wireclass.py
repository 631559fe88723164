"""``@message``: frozen, slotted record classes that cost next to nothing to define.

``attrs.frozen`` compiles an ``__init__``, ``__eq__`` and ``__hash__`` for every class when
its module loads: for the ~100 wire messages that was about a quarter of the CPU time a
process spent importing the runtime (``compile()`` and building each class twice), on the
critical path of every cold start. ``message`` makes the same class for a fraction of that:

- the class is made once, with ``__slots__`` (and ``__weakref__``) for its fields;
- ``__eq__``, ``__hash__``, ``__repr__``, ``__setattr__`` and pickling are shared functions
  that read a class's field names, nothing compiled;
- ``__init__`` is compiled on the class's first instance (most messages are never made in a
  given process), straight-line code that sets each slot, as fast as attrs';
- ``__attrs_attrs__`` (``attrs.Attribute`` records) is built on first use, so
  ``attrs.fields``, ``attrs.evolve``, ``attrs.asdict``, ``attrs.has`` and cattrs treat these
  classes as attrs classes.

Equality, hashing, ``repr`` and ``match`` behave as ``attrs.frozen``'s (fields in order, the
same class on both sides; setting or deleting an attribute raises ``FrozenInstanceError``).
What it does not do, a class that needs it keeps ``attrs.frozen``: fields declared with
``attrs.field`` (validators, converters, factories), inheritance between record classes,
``__attrs_post_init__``. Type checkers see ``attrs.frozen`` itself (its mypy plugin types
the generated ``__init__``).
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

__all__ = ["message"]

T = TypeVar("T")

_FIELDS = "__message_fields__"  # a class's field names, in order
_DEFAULTS = "__message_defaults__"  # the defaults of the trailing fields that have one
_build_lock = threading.Lock()


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise attrs.exceptions.FrozenInstanceError()


def _frozen_delattr(self: Any, name: str) -> None:
    raise attrs.exceptions.FrozenInstanceError()


def _repr(self: Any) -> str:
    cls = self.__class__
    inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in cls.__message_fields__)
    return f"{cls.__qualname__}({inner})"


def _getstate(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in self.__class__.__message_fields__)


def _setstate(self: Any, state: tuple[Any, ...]) -> None:
    for name, value in zip(self.__class__.__message_fields__, state, strict=True):
        object.__setattr__(self, name, value)


def _compare_and_hash(
    fields: tuple[str, ...], salt: int
) -> tuple[Callable[[Any, Any], Any], Callable[[Any], int]]:
    # attrgetter of one name returns the value, of several a tuple: equal either way exactly
    # when attrs' generated ``(self.a, ...) == (other.a, ...)`` is.
    key: Callable[[Any], Any] = operator.attrgetter(*fields) if fields else (lambda _: ())

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return key(self) == key(other)

    def __hash__(self: Any) -> int:
        return hash((salt, key(self)))

    return __eq__, __hash__


def _build_init(cls: type) -> Callable[..., None]:
    """Compile ``cls.__init__``: positional-or-keyword parameters in field order, each slot
    set through its own descriptor (what ``object.__setattr__`` would find, minus the
    lookup)."""
    fields: tuple[str, ...] = getattr(cls, _FIELDS)
    defaults: tuple[Any, ...] = getattr(cls, _DEFAULTS)
    first_default = len(fields) - len(defaults)
    scope: dict[str, Any] = {}
    params = ["self"]
    body = []
    for i, name in enumerate(fields):
        scope[f"_set_{name}"] = cls.__dict__[name].__set__
        if i >= first_default:
            scope[f"_default_{name}"] = defaults[i - first_default]
            params.append(f"{name}=_default_{name}")
        else:
            params.append(name)
        body.append(f"    _set_{name}(self, {name})")
    source = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "    pass") + "\n"
    code = compile(source, f"<message {cls.__module__}.{cls.__qualname__}.__init__>", "exec")
    exec(code, scope)
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _lazy_init(self: Any, *args: Any, **kwargs: Any) -> None:
    # A class's first instance compiles its real __init__ and puts it in this one's place
    # (in the record class's own dict: a plain subclass inherits it from there).
    cls = next(c for c in self.__class__.__mro__ if _FIELDS in c.__dict__)
    with _build_lock:
        if cls.__dict__["__init__"] is _lazy_init:
            type.__setattr__(cls, "__init__", _build_init(cls))
    cls.__dict__["__init__"](self, *args, **kwargs)


class _LazyAttrs:
    """``cls.__attrs_attrs__``, built on first read and then stored in the class."""

    def __get__(self, instance: Any, owner: type) -> Any:
        fields: tuple[str, ...] = getattr(owner, _FIELDS)
        defaults: tuple[Any, ...] = getattr(owner, _DEFAULTS)
        first_default = len(fields) - len(defaults)
        hints = getattr(owner, "__annotations__", {})
        records: list[Any] = [
            attrs.Attribute(  # type: ignore[call-arg]
                name=name,
                default=defaults[i - first_default] if i >= first_default else attrs.NOTHING,
                validator=None,
                repr=True,
                cmp=None,
                hash=None,
                init=True,
                inherited=False,
                type=hints.get(name),
                alias=name,
            )
            for i, name in enumerate(fields)
        ]
        named = type(f"{owner.__name__}Attributes", (tuple,), {"__slots__": ()})
        for i, name in enumerate(fields):
            setattr(named, name, property(operator.itemgetter(i)))
        value = named(records)
        type.__setattr__(owner, "__attrs_attrs__", value)
        return value


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _message(cls: type[T]) -> type[T]:
    namespace = dict(cls.__dict__)
    annotations: dict[str, Any] = namespace.get("__annotations__", {})
    fields = tuple(name for name, hint in annotations.items() if not _is_classvar(hint))
    defaults = []
    for name in fields:
        if name in namespace:
            default = namespace.pop(name)
            if isinstance(default, attrs.Attribute) or type(default).__name__ == "_CountingAttr":
                raise TypeError(f"{cls.__qualname__}.{name}: @message takes plain defaults only")
            defaults.append(default)
        elif defaults:
            raise TypeError(f"{cls.__qualname__}.{name}: a field without a default follows one")
    if any(hasattr(base, _FIELDS) or attrs.has(base) for base in cls.__mro__[1:]):
        raise TypeError(f"{cls.__qualname__}: @message classes do not inherit fields")
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    eq, hash_ = _compare_and_hash(fields, hash(f"{cls.__module__}.{cls.__qualname__}"))
    namespace.update(
        __slots__=(*fields, "__weakref__"),
        __match_args__=fields,
        __message_fields__=fields,
        __message_defaults__=tuple(defaults),
        __attrs_attrs__=_LazyAttrs(),
        __init__=_lazy_init,
        __repr__=_repr,
        __eq__=eq,
        __hash__=hash_,
        __setattr__=_frozen_setattr,
        __delattr__=_frozen_delattr,
        __getstate__=_getstate,
        __setstate__=_setstate,
    )
    metaclass: Any = type(cls)
    made: type[T] = metaclass(cls.__name__, cls.__bases__, namespace)
    made.__qualname__ = cls.__qualname__
    return made


if TYPE_CHECKING:
    from attrs import frozen as message
else:
    message = _message
