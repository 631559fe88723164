"""Worker output at the driver: tagging lines where they are written, folding them where
they are shown.

In a worker (``capture_worker_output``), ``sys.stdout`` and ``sys.stderr`` become
line-tagging streams: a line written while a call runs (``output_source``) goes to the real
file descriptor as ``RECORD_MARK source FIELD_SEP owner FIELD_SEP text``, so the node agent
that reads the pipe knows which call wrote it and which driver's work that call is part of
(the root of its call tree: calls carry it from worker to worker, SubmitTask/CallActor.root),
with no message of the worker's own. Every complete line goes to the pipe at once (one ``write``), so
a worker killed right after printing has lost nothing; ``flush`` writes a partial line too.
Lines written outside any call (the runtime's own logging, a crash before start-up) stay as
they are: the agent copies those to its own output, as before.

At the driver (``OutputPrinter``), lines arrive in batches (WorkerOutput) and are printed as
``(source pid=P node=H) text``. ``LineFolder`` folds repeats, as Ray does: the first line of
a kind is shown at once; identical ones within FOLD_WINDOW_S are counted and shown once as
``text [repeated Nx across cluster]``. It keeps at most FOLD_MAX_KEYS lines in mind (the
oldest are reported early), never reads a clock (the caller passes ``now``), O(1) per line.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .._protocol.observe import OutputLine, WorkerOutput
    from .peer import Peer

__all__ = [
    "FOLD_WINDOW_S",
    "LineFolder",
    "OutputPrinter",
    "capture_worker_output",
    "current_root",
    "decode_line",
    "output_source",
]

RECORD_MARK = "\x1e"
FIELD_SEP = "\x1f"
# Identical lines within this window are shown once, with a count.
FOLD_WINDOW_S = 5.0
FOLD_MAX_KEYS = 10_000
# The longest line forwarded; longer ones are cut (the log file has them whole).
LINE_MAX_CHARS = 16_384

# (source, owner) of the call running in this thread or Trio task, if any.
_source: ContextVar[tuple[str, str] | None] = ContextVar("actorgrid_output_source", default=None)


def current_root() -> str:
    """The address of the driver whose work the call running here (this thread or Trio task)
    is part of; "" outside any call (a driver's own calls: the driver is the root)."""
    source = _source.get()
    return source[1] if source is not None else ""


class output_source:
    """Around user code of one call: lines it writes are tagged with ``name`` and the root of
    its call tree: ``root`` (the call's SubmitTask/CallActor.root), else the address of the
    process that sent it (a driver). A class, not a generator: it is on every call's path."""

    __slots__ = ("_source", "_token")
    _token: Token[tuple[str, str] | None]

    def __init__(self, name: str, peer: Peer | None, root: str = "") -> None:
        if not root:
            hello = peer.remote_hello if peer is not None else None
            root = hello.address if hello is not None else ""
        self._source = (name, root)

    @property
    def root(self) -> str:
        return self._source[1]

    def __enter__(self) -> None:
        self._token = _source.set(self._source)

    def __exit__(self, *exc: object) -> None:
        _source.reset(self._token)


def decode_line(raw: str) -> tuple[str, str, str] | None:
    """(source, owner, text) of a tagged line; None for a line written outside any call."""
    if not raw.startswith(RECORD_MARK):
        return None
    parts = raw[1:].split(FIELD_SEP, 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


class _TaggingStream(io.TextIOBase):
    """A text stream over file descriptor ``fd`` that tags each line with the call writing it.
    Partial lines are kept per thread, so concurrent calls do not mix their lines."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__()
        self._fd = fd
        self._name = name
        self._partial = threading.local()

    @property
    def name(self) -> str:
        return self._name

    @property  # read-only in io.TextIOBase too; the stubs say otherwise
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return "replace"

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        text = getattr(self._partial, "text", "") + s
        if "\n" not in text:
            self._partial.text = text
            return len(s)
        *lines, rest = text.split("\n")
        self._partial.text = rest
        self._emit(lines)
        return len(s)

    def flush(self) -> None:
        rest = getattr(self._partial, "text", "")
        if rest:
            self._partial.text = ""
            self._emit([rest])

    def _emit(self, lines: list[str]) -> None:
        source = _source.get()
        if source is None:
            data = "".join(f"{line}\n" for line in lines)
        else:
            head = f"{RECORD_MARK}{source[0]}{FIELD_SEP}{source[1]}{FIELD_SEP}"
            data = "".join(f"{head}{line}\n" for line in lines)
        view = memoryview(data.encode("utf-8", "replace"))
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            pass  # the node agent is gone: this worker ends with it


def capture_worker_output() -> None:
    """In a worker process, before logging is configured: tag what user code writes."""
    sys.stdout = _TaggingStream(1, "<stdout>")
    sys.stderr = _TaggingStream(2, "<stderr>")


class LineFolder:
    """Folds identical lines seen within ``window_s``; see the module docstring."""

    def __init__(self, window_s: float = FOLD_WINDOW_S, max_keys: int = FOLD_MAX_KEYS) -> None:
        self._window_s = window_s
        self._max_keys = max_keys
        # text -> [first seen, repeats since, prefix of the last repeat]; insertion order is
        # first-seen order, so the oldest entries come first.
        self._seen: dict[str, list[object]] = {}

    def feed(self, prefix: str, text: str, now: float) -> list[str]:
        """The lines to show now for ``text`` from ``prefix``."""
        out = self.expire(now)
        entry = self._seen.get(text)
        if entry is not None:
            entry[1] = int(entry[1]) + 1  # type: ignore[call-overload]
            entry[2] = prefix
            return out
        if len(self._seen) >= self._max_keys:
            oldest = next(iter(self._seen))
            out.extend(self._report(oldest, self._seen.pop(oldest)))
        self._seen[text] = [now, 0, prefix]
        out.append(f"{prefix} {text}")
        return out

    def expire(self, now: float) -> list[str]:
        """Repeat counts of lines first seen more than ``window_s`` ago."""
        out: list[str] = []
        while self._seen:
            text, entry = next(iter(self._seen.items()))
            if now - float(entry[0]) < self._window_s:  # type: ignore[arg-type]
                break
            del self._seen[text]
            out.extend(self._report(text, entry))
        return out

    def flush(self) -> list[str]:
        """Every pending repeat count (at shutdown)."""
        out: list[str] = []
        for text, entry in self._seen.items():
            out.extend(self._report(text, entry))
        self._seen.clear()
        return out

    @staticmethod
    def _report(text: str, entry: list[object]) -> list[str]:
        count = int(entry[1])  # type: ignore[call-overload]
        if count == 0:
            return []
        return [f"{entry[2]} {text} [repeated {count}x across cluster]"]


def prefix_of(line: OutputLine, hostname: str) -> str:
    return f"({line.source or 'worker'} pid={line.pid} node={hostname})"


class OutputPrinter:
    """The driver's side of ``log_to_driver``: prints forwarded lines, folded."""

    def __init__(
        self,
        clock: Callable[[], float],
        out: Callable[[], TextIO] = lambda: sys.stdout,
        err: Callable[[], TextIO] = lambda: sys.stderr,
    ) -> None:
        self._clock = clock
        self._out = out
        self._err = err
        # Folding is per stream: a line on stderr is never folded into one on stdout.
        self._folders = {"out": LineFolder(), "err": LineFolder()}

    def handle(self, msg: WorkerOutput) -> None:
        now = self._clock()
        shown: dict[str, list[str]] = {"out": [], "err": []}
        for line in msg.lines:
            stream = "err" if line.stream == "err" else "out"
            text = line.text[:LINE_MAX_CHARS]
            shown[stream].extend(
                self._folders[stream].feed(prefix_of(line, msg.hostname), text, now)
            )
        if msg.dropped:
            shown["err"].append(
                f"(actorgrid node={msg.hostname}) {msg.dropped} lines of worker output were "
                "dropped: they came faster than this driver could take them (the node's log "
                "files have them all: `actorgrid logs`)"
            )
        self._write(shown)

    def tick(self) -> None:
        now = self._clock()
        self._write({name: folder.expire(now) for name, folder in self._folders.items()})

    def close(self) -> None:
        self._write({name: folder.flush() for name, folder in self._folders.items()})

    def _write(self, shown: dict[str, list[str]]) -> None:
        for stream, lines in shown.items():
            if not lines:
                continue
            target = self._out() if stream == "out" else self._err()
            try:
                target.write("".join(f"{line}\n" for line in lines))
                target.flush()
            except (OSError, ValueError):
                pass  # our own output is closed: nothing to show it on
