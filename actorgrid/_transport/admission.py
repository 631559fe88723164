"""Admission of unauthenticated connections, sans I/O: whom to evict, how long to back off
after a failed accept, and which rejections to log.

A listener's I/O shell (listen.py) calls :meth:`Admission.admit` for every accepted
connection, :meth:`Admission.done` when its handshake ends and :meth:`Admission.rejected`
if it failed, :meth:`Admission.accept_failed` / :meth:`Admission.accept_succeeded` around
``accept()``, and :meth:`Admission.report` every so often (a tenth of ``log_interval_s``).
It never reads a clock: every call that needs the time is given ``now``.

Invariants:

- at most ``cap`` connections are unauthenticated at once: admitting one more evicts one, and
  the victim is the oldest connection of the address that holds the most slots (the oldest
  overall when one address holds them all), so one address cannot take the slots of others;
- a connection leaves the table once, by done() or by eviction; done() for a key no longer
  in the table does nothing; rejected() only counts and logs;
- each failed accept doubles the back-off, from ACCEPT_BACKOFF_MIN_S up to
  ACCEPT_BACKOFF_MAX_S, and a successful one resets it; a failure that means the process is out
  of descriptors or memory also evicts the oldest unauthenticated connection, to free one;
- logging is bounded, whatever the load: a window opens at the first rejection and closes
  at the first report() ``log_interval_s`` or more later; in a window, the first rejection
  of each (address, reason) is logged at once with its full explanation (at most
  MAX_LINES_AT_ONCE such lines), everything else is only counted, and report() sums the
  window up in at most MAX_ADDRESSES_LOGGED + 1 lines with the counts per address and reason,
  plus one per kind of accept failure; at most MAX_ADDRESSES_TRACKED addresses are counted
  apart, the rest as "other addresses";
- costs: done() and rejected() are O(1); admit() is O(1) until the table is full,
  then O(addresses in the table) <= O(cap); report() is O(addresses counted).
"""

from __future__ import annotations

import errno
import math
from collections import Counter, OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

import attrs

__all__ = [
    "ACCEPT_BACKOFF_MAX_S",
    "ACCEPT_BACKOFF_MIN_S",
    "EVICTED",
    "AcceptFailure",
    "Admission",
    "ListenLimits",
]

ACCEPT_BACKOFF_MIN_S = 0.01
ACCEPT_BACKOFF_MAX_S = 1.0
MAX_ADDRESSES_LOGGED = 10
MAX_LINES_AT_ONCE = 10
MAX_ADDRESSES_TRACKED = 1000
EVICTED = "evicted: too many unauthenticated connections"
# An accept that fails with one of these will fail again until a descriptor or some memory
# is freed: the shell evicts a connection that has not authenticated yet.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_OTHERS = "other addresses"

K = TypeVar("K", bound=Hashable)


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"ListenLimits {attribute.name}={value!r} must be a whole number of connections, "
            "at least 1"
        )


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(
            f"ListenLimits {attribute.name}={value!r} must be a positive, finite number"
        )


