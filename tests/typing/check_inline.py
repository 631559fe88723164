"""``@ag.method(inline=True)`` keeps a method's signature as callers type it: checked by mypy
(strict), never run. Each ``# type: ignore[...]`` marks a call mypy must reject."""

from __future__ import annotations

from typing import assert_type

import actorgrid as ag


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    @ag.method(inline=True)
    def incr(self, k: int = 1) -> int:
        self.n += k
        return self.n


Counter = ag.remote(_Counter)


def inline_methods() -> None:
    counter = Counter.remote()
    assert_type(counter.incr.remote(2), ag.ObjectRef[int])
    counter.incr.remote("two")  # type: ignore[arg-type]
    assert_type(_Counter().incr(3), int)  # still a plain method where it is defined
