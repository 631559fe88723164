"""The worker side of resources: what its tasks and actors hold of the worker's share, and
which GPUs it owns (``ag.get_gpu_ids()``).

The bookkeeping is the pure ``Ledger`` (``_scheduler/ledger.py``); this is its thin shell for
the executor: a task holds its ``resources`` from before it runs until it ends, an actor from
before its constructor until it ends, and whatever does not fit yet waits in arrival order
(the second actor asking for the one camera waits for the first to end). Loop thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping

import trio

from .._scheduler.ledger import Ledger

__all__ = ["Holdings", "get_gpu_ids"]

log = logging.getLogger("actorgrid.runtime")

# The GPUs this process's worker owns (set once, before any user code runs).
_gpu_ids: list[str] = []


def set_gpu_ids(ids: list[str]) -> None:
    _gpu_ids[:] = ids


def get_gpu_ids() -> list[int | str]:
    """The GPUs this task's or actor's worker owns (``CUDA_VISIBLE_DEVICES`` is set to them
    before user code runs), as the node numbers them: ints, or ids as given when they are not
    numbers. Empty in a driver and on a worker without a GPU."""
    return [int(g) if g.isdigit() else g for g in _gpu_ids]


class Holdings:
    def __init__(self, total: Mapping[str, float]) -> None:
        self.ledger = Ledger(total)
        self._waiters: dict[Hashable, Callable[[], None]] = {}

    def __repr__(self) -> str:
        return f"<Holdings {self.ledger!r}>"

    def admit(
        self,
        key: Hashable,
        need: tuple[tuple[str, float], ...],
        start: Callable[[], None],
        fail: Callable[[Exception], None],
    ) -> None:
        """``start()`` once ``key`` holds ``need`` (now, if it fits); ``fail(error)`` if this
        worker can never meet it."""
        if not need:
            start()
            return
        try:
            granted = self.ledger.request(key, need)
        except ValueError as exc:
            fail(_never(need, self.ledger.total, exc))
            return
        if granted:
            start()
        else:
            self._waiters[key] = start

    async def hold(self, key: Hashable, need: tuple[tuple[str, float], ...]) -> None:
        """Return once ``key`` holds ``need``. A cancel while waiting gives up the place in
        line; ValueError if this worker can never meet it."""
        if not need:
            return
        granted = trio.Event()
        errors: list[Exception] = []
        self.admit(key, need, granted.set, errors.append)
        if errors:
            raise errors[0]
        try:
            await granted.wait()
        except BaseException:
            self.release(key)
            raise

    def release(self, key: Hashable) -> None:
        """``key`` ends: what it holds goes to who waits (a no-op for a key that holds
        nothing, so every ending releases blindly)."""
        self._waiters.pop(key, None)
        if key not in self.ledger.holders and key not in self.ledger.waiting:
            return
        for granted in self.ledger.release(key):
            start = self._waiters.pop(granted, None)
            if start is not None:
                start()

    def drop_waiting(self, key: Hashable) -> bool:
        """True if ``key`` was waiting (it no longer does and will not start)."""
        if key not in self.ledger.waiting:
            return False
        self.release(key)
        return True

    def held(self) -> tuple[tuple[str, float], ...]:
        """What is held now, by resource."""
        return tuple(sorted((k, v) for k, v in self.ledger.used.items() if v))


def _never(
    need: tuple[tuple[str, float], ...], total: Mapping[str, float], exc: Exception
) -> Exception:
    asked = ", ".join(f"{k}={v:g}" for k, v in need)
    offers = ", ".join(f"{k}={v:g}" for k, v in sorted(total.items())) or "no resources"
    return ValueError(
        f"this worker offers {offers}, never {asked} ({exc}); the caller placed the call "
        "on a worker that does not fit it: its view of the cluster is out of date"
    )
