"""Arguments checked against the callee's signature at ``.remote()``, before anything is sent.

A call that could never bind (a missing or unexpected argument) fails in the caller with a
TypeError that names the function and shows its signature, as calling it locally would, instead
of failing on a worker (and, for an actor that restarts, failing again on every restart).

Costs: the signature is computed once per function or method (``CallCheck`` is built when the
function is made remote, ``MethodChecks`` fills itself on an actor class's first call of each
method). Per call, positional-only calls to a function with no required keyword-only
parameter cost a length comparison; calls with keywords pay ``inspect.Signature.bind``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

__all__ = ["CallCheck", "MethodChecks", "call_check"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class _Text(str):
    """A string annotation shown bare (``a: int``), not quoted (``a: 'int'``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


class CallCheck:
    """The signature of one callee, minus the parameters the runtime passes (self, ctx)."""

    __slots__ = (
        "_fast_max",
        "_fast_min",
        "_label",
        "_position",
        "_required",
        "_signature",
        "_var_keyword",
    )

    def __init__(self, label: str, signature: inspect.Signature) -> None:
        self._label = label
        self._signature = signature
        params = list(signature.parameters.values())
        positional = [p for p in params if p.kind in _POSITIONAL]
        required_keyword = any(
            p.kind == inspect.Parameter.KEYWORD_ONLY and p.default is p.empty for p in params
        )
        varargs = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params)
        # Calls without keywords whose argument count lies in [min, max] always bind.
        self._fast_min = (
            math.inf if required_keyword else sum(1 for p in positional if p.default is p.empty)
        )
        self._fast_max = math.inf if varargs else len(positional)
        # For calls with keywords: where each name may be passed (its position, or infinity
        # for keyword-only), and the required parameters as (position, name).
        self._position = {
            p.name: (i if p.kind in _POSITIONAL else math.inf)
            for i, p in enumerate(params)
            if p.kind != inspect.Parameter.POSITIONAL_ONLY
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }
        self._required = [
            # A positional-only one cannot be given by name (None is never in kwargs).
            (
                i if p.kind in _POSITIONAL else math.inf,
                None if p.kind == inspect.Parameter.POSITIONAL_ONLY else p.name,
            )
            for i, p in enumerate(params)
            if p.default is p.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        self._var_keyword = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)

    def __repr__(self) -> str:
        return f"<CallCheck {self._label}{self._signature}>"

    @property
    def text(self) -> str:
        """The signature as users read it: ``add(a: int, b: int) -> int``."""
        return f"{self._label}{self._signature}"

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError, naming the callee and its signature, if the call cannot bind."""
        n = len(args)
        if not kwargs:
            if self._fast_min <= n <= self._fast_max:
                return
        elif self._binds_with_keywords(n, kwargs):
            return
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"{self._label}.remote() was called with arguments that do not match "
                f"{self.text}: {exc}. Pass the arguments {self._label} takes; nothing was sent."
            ) from None

    def _binds_with_keywords(self, n: int, kwargs: dict[str, Any]) -> bool:
        """True if ``n`` positional arguments and ``kwargs`` surely bind (False: ask bind)."""
        if n > self._fast_max:
            return False
        position = self._position
        for name in kwargs:
            at = position.get(name)
            if at is None:
                if not self._var_keyword:
                    return False
            elif at < n:
                return False  # given twice
        return all(at < n or name in kwargs for at, name in self._required)


def call_check(label: str, fn: Callable[..., Any], skip: int = 0) -> CallCheck | None:
    """The check for calls of ``fn``, leaving out its first ``skip`` parameters; None for a
    callable without a signature (some builtins), whose calls are not checked."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [
        p.replace(annotation=_Text(p.annotation)) if isinstance(p.annotation, str) else p
        for p in list(signature.parameters.values())[skip:]
    ]
    returns = signature.return_annotation
    if isinstance(fn, type):
        returns = inspect.Signature.empty  # a constructor's "-> None" is not what it returns
    elif isinstance(returns, str):
        returns = _Text(returns)
    return CallCheck(label, signature.replace(parameters=params, return_annotation=returns))


class MethodChecks(dict[str, "CallCheck | None"]):
    """An actor class's method checks, by method name, each computed on first use."""

    __slots__ = ("_cls",)

    def __init__(self, cls: type) -> None:
        super().__init__()
        self._cls = cls

    def __missing__(self, name: str) -> CallCheck | None:
        cls = self._cls
        try:
            static = inspect.getattr_static(cls, name)
            fn = getattr(cls, name)
        except AttributeError:
            check = None  # the call fails on the actor with the runtime's own error
        else:
            bound = isinstance(static, (staticmethod, classmethod))
            check = call_check(f"{cls.__qualname__}.{name}", fn, skip=0 if bound else 1)
        self[name] = check
        return check
