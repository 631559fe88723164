"""What each process's links carried, as the dashboard keeps it: bounded, whatever the churn.

Every process reports the bytes its links sent and received since it began (TaskEvents). The
table keeps the last report of each live process, keyed (node id, hostname, pid); a process
that has ended is folded into its node's *other* sums, so a node's totals never go down (they
are Prometheus counters) and a cluster that has restarted 100,000 workers keeps no row for
any of them.

Invariants:

- at most ``max_rows`` process rows; past that, the processes heard from least recently are
  folded into their node's other sums until ``max_rows * 3 // 4`` are left (a live process
  keeps reporting while its bytes change, so the quiet ones go first: most often ones whose
  end was not seen). A folded process that reports again gets a row again; its bytes before
  the fold are then counted twice (a node's totals still never go down);
- per node, the sum of its rows and its other sums never decreases;
- ``report`` and ``ended`` are O(1) (amortised: a fold costs O(max_rows) and leaves room for
  max_rows / 4 new processes before the next); ``node_ended`` and ``rows`` are
  O(rows + nodes): once per node that leaves, once per scrape.

It never reads a clock and does no I/O.
"""

from __future__ import annotations

from typing import TypeAlias

from .._protocol.ids import NodeId

__all__ = ["OTHER_HOST", "TRAFFIC_MAX_ROWS", "ProcessKey", "TrafficTable"]

TRAFFIC_MAX_ROWS = 4096
# The hostname of a node's other row in ``rows()`` (no process has it: a hostname has none).
OTHER_HOST = "(ended or folded processes)"

# (node id: None for a driver, hostname, pid: None for a driver)
ProcessKey: TypeAlias = tuple[NodeId | None, str, int | None]


class TrafficTable:
    """The bytes sent and received of each live process, and per node of those gone."""

    __slots__ = ("_max_rows", "_other", "_rows")

    def __init__(self, max_rows: int = TRAFFIC_MAX_ROWS) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows}")
        self._max_rows = max_rows
        # Least recently reported first (a report moves its row to the end).
        self._rows: dict[ProcessKey, tuple[int, int]] = {}
        self._other: dict[NodeId | None, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"<TrafficTable {len(self._rows)} processes, {len(self._other)} nodes' other>"

    def report(self, key: ProcessKey, sent: int, received: int) -> None:
        """The process ``key`` has sent and received that many bytes since it began."""
        self._rows.pop(key, None)
        self._rows[key] = (sent, received)
        if len(self._rows) > self._max_rows:
            self._fold_quietest()

    def ended(self, key: ProcessKey) -> None:
        """The process ``key`` has exited: its last report goes to its node's other sums."""
        counts = self._rows.pop(key, None)
        if counts is not None:
            self._fold(key[0], counts)

    def node_ended(self, node: NodeId) -> None:
        """The node agent ``node`` has left: its processes went with it."""
        for key in [key for key in self._rows if key[0] == node]:
            self._fold(node, self._rows.pop(key))

    def rows(self) -> dict[ProcessKey, tuple[int, int]]:
        """Each live process's row, and per node with any, a row (node, OTHER_HOST, None)
        of the processes folded away."""
        out = dict(self._rows)
        for node, counts in self._other.items():
            out[node, OTHER_HOST, None] = counts
        return out

    def _fold(self, node: NodeId | None, counts: tuple[int, int]) -> None:
        sent, received = self._other.get(node, (0, 0))
        self._other[node] = (sent + counts[0], received + counts[1])

    def _fold_quietest(self) -> None:
        keep = self._max_rows * 3 // 4
        quiet = list(self._rows)[: len(self._rows) - keep]
        for key in quiet:
            self._fold(key[0], self._rows.pop(key))
