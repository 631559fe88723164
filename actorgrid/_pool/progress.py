"""Progress bars for long maps: ``pool.map(f, items, progress=True)``.

``progress=None`` (the default) draws only when stderr is a terminal, so scripts whose
stderr goes to a file or a pipe (CI logs, ``2> log``) stay clean; ``True`` draws anyway (a log
then gets one line per redraw with tqdm, or carriage-return updates without it); ``False``
never draws. With tqdm installed the bar is tqdm's; without it, one line on stderr, redrawn at
most every ``REDRAW_S``: items done (of how many, when known), rate and ETA.

Updated by one thread at a time (the pool's dispatcher, or ActorPool's caller); ``close`` is
idempotent and draws the final state.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any, Protocol, TextIO

__all__ = ["Progress", "open_progress"]

REDRAW_S = 0.1


class Progress(Protocol):
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def open_progress(
    progress: bool | None, total: int | None, desc: str, stream: TextIO | None = None
) -> Progress | None:
    """A progress bar for ``total`` items (None: unknown), or None when none is drawn."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(
            f"progress must be True (draw a bar), False (never) or None (only when stderr is "
            f"a terminal), not {progress!r}"
        )
    out = sys.stderr if stream is None else stream
    if progress is False or (progress is None and not _is_terminal(out)):
        return None
    try:
        tqdm = importlib.import_module("tqdm").tqdm  # optional: not a dependency
    except ImportError:
        return LineProgress(total, desc, out)
    return _Tqdm(tqdm(total=total, desc=desc, file=out, unit="item"))


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False  # no isatty, or closed


class _Tqdm:
    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._closed = False

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bar.close()


class LineProgress:
    """One line, redrawn in place: ``map: 120/500 items, 85.3 items/s, ETA 0:04``."""

    def __init__(self, total: int | None, desc: str, stream: TextIO) -> None:
        self.total = total
        self.desc = desc
        self.done = 0
        self._stream = stream
        self._start = time.monotonic()
        self._drawn_at = -REDRAW_S
        self._closed = False
        self._draw(self._start)

    def update(self, n: int) -> None:
        if self._closed:
            return
        self.done += n
        now = time.monotonic()
        if now - self._drawn_at >= REDRAW_S:
            self._draw(now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._draw(time.monotonic())
        self._write("\n")

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done}"
        if self.total is not None:
            text += f"/{self.total}"
        text += f" items, {rate:.1f} items/s"
        if self.total is not None and rate > 0:
            text += f", ETA {_clock(max(self.total - self.done, 0) / rate)}"
        elif self.total is not None:
            text += ", ETA ?"
        return text

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self._write("\r" + self.line(now) + "\x1b[K")  # erase what a longer line left

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self._closed = True  # stderr went away: stop drawing, never fail the map


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