@attrs.frozen
class ListenLimits:
    """What a listener tolerates from peers that have not authenticated yet.

    ``max_unauthenticated``: connections still in their handshake at once (more evict the
    oldest of the address holding most); it is further capped at an eighth of the process's
    open-file limit. ``handshake_timeout_s``: how long a new connection has to authenticate.
    ``log_interval_s``: rejections are summed up in one line per address this often.
    """

    max_unauthenticated: int = attrs.field(default=128, validator=_at_least_one)
    handshake_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    log_interval_s: float = attrs.field(default=10.0, validator=_positive)

    def cap(self, open_file_limit: int | None) -> int:
        """The slots for unauthenticated connections, given the process's descriptor limit."""
        if open_file_limit is None or open_file_limit <= 0:
            return self.max_unauthenticated
        return max(1, min(self.max_unauthenticated, open_file_limit // 8))


@attrs.frozen
class AcceptFailure(Generic[K]):
    """What to do after accept() failed: wait ``delay_s``, close ``evict`` (if any), log
    ``log`` (possibly empty)."""

    delay_s: float
    evict: K | None
    log: tuple[str, ...]


class _Window:
    """Rejections counted since the last report()."""

    def __init__(self, start: float) -> None:
        self.start = start
        # Rejections counted, per address and reason, the ones logged at once left out.
        self.counts: dict[str, Counter[str]] = {}
        self.logged_at_once: set[tuple[str, str]] = set()  # (address, reason)
        self.accept_errors: Counter[str] = Counter()


class Admission(Generic[K]):
    """The unauthenticated connections of one listener, keyed by ``K``, and its log budget."""

    def __init__(self, limits: ListenLimits, open_file_limit: int | None = None) -> None:
        self.limits = limits
        self.cap = limits.cap(open_file_limit)
        # key -> (address, admission number), oldest first
        self._pending: OrderedDict[K, tuple[str, int]] = OrderedDict()
        self._by_address: dict[str, OrderedDict[K, int]] = {}  # key -> admission number
        self._admitted = 0
        self._backoff_s = 0.0
        self._window: _Window | None = None
        self.evicted = 0
        self.rejections = 0

    def __repr__(self) -> str:
        return (
            f"<Admission unauthenticated={len(self._pending)}/{self.cap} "
            f"addresses={len(self._by_address)} rejections={self.rejections}>"
        )

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    # --- the table of unauthenticated connections ------------------------------------------

    def admit(self, key: K, address: str) -> list[K]:
        """Take in a new connection from ``address``; return the ones to evict for it."""
        victims: list[K] = []
        if len(self._pending) >= self.cap:
            victims.append(self._victim())
            self._remove(victims[-1])
            self.evicted += 1
        self._admitted += 1
        self._pending[key] = (address, self._admitted)
        self._by_address.setdefault(address, OrderedDict())[key] = self._admitted
        return victims

    def done(self, key: K) -> None:
        """The handshake of ``key`` ended (passed, failed or evicted): it frees its slot."""
        self._remove(key)

    def rejected(self, address: str, reason: str, detail: str, now: float) -> list[str]:
        """A connection from ``address`` failed for ``reason``, a short kind such as "handshake
        timeout", explained by ``detail``; return the lines to log now."""
        self.rejections += 1
        window = self._window_at(now)
        if address not in window.counts and len(window.counts) >= MAX_ADDRESSES_TRACKED:
            address_key = _OTHERS
        else:
            address_key = address
        if (
            address_key != _OTHERS
            and (address, reason) not in window.logged_at_once
            and len(window.logged_at_once) < MAX_LINES_AT_ONCE
        ):
            window.logged_at_once.add((address, reason))
            window.counts.setdefault(address_key, Counter())
            return [f"rejected a connection from {address}: {detail}"]
        window.counts.setdefault(address_key, Counter())[reason] += 1
        return []

    # --- accept() ---------------------------------------------------------------------------

    def accept_failed(self, error: OSError, now: float) -> AcceptFailure[K]:
        """accept() raised ``error``: how long to wait, whom to evict, what to log."""
        self._backoff_s = min(ACCEPT_BACKOFF_MAX_S, max(ACCEPT_BACKOFF_MIN_S, 2 * self._backoff_s))
        evict: K | None = None
        if error.errno in RESOURCE_ERRNOS and self._pending:
            evict = next(iter(self._pending))
            self._remove(evict)
            self.evicted += 1
        window = self._window_at(now)
        what = _describe(error)
        window.accept_errors[what] += 1
        log: tuple[str, ...] = ()
        if window.accept_errors[what] == 1:
            log = (f"accept failed: {what}; backing off, the listener carries on",)
        return AcceptFailure(self._backoff_s, evict, log)

    def accept_succeeded(self) -> None:
        self._backoff_s = 0.0

    # --- logging ----------------------------------------------------------------------------

    def report(self, now: float, *, final: bool = False) -> list[str]:
        """Sum up the window if it is at least ``log_interval_s`` old (or ``final``: the
        listener is stopping, and what it counted is told now or never); start a new one."""
        window = self._window
        if window is None:
            return []
        if now - window.start < self.limits.log_interval_s and not final:
            return []
        self._window = None
        seconds = f"{now - window.start:.0f} s"
        lines = []
        for what, n in window.accept_errors.items():
            if n > 1:
                lines.append(f"accept failed {n:,} times in the last {seconds}: {what}")
        unlogged = []
        for address, reasons in window.counts.items():
            total = sum(reasons.values())
            if total > 0 and address != _OTHERS:
                unlogged.append((total, address, reasons))
        unlogged.sort(key=lambda item: -item[0])
        for total, address, reasons in unlogged[:MAX_ADDRESSES_LOGGED]:
            noun = "connection" if total == 1 else "connections"
            more = " more" if any(a == address for a, _ in window.logged_at_once) else ""
            lines.append(
                f"rejected {total:,}{more} {noun} from {address} in the last {seconds}: "
                f"{_reasons(reasons)}"
            )
        rest: Counter[str] = Counter(window.counts.get(_OTHERS, Counter()))
        for _, _, reasons in unlogged[MAX_ADDRESSES_LOGGED:]:
            rest.update(reasons)
        if rest:
            n = len(unlogged) - MAX_ADDRESSES_LOGGED
            # Past MAX_ADDRESSES_TRACKED, addresses are counted together, not told apart.
            where = f"more than {max(n, 0):,}" if _OTHERS in window.counts else f"{n:,}"
            lines.append(
                f"rejected {sum(rest.values()):,} connections from {where} other addresses in "
                f"the last {seconds}: {_reasons(rest)}"
            )
        return lines

    # --- internals --------------------------------------------------------------------------

    def _window_at(self, now: float) -> _Window:
        if self._window is None:
            self._window = _Window(now)
        return self._window

    def _victim(self) -> K:
        # The address holding the most slots gives up its oldest; between addresses holding
        # as many, the one whose oldest connection is oldest.
        best = max(
            self._by_address.values(), key=lambda keys: (len(keys), -next(iter(keys.values())))
        )
        return next(iter(best))

    def _remove(self, key: K | None) -> None:
        if key is None:
            return
        entry = self._pending.pop(key, None)
        if entry is None:
            return
        address = entry[0]
        keys = self._by_address[address]
        del keys[key]
        if not keys:
            del self._by_address[address]


def _reasons(reasons: Counter[str]) -> str:
    if len(reasons) == 1:
        return next(iter(reasons))
    return ", ".join(f"{reason} ({n:,})" for reason, n in reasons.most_common())


def _describe(error: OSError) -> str:
    name = errno.errorcode.get(error.errno or 0, "")
    hint = ""
    if error.errno == errno.EMFILE:
        hint = (
            " (this process has as many files and sockets open as its limit allows: raise "
            "`ulimit -n`, or find what holds them)"
        )
    elif error.errno == errno.ENFILE:
        hint = " (the whole system is out of file descriptors: raise fs.file-max)"
    return f"{name or 'error'}: {error.strerror or error}{hint}"
