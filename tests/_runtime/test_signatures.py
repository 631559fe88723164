"""The call-site argument check agrees with ``inspect.Signature.bind`` on every call shape
(its fast paths must never accept a call that cannot bind, nor refuse one that can)."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import pytest

from actorgrid._runtime.signatures import MethodChecks, call_check


def plain(a, b=1): ...
def mixed(a, /, b, *, c, **kw): ...
def star(a, *args, b=2, c): ...
def only_positional(a, /, b=3, **kw): ...
def nothing(): ...


@pytest.mark.parametrize("fn", [plain, mixed, star, only_positional, nothing])
def test_check_agrees_with_bind(fn: Any) -> None:
    check = call_check(fn.__name__, fn)
    assert check is not None
    signature = inspect.signature(fn)
    names = ["a", "b", "c", "d"]
    for count in range(5):
        for keys in itertools.chain.from_iterable(
            itertools.combinations(names, r) for r in range(len(names) + 1)
        ):
            args, kwargs = tuple(range(count)), dict.fromkeys(keys, 0)
            try:
                signature.bind(*args, **kwargs)
                binds = True
            except TypeError:
                binds = False
            try:
                check.check(args, kwargs)
                passes = True
            except TypeError as exc:
                passes = False
                assert f"{fn.__name__}{signature}" in str(exc)
            assert binds == passes, (fn.__name__, args, kwargs)


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, k: int = 1) -> int:
        return k

    @staticmethod
    def twice(x: int) -> int:
        return 2 * x


def test_method_checks_leave_out_self_and_are_computed_once() -> None:
    checks = MethodChecks(Counter)
    incr = checks["incr"]
    assert incr is not None and incr.text == "Counter.incr(k: int = 1) -> int"
    assert checks["incr"] is incr
    twice = checks["twice"]
    assert twice is not None and twice.text == "Counter.twice(x: int) -> int"
    assert checks["missing"] is None
    constructor = call_check("Counter", Counter)
    assert constructor is not None and constructor.text == "Counter(start: int = 0)"
