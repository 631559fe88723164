"""``simulate``: run a driver's code against a whole simulated cluster on virtual time.

One ``trio.run`` on Trio's MockClock (autojump: when every task waits, time jumps to the next
deadline) holds the head, every worker, and the driver, linked by a MemoryNetwork. The driver
is the user's ``main``: it uses ``ag.*`` as any Trio driver does. With the same seed, a run is
the same run: scheduling, ids, placement and fault choices all come from the seed, and the
trace (every frame delivered, in order: virtual time, sender, receiver, message type, size)
hashes to the same ``trace_hash``.

What a simulation does not model: the bytes of the handshake (streams are authenticated by
construction), processes' CPU time (user code takes no virtual time unless it sleeps), and
threads (blocking user code runs inline on the loop, so it must not block on ``ag.get``:
await ``ag.get_async`` instead, as Trio code does). Reproducible in another process too,
whatever its ``PYTHONHASHSEED``: nothing the run's order depends on iterates a set by hash.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import attrs
import msgpack
import trio
import trio.testing

from .._exceptions import unwrap_group
from .._protocol.codec import ENVELOPE_LENGTH
from .._protocol.hotcodec import POSITIONAL_NAMES
from .._protocol.messages import Event
from .._runtime import current
from .._runtime.core import Runtime
from .._runtime.pulse import DEFAULT_PULSE_INTERVAL_S
from .._transport.memory import MemoryNetwork
from ._cluster import DRIVER, SimCluster
from ._faults import Fault, timeline
from ._inline import deterministic

__all__ = ["Sim", "SimResult", "TraceEntry", "current_host", "simulate"]

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 86_400.0  # a virtual day
TRACE_TAIL = 10_000  # entries of the trace kept in SimResult.log (the hash covers them all)
# Messages whose size varies with the real process they run in (its pid), not the run.
_SIZE_FREE = frozenset({"Hello"})


@attrs.frozen
class TraceEntry:
    """One frame delivered: at ``time`` (virtual seconds), from host ``src`` to ``dst``."""

    time: float
    src: str
    dst: str
    message: str  # its type: "CallActor", "TaskResult", ...
    size: int

    def __str__(self) -> str:
        return f"{self.time:.6f} {self.src}->{self.dst} {self.message} {self.size}"


def _tag(frame: bytes) -> str:
    """The message type of a frame: its envelope's tag, which the codec writes last (a
    ``"t"`` key, then the type's name as a short string); decoded in full if not found so."""
    (length,) = ENVELOPE_LENGTH.unpack_from(frame)
    end = 4 + length
    for n in range(1, 32):
        start = end - n
        if frame[start - 3 : start - 1] == b"\xa1t" and frame[start - 1] == 0xA0 | n:
            return frame[start:end].decode()
    envelope = msgpack.unpackb(frame[4:end], raw=False)
    if isinstance(envelope, list):  # a hot message's positional form: [tag, fields...]
        return POSITIONAL_NAMES.get(envelope[0], f"positional {envelope[0]!r}")
    return str(envelope["t"])


