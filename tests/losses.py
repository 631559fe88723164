"""Helpers of the tests of sends lost with their worker (tests/_runtime/test_lost_*.py):
the driver's unconfirmed count, the pid an actor wrote to a file, the ``sends_lost`` events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import actorgrid as ag
from actorgrid._runtime import current

DEADLINE_S = 30.0


def unconfirmed() -> int:
    """The quiet calls and messages the driver sent that no worker has confirmed yet."""
    rt: Any = current.get()
    return sum(p.sends.unconfirmed() for p in list(rt.peers.values()))


def wait_until(what: str, ready: Any) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not ready():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


def pid_in(path: Path, processes: Any) -> int:
    """The pid written to ``path`` (watched by ``processes`` from then on)."""
    # (Its writer creates it, then writes it: wait for the number, not the file.)
    wait_until(f"{path.name} was written", lambda: path.exists() and path.read_text())
    pid = int(path.read_text())
    processes.add([pid])
    return pid


def lost_events(grid: ag.Cluster) -> list[Any]:
    return [e for e in grid.recent_events() if e.kind == "sends_lost"]
