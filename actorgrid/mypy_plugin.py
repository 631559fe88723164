"""A mypy plugin that types actor calls: enable it with ``plugins = ["actorgrid.mypy_plugin"]``
in ``[tool.mypy]`` (or ``[mypy]`` in mypy.ini).

Without it, ``@ag.remote`` functions are typed already (ParamSpec: ``f.remote(...)`` is checked
and returns ``ObjectRef[R]``, ``ag.get`` and ``await`` give ``R``). Actor classes need what
plain typing cannot say, so the plugin adds:

- ``handle.method`` on an ``ActorHandle[C]`` is ``ActorMethod[P, R]`` from ``C.method``'s
  signature (``self`` left out; ``R`` is what an ``async def`` method returns when awaited), so
  ``handle.method.remote(...)`` is checked and returns ``ObjectRef[R]``; a name ``C`` has no
  method for is an ``attr-defined`` error, as it is at run time;
- ``Cls.remote(...)`` on an ``ActorClass[C]`` is checked against ``C``'s constructor;
- a class decorated with ``@ag.remote`` (or ``@ag.remote(...)``) gets ``remote`` and ``options``
  on the class, typed as above (mypy otherwise ignores what a class decorator returns);
- ``.remote(...)`` of a generator function or generator method (one returning ``Iterator[Y]``,
  ``Generator[Y, ...]``, ``AsyncIterator[Y]`` or ``AsyncGenerator[Y, ...]``) returns
  ``ObjectRefGenerator[Y]``, as it does at run time.

Handles of unknown class (``ActorHandle[Any]``, from ``ag.get_actor``) stay unchecked.
This module imports mypy; the runtime never imports it.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy import errorcodes as codes
from mypy.nodes import ARG_STAR, ARG_STAR2, ArgKind, Argument, FuncDef, MemberExpr, TypeInfo, Var
from mypy.plugin import (
    AttributeContext,
    ClassDefContext,
    MethodContext,
    MethodSigContext,
    Plugin,
)
from mypy.plugins.common import add_method_to_class
from mypy.subtypes import find_member
from mypy.typeops import type_object_type
from mypy.types import (
    AnyType,
    CallableType,
    FunctionLike,
    Instance,
    Parameters,
    Type,
    TypeOfAny,
    get_proper_type,
)

__all__ = ["ActorgridPlugin", "plugin"]

_HANDLE = "actorgrid._runtime.handles.ActorHandle"
_ACTOR_CLASS = "actorgrid._runtime.remote.ActorClass"
_REMOTE = "actorgrid._runtime.remote.remote"
_COROUTINE = "typing.Coroutine"
_FUNCTION_REMOTE = "actorgrid._runtime.remote.RemoteFunction.remote"
_METHOD_REMOTE = "actorgrid._runtime.handles.ActorMethod.remote"
_REF_GENERATOR = "actorgrid.ObjectRefGenerator"
# What a generator function or async generator function is declared to return.
_GENERATOR_TYPES = frozenset(
    {
        "typing.Iterator",
        "typing.Generator",
        "typing.AsyncIterator",
        "typing.AsyncGenerator",
        "collections.abc.Iterator",
        "collections.abc.Generator",
        "collections.abc.AsyncIterator",
        "collections.abc.AsyncGenerator",
    }
)


class ActorgridPlugin(Plugin):
    """Types ``handle.method``, ``Cls.remote(...)`` and ``@ag.remote`` classes."""

    def get_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        # Called for names ActorHandle does not define itself (it has __getattr__).
        if fullname.startswith(_HANDLE + "."):
            return _actor_method
        return None

    def get_method_signature_hook(
        self, fullname: str
    ) -> Callable[[MethodSigContext], FunctionLike] | None:
        if fullname == _ACTOR_CLASS + ".remote":
            return _constructor_signature
        return None

    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        if fullname in (_FUNCTION_REMOTE, _METHOD_REMOTE):
            return _stream_of_generator
        return None

    def get_class_decorator_hook_2(self, fullname: str) -> Callable[[ClassDefContext], bool] | None:
        if fullname == _REMOTE:
            return _add_remote_to_class
        return None


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return ActorgridPlugin


def _actor_class_of(typ: Type, fullname: str) -> Instance | None:
    """``C`` of an ``ActorHandle[C]`` or ``ActorClass[C]``, if it is a known class."""
    proper = get_proper_type(typ)
    if not isinstance(proper, Instance) or proper.type.fullname != fullname or not proper.args:
        return None
    actor = get_proper_type(proper.args[0])
    return actor if isinstance(actor, Instance) else None


def _actor_method(ctx: AttributeContext) -> Type:
    actor = _actor_class_of(ctx.type, _HANDLE)
    default = get_proper_type(ctx.default_attr_type)
    if actor is None or not isinstance(default, Instance):
        return ctx.default_attr_type
    if not isinstance(ctx.context, MemberExpr):
        return ctx.default_attr_type
    name = ctx.context.name
    member = find_member(name, actor, actor)
    method = get_proper_type(member) if member is not None else None
    if not isinstance(method, CallableType) or name.startswith("_"):
        if member is None or name.startswith("_"):
            ctx.api.fail(
                f'Actor class "{actor.type.name}" has no method "{name}" to call remotely',
                ctx.context,
                code=codes.ATTR_DEFINED,
            )
        return AnyType(TypeOfAny.from_error) if member is None else ctx.default_attr_type
    if method.variables:
        return ctx.default_attr_type  # a generic method: left unchecked
    returns = get_proper_type(method.ret_type)
    if isinstance(returns, Instance) and returns.type.fullname == _COROUTINE:
        result: Type = returns.args[2]  # an async method: its call gives what it returns
    else:
        result = method.ret_type
    params = Parameters(method.arg_types, method.arg_kinds, method.arg_names)
    return default.copy_modified(args=[params, result])


def _stream_of_generator(ctx: MethodContext) -> Type:
    """``ObjectRef[Iterator[Y]]`` (a generator's ``.remote()``) becomes
    ``ObjectRefGenerator[Y]``."""
    ref = get_proper_type(ctx.default_return_type)
    if not isinstance(ref, Instance) or not ref.args:
        return ctx.default_return_type
    value = get_proper_type(ref.args[0])
    if not isinstance(value, Instance) or value.type.fullname not in _GENERATOR_TYPES:
        return ctx.default_return_type
    if not value.args:
        return ctx.default_return_type
    try:
        return ctx.api.named_generic_type(_REF_GENERATOR, [value.args[0]])
    except AssertionError:  # mypy's lookup: actorgrid itself is not in this build
        return ctx.default_return_type


def _constructor_signature(ctx: MethodSigContext) -> FunctionLike:
    actor = _actor_class_of(ctx.type, _ACTOR_CLASS)
    if actor is None:
        return ctx.default_signature
    api = ctx.api
    constructor = get_proper_type(
        type_object_type(actor.type, lambda name: api.named_generic_type(name, []))
    )
    if not isinstance(constructor, CallableType) or constructor.variables:
        return ctx.default_signature
    return ctx.default_signature.copy_modified(
        arg_types=constructor.arg_types,
        arg_kinds=constructor.arg_kinds,
        arg_names=constructor.arg_names,
    )


def _add_remote_to_class(ctx: ClassDefContext) -> bool:
    """``@ag.remote class C``: give ``C`` the ``remote`` and ``options`` of ``ActorClass[C]``."""
    info = ctx.cls.info
    handle = ctx.api.lookup_fully_qualified_or_none(_HANDLE)
    actor_class = ctx.api.lookup_fully_qualified_or_none(_ACTOR_CLASS)
    if handle is None or actor_class is None:
        return True
    if not isinstance(handle.node, TypeInfo) or not isinstance(actor_class.node, TypeInfo):
        return True
    itself = Instance(info, [AnyType(TypeOfAny.special_form)] * len(info.defn.type_vars))
    add_method_to_class(
        ctx.api,
        ctx.cls,
        "remote",
        _constructor_arguments(info),
        Instance(handle.node, [itself]),
        is_classmethod=True,
    )
    any_options = _any_arguments("options", ARG_STAR2)
    add_method_to_class(
        ctx.api,
        ctx.cls,
        "options",
        [any_options],
        Instance(actor_class.node, [itself]),
        is_classmethod=True,
    )
    return True


def _constructor_arguments(info: TypeInfo) -> list[Argument]:
    """The parameters of ``info``'s ``__init__`` after ``self``, with their declared types."""
    init = info.get_method("__init__")
    if not isinstance(init, FuncDef):
        return [_any_arguments("args", ARG_STAR), _any_arguments("kwargs", ARG_STAR2)]
    signature = get_proper_type(init.type) if init.type is not None else None
    copied = []
    for i, arg in enumerate(init.arguments[1:], start=1):
        if isinstance(signature, CallableType) and i < len(signature.arg_types):
            annotation: Type = signature.arg_types[i]
        else:
            annotation = AnyType(TypeOfAny.unannotated)
        copied.append(
            Argument(Var(arg.variable.name, annotation), annotation, arg.initializer, arg.kind)
        )
    return copied


def _any_arguments(name: str, kind: ArgKind) -> Argument:
    return Argument(Var(name, AnyType(TypeOfAny.explicit)), AnyType(TypeOfAny.explicit), None, kind)
