"""``Pool.imap``/``imap_unordered`` stream results through remote generators (a result
arrives before the rest of its chunk is computed), and maps draw progress on a terminal only
unless asked (a real pseudo-terminal, a real pipe)."""

from __future__ import annotations

import fcntl
import functools
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

import actorgrid as ag
from actorgrid._pool.progress import LineProgress, open_progress

pytestmark = pytest.mark.usefixtures("cluster")

DEADLINE_S = 60.0


def after_the_first_is_seen(folder: str, x: int) -> int:
    """Item 0 at once; the others only once the consumer has seen the first result."""
    if x:
        seen = Path(folder) / "seen-first"
        deadline = time.monotonic() + DEADLINE_S
        while not seen.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the consumer never saw the first result")
            time.sleep(0.01)
    return x * 10


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_yields_the_first_result_before_the_last_item_is_computed(
    tmp_path: Path, method: str
) -> None:
    fn = functools.partial(after_the_first_is_seen, str(tmp_path))
    with ag.Pool(processes=1) as pool:
        # One chunk of five items: without streaming its results come all at once, after
        # the last, which waits for the consumer to see the first: the next() times out.
        it = getattr(pool, method)(fn, range(5), chunksize=5)
        assert it.next(timeout=DEADLINE_S) == 0
        (tmp_path / "seen-first").touch()
        rest = [it.next(timeout=DEADLINE_S) for _ in range(4)]
        with pytest.raises(StopIteration):
            it.next(timeout=DEADLINE_S)
    assert sorted(rest) == [10, 20, 30, 40]


def test_streamed_chunks_keep_input_order_and_errors() -> None:
    with ag.Pool(processes=2) as pool:
        assert list(pool.imap(abs, range(-50, 50), chunksize=7)) == [abs(x) for x in range(-50, 50)]
        assert sorted(pool.imap_unordered(abs, range(40), chunksize=3)) == list(range(40))
        it = pool.imap(fail_on_three, range(8), chunksize=4)
        got = [next(it) for _ in range(3)]
        with pytest.raises(ValueError, match="bad item 3"):
            next(it)
        # As multiprocessing.Pool with chunksize > 1: the iteration ends at a failed chunk.
        assert list(it) == []
    assert got == [0, 1, 2]


_PROGRAM = textwrap.dedent(
    """
    import sys
    import actorgrid as ag

    def square(x):
        return x * x

    class Doubler:
        def run(self, x):
            return 2 * x

    def main(where):
        with ag.init(num_workers=1), ag.Pool() as pool:
            if where == "tty":  # default: drawn on a terminal; False: never
                pool.map(square, range(123))
                pool.map(square, range(77), progress=False)
                list(pool.imap(square, range(45), chunksize=5))
                with ag.ActorPool(Doubler, size=1) as actors:
                    actors.map(range(31))
            else:  # default: nothing in a pipe; True: drawn anyway
                pool.map(square, range(77))
                pool.map(square, range(123), progress=True)
                list(pool.imap(square, range(45), chunksize=5, progress=True))
                with ag.ActorPool(Doubler, size=1) as actors:
                    actors.map(range(31), progress=True)
        print("done", file=sys.stderr)

    if __name__ == "__main__":
        main(sys.argv[1])
    """
)


def _run_program(tmp_path: Path, where: str) -> str:
    script = tmp_path / "progress_program.py"
    script.write_text(_PROGRAM)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if where == "tty":
        main_fd, child_fd = pty.openpty()
        # A terminal's size, as a real one has: a new pty is 0 columns wide, where tqdm (if
        # installed, e.g. by the bench extra's mesa) draws nothing.
        fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        stderr: int = child_fd
    else:
        main_fd, child_fd = os.pipe()
        stderr = child_fd
    proc = subprocess.Popen(
        [sys.executable, str(script), where],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=env,
    )
    os.close(child_fd)
    out = bytearray()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=DEADLINE_S) == 0, out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main_fd)
    return out.decode(errors="replace")


def test_progress_is_drawn_on_a_terminal_by_default(tmp_path: Path) -> None:
    text = _run_program(tmp_path, "tty")
    assert "123/123" in text, text
    assert "45/45" in text, text  # imap knows the length of a range
    assert "31/31" in text, text  # ActorPool.map
    assert "items/s" in text or "item/s" in text, text  # the rate, tqdm's or ours
    assert "/77" not in text, text  # progress=False (a bar would show n/77; a rate may hold 77)
    assert "done" in text


def test_progress_is_not_drawn_in_a_pipe_unless_asked(tmp_path: Path) -> None:
    text = _run_program(tmp_path, "pipe")
    assert "123/123" in text, text
    assert "45/45" in text, text
    assert "31/31" in text, text
    assert "/77" not in text, text  # the default, with stderr not a terminal (n/77)
    assert "done" in text


def test_the_plain_line_shows_done_rate_and_eta() -> None:
    out = io.StringIO()
    bar = LineProgress(100, "ag.Pool f", out)
    bar._start = 0.0  # a fixed clock: 50 items in 10 s
    bar.done = 50
    assert bar.line(10.0) == "ag.Pool f: 50/100 items, 5.0 items/s, ETA 0:10"
    unknown = LineProgress(None, "ag.Pool g", out)
    unknown._start = 0.0
    unknown.done = 30
    assert unknown.line(2.0) == "ag.Pool g: 30 items, 15.0 items/s"
    bar.close()
    bar.close()  # idempotent: one final line
    assert out.getvalue().count("\n") == 1
    with pytest.raises(TypeError, match="progress must be True"):
        open_progress("yes", 10, "x")  # type: ignore[arg-type]
