"""Which ``.remote()`` calls go unanswered (``_runtime/quiet.py``): only one made straight
from Python code as a statement, whose value nothing can ever read. Any form that keeps the
ref, even for a moment, or hands ``.remote`` to other code, is answered as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from actorgrid._runtime.quiet import result_discarded


class _Method:
    """Stands in for ActorMethod: its ``remote`` asks what ``ActorMethod.remote`` asks."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def remote(self, *args: Any, **kwargs: Any) -> int:
        self.seen.append(result_discarded())
        return len(self.seen)


class _Handle:
    def __init__(self) -> None:
        self.hop = _Method()


def _statement(h: _Handle) -> None:
    h.hop.remote(1, "done", last=3)


def _statement_with_sum(h: _Handle, n: int) -> None:
    h.hop.remote(n + 1, n * 2)


def _statement_in_a_loop(h: _Handle) -> None:
    for i in range(3):
        h.hop.remote(i)


def _kept(h: _Handle) -> Any:
    ref = h.hop.remote(1)
    return ref


def _returned(h: _Handle) -> Any:
    return h.hop.remote(1)


def _listed(h: _Handle) -> Any:
    return [h.hop.remote(i) for i in range(2)]


def _passed_on(h: _Handle) -> None:
    print(h.hop.remote(1), end="")


def _through_c_code(h: _Handle) -> Any:
    refs: list[int] = []
    refs.extend(map(h.hop.remote, range(2)))  # C code calls .remote and keeps the refs
    return refs


def _nested_call_argument(h: _Handle) -> None:
    h.hop.remote(len("ab"))  # conservative: another call among its arguments


def _conditional_argument(h: _Handle, flag: bool) -> None:
    h.hop.remote(1 if flag else 2)  # conservative: a jump among its arguments


@pytest.mark.parametrize(
    ("site", "dropped"),
    [
        (_statement, [True]),
        (lambda h: _statement_with_sum(h, 4), [True]),
        (_statement_in_a_loop, [True, True, True]),
        (_kept, [False]),
        (_returned, [False]),
        (_listed, [False, False]),
        (_passed_on, [False]),
        (_through_c_code, [False, False]),
        (_nested_call_argument, [False]),
        (lambda h: _conditional_argument(h, True), [False]),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_only_a_statement_call_of_remote_drops_its_value(
    site: Callable[[_Handle], Any], dropped: list[bool], capsys: pytest.CaptureFixture[str]
) -> None:
    handle = _Handle()
    for _ in range(2):  # the second time from the cache of call sites
        handle.hop.seen.clear()
        site(handle)
        assert handle.hop.seen == dropped