class _Trace:
    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.count = 0
        self.tail: deque[tuple[float, str, str, str, int]] = deque(maxlen=TRACE_TAIL)

    def record(self, src: str, dst: str, frame: bytes) -> None:
        tag = _tag(frame)
        now, size = trio.current_time(), 0 if tag in _SIZE_FREE else len(frame)
        self._hash.update(f"{now!r} {src} {dst} {tag} {size}\n".encode())
        entry = (now, src, dst, tag, size)
        self.count += 1
        self.tail.append(entry)

    def entries(self) -> list[TraceEntry]:
        return [TraceEntry(*entry) for entry in self.tail]

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@attrs.frozen
class SimResult(Generic[T]):
    """What a simulation ended with. ``value`` is ``main``'s return value (reading it re-raises
    ``main``'s exception, if it raised one: see ``error``); ``time`` is the virtual time it
    returned or raised at; ``trace_hash`` hashes every frame delivered, ``log`` holds the last
    TRACE_TAIL of them, ``messages`` counts them."""

    result: T | None
    error: BaseException | None
    time: float
    trace_hash: str
    log: list[TraceEntry] = attrs.field(repr=lambda log: f"[{len(log)} entries]")
    messages: int
    dropped: int
    kills: int

    @property
    def value(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


def current_host() -> str:
    """The simulated host the calling code runs on: ``"driver"``, or a worker's ``"n0w1"``
    (its node and slot); "" outside a simulation."""
    rt = current.get_or_none()
    address = getattr(rt, "address", "") if rt is not None else ""
    return str(address).rpartition(":")[0]


class Sim:
    """The running simulation, for a ``main`` that takes one argument: faults on demand."""

    def __init__(self, cluster: SimCluster, driver: Runtime) -> None:
        self._cluster = cluster
        self._driver = driver

    async def recent_events(self) -> list[Event]:
        """The cluster's events so far (``Cluster.recent_events``): actor restarts, task
        retries, workers that left..."""
        return await self._driver.subscribe_events(None)

    @property
    def workers(self) -> list[str]:
        """The host names of the workers alive now (``"n0w0"``, ...)."""
        return self._cluster.live_workers()

    def kill_worker(self, host: str | None = None, *, restart_after_s: float | None = 0.0) -> str:
        """Kill a worker now (None: one drawn from the seed); see KillWorker."""
        return self._cluster.kill_worker(host, restart_after_s=restart_after_s)

    def apply(self, fault: Fault) -> None:
        """Start ``fault`` now, whatever its ``at``; one with ``until`` ends that much later."""
        self._cluster.apply(fault, True)
        until = getattr(fault, "until", None)
        if until is not None:
            assert self._cluster._nursery is not None
            self._cluster._nursery.start_soon(self._end, fault, until - fault.at)

    async def _end(self, fault: Fault, after_s: float) -> None:
        await trio.sleep(after_s)
        self._cluster.apply(fault, False)


Main = Callable[[], Awaitable[T]] | Callable[[Sim], Awaitable[T]]


def simulate(
    main: Main[T],
    *,
    seed: int = 0,
    nodes: int = 1,
    workers_per_node: int = 2,
    faults: Sequence[Fault] = (),
    num_cpus: float = 1.0,
    pulse_interval: float = DEFAULT_PULSE_INTERVAL_S,
    grace_s: float = 5.0,
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> SimResult[T]:
    """Run ``main`` as the driver of a simulated cluster of ``nodes`` x ``workers_per_node``
    workers, on virtual time, and return how it ended (see the module docstring).

    ``main`` is an async function of no arguments, or of one (a ``Sim``, to inject faults from
    the code itself). ``faults`` are injected at their virtual times. ``timeout`` (virtual
    seconds; default a virtual day) ends the run with a TimeoutError as its error if ``main``
    has not returned by then: on a virtual clock a hung run would spin forever. Called from
    plain (non-Trio) code: it runs its own ``trio.run``.
    """
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            "simulate() runs its own trio.run on a virtual clock, and it was called inside "
            "one; call it from plain code (a sync test function, a script's top level)"
        )
    if current.get_or_none() is not None:
        raise RuntimeError(
            "simulate() was called while actorgrid is initialized in this process; call "
            "ag.shutdown() first (the simulation's processes would share its runtime)"
        )
    steps = timeline(faults)
    takes_sim = bool(inspect.signature(main).parameters)
    with deterministic(seed) as rng:
        trace = _Trace()
        network = MemoryNetwork(on_deliver=trace.record)
        cluster = SimCluster(
            rng,
            network,
            nodes=nodes,
            workers_per_node=workers_per_node,
            num_cpus=num_cpus,
            pulse_interval_s=pulse_interval,
            grace_s=grace_s,
        )
        ended: list[Any] = [None, None, 0.0]  # result, error, virtual time

        async def run_main(driver: Runtime) -> None:
            try:
                if takes_sim:
                    ended[0] = await main(Sim(cluster, driver))  # type: ignore[call-arg]
                else:
                    ended[0] = await main()  # type: ignore[call-arg]
            except Exception as exc:
                ended[1] = exc
            ended[2] = trio.current_time()

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(cluster.serve)
                driver = cluster.runtime(DRIVER)
                current.set_for_task(driver)
                await nursery.start(driver.serve)
                await driver.wait_for_workers(len(cluster.slots))
                nursery.start_soon(_inject, cluster, steps)
                with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                    await run_main(driver)
                if scope.cancelled_caught:
                    ended[1] = TimeoutError(
                        f"the simulation's main had not returned after {timeout:g} virtual "
                        "seconds: it waits for something that never comes (SimResult.log "
                        "ends with the last messages delivered), or it needs a longer timeout="
                    )
                    ended[2] = trio.current_time()
                driver.closing()
                nursery.cancel_scope.cancel(reason="the simulation's main returned")

        clock = trio.testing.MockClock(autojump_threshold=0)
        try:
            trio.run(run, clock=clock)
        except BaseExceptionGroup as group:
            raise unwrap_group(group) from None
    return SimResult(
        ended[0],
        ended[1],
        ended[2],
        trace.hexdigest(),
        trace.entries(),
        trace.count,
        network.dropped,
        cluster.kills,
    )


async def _inject(cluster: SimCluster, steps: list[tuple[float, int, Fault, bool]]) -> None:
    for at, _, fault, starting in steps:
        await trio.sleep_until(at)
        cluster.apply(fault, starting)
